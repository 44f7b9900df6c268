"""Runtime measurements: the Linux IMA measurement list (PCR 10), parsed, checked and replayed.

Binary format, as the kernel writes /sys/kernel/security/ima/binary_runtime_measurements
(security/integrity/ima/ima_fs.c, ima_measurements_show), in the CPU's byte order, which is
little-endian on every board ztfl runs on (and on any board booted with ima_canonical_fmt):

    u32 pcr | 20-byte template digest (SHA-1) | u32 n, template name[n] | u32 m, template data[m]
    template data (ima-ng)  = u32 len, d-ng | u32 len, n-ng
                 (ima-sig)  = ... | u32 len, sig       (ima-buf) = ... | u32 len, buf
    d-ng = hash algorithm name ":" "\\0" digest of the file      n-ng = path "\\0"

Template hash: the kernel hashes the template data exactly as stored above (each field with its
u32 length: ima_calc_field_array_hash_tfm). Each TPM bank is extended with that data hashed by
the bank's own algorithm (kernels since 5.11, "ima: Calculate and extend PCR with digests in
ima_template_entry"); the log keeps only the SHA-1 one. Kernels before 5.11 extended non-SHA-1
banks with the SHA-1 digest padded with zeros: those are not supported (the replay will not match).
A violation (a file measured while open for writing, or written while measured) is logged with
an all-zero template digest and extended as all 0xFF in every bank.
"""
from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ztfl.attestation.errors import ImaLogFormatError, ImaLogGap, ImaReplayMismatch, ImaTemplateHashMismatch
from ztfl.attestation.le_cursor import LeCursor

IMA_PCR = 10
BINARY_LIST = "/sys/kernel/security/ima/binary_runtime_measurements"
SHA1_SIZE = 20
MAX_LOG_BYTES = 32 << 20
MAX_NAME = 255                        # TCG_EVENT_NAME_LEN_MAX
MAX_TEMPLATE_DATA = 64 * 1024
MAX_PATH = 4096 + 1                   # PATH_MAX and the NUL
TEMPLATES = {"ima-ng": 2, "ima-sig": 3, "ima-buf": 3}    # template -> number of fields (d-ng, n-ng, ...)
FILE_HASHES = {"md5": 16, "sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}
BOOT_AGGREGATE = "boot_aggregate"


@dataclass(frozen=True)
class ImaEntry:
    pcr: int
    template_digest: bytes            # SHA-1 of template_data; all zero for a violation
    template: str
    template_data: bytes              # as stored: every field with its u32 length
    file_hash_alg: str
    file_digest: bytes
    path: str                         # n-ng without its NUL; undecodable bytes as U+FFFD

    @property
    def violation(self) -> bool:
        return self.template_digest == bytes(SHA1_SIZE)

    def template_hash(self, bank: str) -> bytes:
        """What the kernel extended into PCR 10 of `bank` for this entry."""
        if self.violation:
            return b"\xff" * hashlib.new(bank).digest_size
        if bank == "sha1":
            return self.template_digest
        return hashlib.new(bank, self.template_data).digest()


def parse_ima_log(data: bytes, first_index: int = 0) -> list[ImaEntry]:
    """Every entry of a binary measurement list (or of a slice of one starting at entry
    `first_index`, used in messages). Checks each logged SHA-1 template digest against its data."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImaLogFormatError(f"IMA log: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_LOG_BYTES:
        raise ImaLogFormatError(f"IMA log of {len(data)} bytes exceeds {MAX_LOG_BYTES}")
    entries = []
    c = LeCursor(data, ImaLogFormatError, "IMA log")
    while c.left:
        c.what = f"IMA entry {first_index + len(entries)}"
        entries.append(_parse_entry(c))
    return entries


def _parse_entry(c: LeCursor) -> ImaEntry:
    pcr = c.u32("pcr")
    if pcr > 23:
        raise ImaLogFormatError(f"{c.what}: PCR {pcr}")
    digest = c.take(SHA1_SIZE, "template digest")
    raw_name = c.sized("template name", MAX_NAME)
    template = raw_name.decode("ascii", "replace")
    if template not in TEMPLATES:
        raise ImaLogFormatError(f"{c.what}: template {template!r} is not one of {sorted(TEMPLATES)}")
    data = c.sized("template data", MAX_TEMPLATE_DATA)
    fields = LeCursor(data, ImaLogFormatError, c.what)
    values = [fields.sized(f"template field {i}", MAX_TEMPLATE_DATA) for i in range(TEMPLATES[template])]
    if fields.left:
        raise ImaLogFormatError(f"{c.what}: {fields.left} bytes after the {template} fields")
    alg, file_digest = _parse_digest_ng(values[0], c.what)
    name = values[1]
    if not name.endswith(b"\x00") or b"\x00" in name[:-1] or len(name) > MAX_PATH:
        raise ImaLogFormatError(f"{c.what}: the file name is not one NUL-terminated string")
    entry = ImaEntry(pcr, digest, template, data, alg, file_digest, name[:-1].decode("utf-8", "replace"))
    if not entry.violation and hashlib.sha1(data).digest() != digest:
        raise ImaTemplateHashMismatch(f"{c.what} ({entry.path}): the logged template digest is not the "
                                      "SHA-1 of its data")
    return entry


def _parse_digest_ng(value: bytes, what: str) -> tuple[str, bytes]:
    head, sep, digest = value.partition(b":\x00")
    alg = head.decode("ascii", "replace")
    if not sep or alg not in FILE_HASHES or len(digest) != FILE_HASHES[alg]:
        raise ImaLogFormatError(f"{what}: d-ng field is not 'algorithm:\\0' and a digest of that algorithm")
    return alg, digest


def entry_sizes(data: bytes) -> list[int]:
    """The byte length of each complete entry at the start of `data` (agent side: indexes the
    list without checking it; the gateway parses)."""
    sizes, pos = [], 0
    while pos + 28 <= len(data):
        name_len = struct.unpack_from("<I", data, pos + 24)[0]
        head = pos + 28 + name_len
        if head + 4 > len(data):
            break
        end = head + 4 + struct.unpack_from("<I", data, head)[0]
        if end > len(data):
            break
        sizes.append(end - pos)
        pos = end
    return sizes


# --- replay -------------------------------------------------------------------------------------

def extend(aggregate: bytes, entry: ImaEntry, bank: str) -> bytes:
    return hashlib.new(bank, aggregate + entry.template_hash(bank)).digest()


def replay_ima(entries: Iterable[ImaEntry], bank: str, start: bytes | None = None) -> bytes:
    """PCR 10 of `bank` after extending every entry, from `start` (a fresh PCR: zeros)."""
    value = start if start is not None else bytes(hashlib.new(bank).digest_size)
    for entry in entries:
        value = extend(value, entry, bank)
    return value


def quoted_prefix(entries: list[ImaEntry], bank: str, start: bytes, quoted: bytes) -> tuple[int, bytes]:
    """How many of `entries` the quoted PCR 10 covers, and the value there. The agent reads its
    list after quoting, so the list may run ahead of the quote (entries measured in between):
    the quote must equal the replay at some prefix, entries after it wait for the next quote."""
    value = start
    if value == quoted:
        return 0, value
    for count, entry in enumerate(entries, 1):
        value = extend(value, entry, bank)
        if value == quoted:
            return count, value
    raise ImaReplayMismatch(f"the {len(entries)} IMA entries never replay to the quoted PCR {IMA_PCR} "
                            f"({quoted.hex()[:16]}...): truncated, reordered or forged list")


def check_entry_pcrs(entries: Iterable[ImaEntry], first_index: int = 0) -> None:
    for i, entry in enumerate(entries, first_index):
        if entry.pcr != IMA_PCR:
            raise ImaLogFormatError(f"IMA entry {i} ({entry.path}) is for PCR {entry.pcr}, not {IMA_PCR}")


def boot_aggregate(pcr_values: Mapping[int, bytes], bank: str) -> bytes:
    """IMA's boot_aggregate (ima_calc_boot_aggregate): the hash of PCRs 0-7, and since Linux 5.8
    of PCRs 8-9 as well for banks other than SHA-1, each read from the bank of `bank`."""
    size = hashlib.new(bank).digest_size
    pcrs = range(8) if bank == "sha1" else range(10)
    return hashlib.new(bank, b"".join(pcr_values.get(i, bytes(size)) for i in pcrs)).digest()


# --- writing (the kernel's formats, for tests, benchmarks and fuzz seeds) -----------------------

def encode_template_data(path: str, file_digest: bytes, hash_alg: str = "sha256", template: str = "ima-ng",
                         extra: bytes = b"") -> bytes:
    fields = [hash_alg.encode() + b":\x00" + file_digest, path.encode("utf-8") + b"\x00"]
    if TEMPLATES[template] == 3:
        fields.append(extra)
    return b"".join(struct.pack("<I", len(f)) + f for f in fields)


def encode_ima_entry(path: str, file_digest: bytes, hash_alg: str = "sha256", template: str = "ima-ng",
                     pcr: int = IMA_PCR, violation: bool = False, extra: bytes = b"") -> bytes:
    """One entry exactly as binary_runtime_measurements shows it."""
    data = encode_template_data(path, file_digest, hash_alg, template, extra)
    digest = bytes(SHA1_SIZE) if violation else hashlib.sha1(data).digest()
    name = template.encode()
    return (struct.pack("<I", pcr) + digest + struct.pack("<I", len(name)) + name
            + struct.pack("<I", len(data)) + data)


def ascii_line(entry: ImaEntry) -> str:
    """The entry as ascii_runtime_measurements shows it (ima_ascii_measurements_show)."""
    fields = [f"{entry.file_hash_alg}:{entry.file_digest.hex()}", entry.path]
    if TEMPLATES[entry.template] == 3:
        raw = LeCursor(entry.template_data, ImaLogFormatError, "entry")
        extra = [raw.sized(f"field {i}", MAX_TEMPLATE_DATA) for i in range(3)][2]
        fields.append(extra.hex())
    return f"{entry.pcr:2d} {entry.template_digest.hex()} {entry.template} {' '.join(fields)}"


# --- gateway: per-agent replay state (incremental verification) --------------------------------

@dataclass
class ImaReplayState:
    """Where the gateway's replay of one agent's list stands: the TPM boot it belongs to (the
    quote's resetCount) and the PCR 10 value after each accepted count of entries."""

    boot: int
    count: int = 0
    checkpoints: dict[int, bytes] = field(default_factory=dict)


class ImaReplayBook:
    """Per agent, the replay of its IMA list up to the last accepted quote, so an agent sends
    only the entries measured since then. `keep` older checkpoints survive, so an agent that
    missed an acknowledgement can still start from an earlier accepted count."""

    def __init__(self, bank: str, keep: int = 8):
        self.bank = bank
        self.keep = keep
        self._zero = bytes(hashlib.new(bank).digest_size)
        self._states: dict[str, ImaReplayState] = {}
        self._lock = threading.Lock()

    def start(self, agent_id: str, boot: int, offset: int) -> bytes:
        """The PCR 10 value after `offset` entries of this boot's list, or ImaLogGap."""
        if offset == 0:
            return self._zero
        with self._lock:
            state = self._states.get(agent_id)
            value = state.checkpoints.get(offset) if state is not None and state.boot == boot else None
            held = state.count if state is not None and state.boot == boot else 0
        if value is None:
            raise ImaLogGap(f"IMA entries sent from {offset}; the gateway holds this boot's list up to {held}")
        return value

    def commit(self, agent_id: str, boot: int, count: int, value: bytes) -> None:
        with self._lock:
            state = self._states.get(agent_id)
            if state is None or state.boot != boot:
                state = self._states[agent_id] = ImaReplayState(boot)
            state.count = count
            state.checkpoints[count] = value
            for old in sorted(state.checkpoints)[:-self.keep]:
                del state.checkpoints[old]

    def position(self, agent_id: str) -> int:
        """Entries of the agent's current list the gateway has accepted (0 if none)."""
        with self._lock:
            state = self._states.get(agent_id)
            return state.count if state is not None else 0


# --- agent: reading the kernel's list incrementally ---------------------------------------------

class ImaCursor:
    """The agent's view of its own measurement list: indexes entries as the kernel appends them
    and hands out those after the count the gateway acknowledged last (0 until it does)."""

    def __init__(self, path: str | Path = BINARY_LIST):
        self.path = Path(path)
        self._offsets = [0]           # byte offset of each entry start, and of the end
        self.acknowledged = 0

    @staticmethod
    def available(path: str | Path = BINARY_LIST) -> bool:
        return os.access(path, os.R_OK)

    @property
    def indexed(self) -> int:
        return len(self._offsets) - 1

    def _refresh(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self._offsets[-1])
            fresh = f.read()
        pos = self._offsets[-1]
        for size in entry_sizes(fresh):
            pos += size
            self._offsets.append(pos)

    def acknowledge(self, count: int) -> None:
        """The gateway holds the first `count` entries (its receipt); a count this agent never
        indexed is ignored."""
        if 0 <= count <= self.indexed:
            self.acknowledged = count

    def pending(self) -> tuple[int, bytes]:
        """(first entry index, raw entries from there to the current end of the list)."""
        self._refresh()
        start = self._offsets[self.acknowledged]
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read(self._offsets[-1] - start)
        return self.acknowledged, data
