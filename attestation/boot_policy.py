"""The reference policy a replayed boot event log is judged by: which events and digests may
appear in the judged PCRs (boot loader, kernel, firmware, UEFI variables), and the Secure Boot
state. Pure: the verifier passes a parsed attestation.eventlog.EventLog.

    measured_boot:
      pcrs: [0, 1, 2, 3, 4, 5, 6, 7]      # replay must match the quote for these; their events are judged
      secure_boot: true                   # PCR 7 must log SecureBoot = 1 (false: = 0; left out: either)
      boot_applications: [HEX, ...]       # PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION: shim, boot loader,
                                          # and the kernel where UEFI loads it (systemd-boot, EFI stub)
      events:                             # every other judged event: "PCR:TYPE" -> allowed digests
        "0:EV_S_CRTM_VERSION": [HEX]      # "*" instead of a list: any digest of that kind
        "9:EV_IPL": [HEX, ...]            # the kernel and initrd where grub measures them (judge PCR 9 then)
      verify_event_data: [EV_SEPARATOR, EV_EFI_ACTION, EV_EFI_VARIABLE_DRIVER_CONFIG]
                                          # these types' digests must be the hash of their own data

Digests are of the policy's bank (AttestationPolicy.hash_alg). `reference_boot_policy(log, ...)`
writes such a policy from the log of a known-good board.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ztfl.attestation.errors import (BootEventDataMismatch, BootEventNotAllowed, PolicyError,
                                     SecureBootStateRejected)
from ztfl.attestation.eventlog import EV_NO_ACTION, BootEvent, EventLog, event_type_code, event_type_name
from ztfl.attestation.tpm_wire import HASH_ALGS

BOOT_APPLICATION = event_type_code("EV_EFI_BOOT_SERVICES_APPLICATION")
DRIVER_CONFIG = event_type_code("EV_EFI_VARIABLE_DRIVER_CONFIG")
BOOT_APPLICATION_PCR = 4
SECURE_BOOT_PCR = 7
# EFI_GLOBAL_VARIABLE 8be4df61-93ca-11d2-aa0d-00e098032b8c, as UEFI lays a GUID out in memory.
EFI_GLOBAL_VARIABLE = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")
DEFAULT_DATA_CHECKS = ("EV_SEPARATOR", "EV_EFI_ACTION", "EV_EFI_VARIABLE_DRIVER_CONFIG")
ANY_DIGEST = "*"


@dataclass(frozen=True)
class BootPolicy:
    pcrs: tuple[int, ...] = tuple(range(8))
    secure_boot: bool | None = None
    boot_applications: frozenset[bytes] = frozenset()
    events: Mapping[tuple[int, int], frozenset[bytes] | None] = field(default_factory=dict)   # None: any
    verify_event_data: frozenset[int] = frozenset(event_type_code(t) for t in DEFAULT_DATA_CHECKS)

    def __post_init__(self):
        if not self.pcrs or any(isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 23
                                for p in self.pcrs):
            raise PolicyError(f"measured_boot.pcrs: {self.pcrs!r} must be a non-empty list of indices 0..23")
        object.__setattr__(self, "pcrs", tuple(sorted(set(self.pcrs))))
        if self.secure_boot not in (None, True, False):
            raise PolicyError("measured_boot.secure_boot: must be true, false or left out")

    # --- judging a log ------------------------------------------------------------------------
    def evaluate(self, log: EventLog, bank: str) -> None:
        """Raise the first refusal for the events of the judged PCRs, in log order."""
        alg = HASH_ALGS[bank]
        if alg not in log.algorithms:
            raise BootEventNotAllowed(f"the boot log has no {bank} bank to judge")
        judged = set(self.pcrs)
        for event in log.events:
            if event.pcr not in judged or event.event_type == EV_NO_ACTION:
                continue
            logged = event.digests[alg]
            if event.event_type in self.verify_event_data and hashlib.new(bank, event.data).digest() != logged:
                raise BootEventDataMismatch(f"boot event {event.number} ({event.type_name}, PCR {event.pcr}): "
                                            "its digest is not the hash of its data")
            self._check_allowed(event, logged)
        if self.secure_boot is not None and SECURE_BOOT_PCR in judged:
            state = secure_boot_state(log)
            if state is not self.secure_boot:
                said = {None: "not logged", True: "enabled", False: "disabled"}[state]
                raise SecureBootStateRejected(f"Secure Boot is {said}; the policy requires it "
                                              f"{'enabled' if self.secure_boot else 'disabled'}")

    def _check_allowed(self, event: BootEvent, logged: bytes) -> None:
        where = f"boot event {event.number} ({event.type_name}, PCR {event.pcr})"
        if event.pcr == BOOT_APPLICATION_PCR and event.event_type == BOOT_APPLICATION:
            if logged not in self.boot_applications:
                raise BootEventNotAllowed(f"{where}: boot loader or kernel {logged.hex()[:16]}... "
                                          "is not in the policy's boot_applications")
            return
        key = (event.pcr, event.event_type)
        if key not in self.events:
            raise BootEventNotAllowed(f"{where}: the policy allows no event of this kind")
        allowed = self.events[key]
        if allowed is not None and logged not in allowed:
            raise BootEventNotAllowed(f"{where}: digest {logged.hex()[:16]}... is not allowed")

    # --- the YAML form ------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, data: Mapping) -> "BootPolicy":
        if not isinstance(data, Mapping):
            raise PolicyError("measured_boot: expected a mapping")
        unknown = set(data) - {"pcrs", "secure_boot", "boot_applications", "events", "verify_event_data"}
        if unknown:
            raise PolicyError(f"measured_boot.{sorted(map(str, unknown))[0]}: unknown key")
        events: dict[tuple[int, int], frozenset[bytes] | None] = {}
        raw_events = data.get("events", {}) or {}
        if not isinstance(raw_events, Mapping):
            raise PolicyError("measured_boot.events: expected a mapping of 'PCR:TYPE' -> digests")
        for key, digests in raw_events.items():
            pcr, _, kind = str(key).partition(":")
            try:
                slot = (int(pcr), event_type_code(kind))
            except ValueError:
                raise PolicyError(f"measured_boot.events.{key}: expected 'PCR:EVENT_TYPE'") from None
            events[slot] = None if digests == ANY_DIGEST else _digests(digests, f"measured_boot.events.{key}")
        try:
            checks = frozenset(event_type_code(str(t)) for t in data.get("verify_event_data", DEFAULT_DATA_CHECKS))
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"measured_boot.verify_event_data: {exc}") from None
        pcrs = data.get("pcrs", list(range(8)))
        if not isinstance(pcrs, (list, tuple)):
            raise PolicyError("measured_boot.pcrs: expected a list of PCR indices")
        return cls(pcrs=tuple(pcrs), secure_boot=data.get("secure_boot"),
                   boot_applications=_digests(data.get("boot_applications", []) or [],
                                              "measured_boot.boot_applications"),
                   events=events, verify_event_data=checks)

    def to_mapping(self) -> dict:
        events = {f"{pcr}:{event_type_name(kind)}": ANY_DIGEST if digests is None else sorted(d.hex() for d in digests)
                  for (pcr, kind), digests in sorted(self.events.items())}
        out = {"pcrs": list(self.pcrs), "boot_applications": sorted(d.hex() for d in self.boot_applications),
               "events": events, "verify_event_data": sorted(event_type_name(t) for t in self.verify_event_data)}
        if self.secure_boot is not None:
            out["secure_boot"] = self.secure_boot
        return out


def _digests(values, where: str) -> frozenset[bytes]:
    if not isinstance(values, (list, tuple)):
        raise PolicyError(f"{where}: expected a list of hex digests or '{ANY_DIGEST}'")
    try:
        return frozenset(bytes.fromhex(v) for v in values)
    except (TypeError, ValueError):
        raise PolicyError(f"{where}: expected a list of hex digests") from None


def secure_boot_state(log: EventLog) -> bool | None:
    """The SecureBoot variable as measured into PCR 7 (UEFI_VARIABLE_DATA), or None if not logged."""
    for event in log.events:
        if event.pcr != SECURE_BOOT_PCR or event.event_type != DRIVER_CONFIG:
            continue
        variable = uefi_variable(event.data)
        if variable is not None and variable[:2] == (EFI_GLOBAL_VARIABLE, "SecureBoot"):
            return variable[2][:1] == b"\x01"
    return None


def uefi_variable(data: bytes) -> tuple[bytes, str, bytes] | None:
    """(vendor GUID, name, value) of a UEFI_VARIABLE_DATA event, or None if it is not one."""
    if len(data) < 32:
        return None
    name_chars, value_len = struct.unpack_from("<QQ", data, 16)
    if 32 + 2 * name_chars + value_len != len(data):
        return None
    try:
        name = data[32:32 + 2 * name_chars].decode("utf-16-le")
    except UnicodeDecodeError:
        return None
    return data[:16], name, data[32 + 2 * name_chars:]


def reference_boot_policy(log: EventLog, bank: str, pcrs: Iterable[int] = range(8),
                          secure_boot: bool | None = None) -> BootPolicy:
    """The policy that admits exactly the events of a known-good board's log (and its siblings
    booting the same firmware, boot loader and kernel)."""
    alg = HASH_ALGS[bank]
    judged = set(pcrs)
    apps: set[bytes] = set()
    events: dict[tuple[int, int], set[bytes]] = {}
    for event in log.events:
        if event.pcr not in judged or event.event_type == EV_NO_ACTION:
            continue
        if event.pcr == BOOT_APPLICATION_PCR and event.event_type == BOOT_APPLICATION:
            apps.add(event.digests[alg])
        else:
            events.setdefault((event.pcr, event.event_type), set()).add(event.digests[alg])
    checks = frozenset(event_type_code(t) for t in DEFAULT_DATA_CHECKS)
    return BootPolicy(pcrs=tuple(judged), secure_boot=secure_boot, boot_applications=frozenset(apps),
                      events={k: frozenset(v) for k, v in events.items()}, verify_event_data=checks)
