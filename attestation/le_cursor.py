"""Reading the kernel's little-endian binary logs (TCG event log, IMA list): every length is
checked against what is left, and against a limit, before anything is sliced or allocated; a
short or oversized field raises the log's own AttestationError subclass naming the field."""
from __future__ import annotations

import struct

from ztfl.attestation.errors import AttestationError


class LeCursor:
    def __init__(self, data: bytes, error: type[AttestationError], what: str):
        self.data = data
        self.error = error
        self.what = what
        self.pos = 0

    def take(self, n: int, field: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise self.error(f"{self.what}: truncated in {field} at byte {self.pos} "
                             f"(need {n}, {len(self.data) - self.pos} left)")
        self.pos = end
        return self.data[end - n:end]

    def number(self, fmt: str, field: str) -> int:
        """One little-endian integer of struct format `fmt` (B, H or I)."""
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), field))[0]

    def u32(self, field: str) -> int:
        return self.number("I", field)

    def sized(self, field: str, limit: int) -> bytes:
        """A u32 length, at most `limit`, and that many bytes."""
        n = self.u32(field)
        if n > limit:
            raise self.error(f"{self.what}: {field} of {n} bytes (at most {limit})")
        return self.take(n, field)

    @property
    def left(self) -> int:
        return len(self.data) - self.pos
