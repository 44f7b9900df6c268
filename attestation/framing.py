"""Length-prefixed binary framing for ztfl's attestation messages (no pickle, no eval).

Each message starts with a 4-byte tag naming its type and version; fields follow in a fixed
order as big-endian integers or byte strings with a 1-, 2- or 4-byte length prefix. The
decoder checks every length against a per-field limit before slicing and refuses trailing
bytes, raising MalformedEvidence with the field's name.
"""
from __future__ import annotations

import struct

from ztfl.attestation.errors import MalformedEvidence

MAX_MESSAGE_BYTES = 64 * 1024


class Writer:
    def __init__(self, tag: bytes):
        self.parts = [tag]

    def u8(self, v: int) -> "Writer":
        self.parts.append(struct.pack(">B", v))
        return self

    def u32(self, v: int) -> "Writer":
        self.parts.append(struct.pack(">I", v))
        return self

    def u64(self, v: int) -> "Writer":
        self.parts.append(struct.pack(">Q", v))
        return self

    def blob8(self, b: bytes) -> "Writer":
        if len(b) > 0xFF:
            raise ValueError(f"{len(b)} bytes do not fit a 1-byte length")
        self.parts.append(struct.pack(">B", len(b)) + bytes(b))
        return self

    def blob16(self, b: bytes) -> "Writer":
        if len(b) > 0xFFFF:
            raise ValueError(f"{len(b)} bytes do not fit a 2-byte length")
        self.parts.append(struct.pack(">H", len(b)) + bytes(b))
        return self

    def blob32(self, b: bytes) -> "Writer":
        self.parts.append(struct.pack(">I", len(b)) + bytes(b))
        return self

    def text(self, s: str) -> "Writer":
        return self.blob8(s.encode("utf-8"))

    def finish(self) -> bytes:
        return b"".join(self.parts)


class Reader:
    def __init__(self, data: bytes, tag: bytes, what: str, max_bytes: int = MAX_MESSAGE_BYTES):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedEvidence(f"{what}: expected bytes, got {type(data).__name__}")
        if len(data) > max_bytes:
            raise MalformedEvidence(f"{what}: {len(data)} bytes exceeds {max_bytes}")
        self.data = memoryview(bytes(data))
        self.what = what
        self.pos = 0
        got = bytes(self._take(len(tag), "tag"))
        if got != tag:
            raise MalformedEvidence(f"{what}: tag {got!r} is not {tag!r}")

    def _take(self, n: int, field: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise MalformedEvidence(f"{self.what}: truncated in {field} "
                                    f"(need {n} bytes, {len(self.data) - self.pos} left)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u8(self, field: str) -> int:
        return self._take(1, field)[0]

    def u32(self, field: str) -> int:
        return struct.unpack(">I", self._take(4, field))[0]

    def u64(self, field: str) -> int:
        return struct.unpack(">Q", self._take(8, field))[0]

    def blob8(self, field: str, min_len: int = 0, max_len: int = 255) -> bytes:
        n = self.u8(field)
        return self._check(field, n, min_len, max_len)

    def blob16(self, field: str, min_len: int = 0, max_len: int = 0xFFFF) -> bytes:
        n = struct.unpack(">H", self._take(2, field))[0]
        return self._check(field, n, min_len, max_len)

    def blob32(self, field: str, min_len: int = 0, max_len: int = MAX_MESSAGE_BYTES) -> bytes:
        return self._check(field, self.u32(field), min_len, max_len)

    def text(self, field: str, max_len: int = 128) -> str:
        raw = self.blob8(field, 1, max_len)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedEvidence(f"{self.what}: {field} is not UTF-8") from None

    def _check(self, field: str, n: int, min_len: int, max_len: int) -> bytes:
        if not min_len <= n <= max_len:
            raise MalformedEvidence(f"{self.what}: {field} of {n} bytes outside {min_len}..{max_len}")
        return bytes(self._take(n, field))

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MalformedEvidence(f"{self.what}: {len(self.data) - self.pos} trailing bytes")
