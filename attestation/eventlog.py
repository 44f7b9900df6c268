"""Measured boot: the TCG2 crypto-agile event log, parsed and replayed (pure, no I/O).

The format is what the kernel exposes at /sys/kernel/security/tpm0/binary_bios_measurements
(TCG PC Client Platform Firmware Profile, section 10), little-endian throughout:

    first event, SHA-1 format (TCG_PCClientPCREvent):
        u32 pcr | u32 type (EV_NO_ACTION) | 20-byte digest (zero) | u32 size | TCG_EfiSpecIDEvent
    TCG_EfiSpecIDEvent:
        "Spec ID Event03\\0" | u32 platformClass | u8 minor | u8 major | u8 errata | u8 uintnSize
        | u32 n | n x (u16 algorithmId, u16 digestSize) | u8 vendorInfoSize | vendorInfo
    every later event (TCG_PCR_EVENT2):
        u32 pcr | u32 type | u32 count | count x (u16 algorithmId, digest) | u32 size | data

Replay starts every PCR at zero (PCR 0 at the locality of a StartupLocality EV_NO_ACTION event,
when there is one) and extends, per bank, PCR = H(PCR || logged digest). EV_NO_ACTION events are
never extended. Replay uses the logged digests, never the data: whether a digest must be the
hash of its data is for the boot policy to say (attestation.boot_policy).
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ztfl.attestation.errors import BootLogReplayMismatch, EventLogFormatError
from ztfl.attestation.le_cursor import LeCursor
from ztfl.attestation.tpm_wire import DIGEST_SIZES, HASH_NAMES

MAX_LOG_BYTES = 1 << 20          # real logs are 2-100 KiB
MAX_EVENTS = 4096
MAX_EVENT_DATA = 256 * 1024
MAX_PCR = 23
SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY = b"StartupLocality\x00"

EV_NO_ACTION = 0x00000003
EVENT_TYPES: dict[int, str] = {
    0x00000000: "EV_PREBOOT_CERT", 0x00000001: "EV_POST_CODE", 0x00000002: "EV_UNUSED",
    0x00000003: "EV_NO_ACTION", 0x00000004: "EV_SEPARATOR", 0x00000005: "EV_ACTION",
    0x00000006: "EV_EVENT_TAG", 0x00000007: "EV_S_CRTM_CONTENTS", 0x00000008: "EV_S_CRTM_VERSION",
    0x00000009: "EV_CPU_MICROCODE", 0x0000000A: "EV_PLATFORM_CONFIG_FLAGS", 0x0000000B: "EV_TABLE_OF_DEVICES",
    0x0000000C: "EV_COMPACT_HASH", 0x0000000D: "EV_IPL", 0x0000000E: "EV_IPL_PARTITION_DATA",
    0x0000000F: "EV_NONHOST_CODE", 0x00000010: "EV_NONHOST_CONFIG", 0x00000011: "EV_NONHOST_INFO",
    0x00000012: "EV_OMIT_BOOT_DEVICE_EVENTS",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG", 0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION", 0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
    0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER", 0x80000006: "EV_EFI_GPT_EVENT", 0x80000007: "EV_EFI_ACTION",
    0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB", 0x80000009: "EV_EFI_HANDOFF_TABLES",
    0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2", 0x8000000B: "EV_EFI_HANDOFF_TABLES2",
    0x8000000C: "EV_EFI_VARIABLE_BOOT2", 0x80000010: "EV_EFI_HCRTM_EVENT",
    0x800000E0: "EV_EFI_VARIABLE_AUTHORITY", 0x800000E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
    0x800000E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
}
EVENT_CODES: dict[str, int] = {name: code for code, name in EVENT_TYPES.items()}


def event_type_name(code: int) -> str:
    return EVENT_TYPES.get(code, f"0x{code:08x}")


def event_type_code(name: str) -> int:
    """The numeric type of a name of EVENT_TYPES, or of a hex literal such as 0x800000e0."""
    if name in EVENT_CODES:
        return EVENT_CODES[name]
    try:
        return int(name, 16)
    except ValueError:
        raise ValueError(f"unknown event type {name!r}") from None


@dataclass(frozen=True)
class BootEvent:
    """One measurement: `digests` maps the TPM algorithm id to the logged digest."""

    number: int                  # position in the log, the Spec ID event being 0 (as tpm2_eventlog counts)
    pcr: int
    event_type: int
    digests: Mapping[int, bytes]
    data: bytes

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)


@dataclass(frozen=True)
class EventLog:
    algorithms: Mapping[int, int]        # algorithm id -> digest size, from the Spec ID event
    events: tuple[BootEvent, ...]        # every event after the Spec ID event
    startup_locality: int = 0

    def banks(self) -> list[str]:
        """The hash banks this log records that this module can replay (sha1, sha256, ...)."""
        return [HASH_NAMES[a] for a in self.algorithms if a in HASH_NAMES]


def _parse_spec_id(data: bytes) -> dict[int, int]:
    c = LeCursor(data, EventLogFormatError, "Spec ID event")
    if c.take(16, "signature") != SPEC_ID_SIGNATURE:
        raise EventLogFormatError("first event is not a 'Spec ID Event03' (not a crypto-agile log)")
    c.take(4 + 4, "Spec ID platform class and version")
    count = c.u32("Spec ID algorithm count")
    if not 1 <= count <= 8:
        raise EventLogFormatError(f"Spec ID event lists {count} algorithms (1..8)")
    algorithms: dict[int, int] = {}
    for _ in range(count):
        alg, size = c.number("H", "Spec ID algorithm"), c.number("H", "Spec ID digest size")
        if alg in algorithms or not 1 <= size <= 64:
            raise EventLogFormatError(f"Spec ID event: algorithm 0x{alg:04x} repeated or digest size {size}")
        if alg in DIGEST_SIZES and DIGEST_SIZES[alg] != size:
            raise EventLogFormatError(f"Spec ID event: {HASH_NAMES[alg]} with a {size}-byte digest")
        algorithms[alg] = size
    c.take(c.number("B", "Spec ID vendor info size"), "Spec ID vendor info")
    if c.left:
        raise EventLogFormatError(f"Spec ID event: {c.left} trailing bytes")
    return algorithms


def parse_event_log(data: bytes) -> EventLog:
    """The events of a crypto-agile TCG2 log; raises EventLogFormatError on anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EventLogFormatError(f"event log: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_LOG_BYTES:
        raise EventLogFormatError(f"event log of {len(data)} bytes exceeds {MAX_LOG_BYTES}")
    c = LeCursor(data, EventLogFormatError, "event log")
    pcr, kind = c.u32("first event PCR"), c.u32("first event type")
    c.take(20, "first event digest")
    if pcr != 0 or kind != EV_NO_ACTION:
        raise EventLogFormatError(f"first event is PCR {pcr} type {event_type_name(kind)}, not the Spec ID event")
    size = c.u32("first event size")
    if size > MAX_EVENT_DATA:
        raise EventLogFormatError(f"Spec ID event of {size} bytes")
    algorithms = _parse_spec_id(c.take(size, "Spec ID event"))
    events: list[BootEvent] = []
    locality = 0
    while c.left:
        number = len(events) + 1
        if number > MAX_EVENTS:
            raise EventLogFormatError(f"event log has more than {MAX_EVENTS} events")
        pcr, kind = c.u32(f"event {number} PCR"), c.u32(f"event {number} type")
        if pcr > MAX_PCR:
            raise EventLogFormatError(f"event {number}: PCR {pcr} (0..{MAX_PCR})")
        count = c.u32(f"event {number} digest count")
        if count > len(algorithms):
            raise EventLogFormatError(f"event {number}: {count} digests for {len(algorithms)} algorithms")
        digests: dict[int, bytes] = {}
        for _ in range(count):
            alg = c.number("H", f"event {number} algorithm")
            if alg not in algorithms or alg in digests:
                raise EventLogFormatError(f"event {number}: algorithm 0x{alg:04x} not in the Spec ID event "
                                          "or given twice")
            digests[alg] = c.take(algorithms[alg], f"event {number} digest")
        size = c.u32(f"event {number} data size")
        if size > MAX_EVENT_DATA:
            raise EventLogFormatError(f"event {number}: {size} bytes of data (at most {MAX_EVENT_DATA})")
        event = BootEvent(number, pcr, kind, digests, c.take(size, f"event {number} data"))
        if kind == EV_NO_ACTION and pcr == 0 and event.data.startswith(STARTUP_LOCALITY) \
                and len(event.data) == len(STARTUP_LOCALITY) + 1:
            locality = event.data[-1]
        elif kind != EV_NO_ACTION and set(digests) != set(algorithms):
            # The firmware extends every active bank; an event missing one would leave the banks apart.
            raise EventLogFormatError(f"event {number}: digests for {len(digests)} of {len(algorithms)} banks")
        events.append(event)
    return EventLog(algorithms, tuple(events), locality)


def replay(log: EventLog, bank: str) -> dict[int, bytes]:
    """PCR index -> value after extending every event's `bank` digest, for each PCR the log touches
    (and PCR 0 always)."""
    alg = _bank_id(log, bank)
    size = log.algorithms[alg]
    pcrs: dict[int, bytes] = {0: bytes(size - 1) + bytes([log.startup_locality])}
    for event in log.events:
        if event.event_type == EV_NO_ACTION:
            continue
        old = pcrs.get(event.pcr, bytes(size))
        pcrs[event.pcr] = hashlib.new(bank, old + event.digests[alg]).digest()
    return pcrs


def check_replay(log: EventLog, bank: str, quoted: Mapping[int, bytes], pcrs: Iterable[int]) -> dict[int, bytes]:
    """Replay `bank` and require it to give exactly the quoted values of `pcrs` (a PCR the log
    never touches must still be zero). Returns the full replay."""
    replayed = replay(log, bank)
    size = hashlib.new(bank).digest_size
    for pcr in pcrs:
        want = replayed.get(pcr, bytes(size))
        if quoted.get(pcr) != want:
            raise BootLogReplayMismatch(f"PCR {pcr}: the boot log replays to {want.hex()[:16]}..., "
                                        f"the TPM quoted {(quoted.get(pcr) or b'').hex()[:16]}...")
    return replayed


def _bank_id(log: EventLog, bank: str) -> int:
    for alg in log.algorithms:
        if HASH_NAMES.get(alg) == bank:
            return alg
    raise BootLogReplayMismatch(f"the boot log has no {bank} bank (it has {', '.join(log.banks()) or 'none'})")


# --- writing (tests, benchmarks, fuzz seeds) -------------------------------------------------

def encode_spec_id(algorithms: Mapping[int, int]) -> bytes:
    body = (SPEC_ID_SIGNATURE + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algorithms))
            + b"".join(struct.pack("<HH", a, s) for a, s in algorithms.items()) + b"\x00")
    return struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(body)) + body


def encode_event(pcr: int, event_type: int, digests: Mapping[int, bytes], data: bytes) -> bytes:
    """One TCG_PCR_EVENT2 record, digests in the order given."""
    out = [struct.pack("<III", pcr, event_type, len(digests))]
    out += [struct.pack("<H", alg) + d for alg, d in digests.items()]
    out.append(struct.pack("<I", len(data)) + data)
    return b"".join(out)


def encode_event_log(log: EventLog) -> bytes:
    return encode_spec_id(log.algorithms) + b"".join(
        encode_event(e.pcr, e.event_type, e.digests, e.data) for e in log.events)
