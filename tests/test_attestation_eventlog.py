"""Measured boot: the TCG2 event log parser and replay against three real firmware logs and
tpm2-tools' `tpm2_eventlog` (run here on the same files), the reference boot policy, and replay
checked against PCRs that a software TPM really holds after the same extends."""
from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess

import pytest
import yaml

from measured_kit import BOOT_LOGS, FIXTURES, boot_log
from ztfl.attestation import errors
from ztfl.attestation.boot_policy import (BootPolicy, reference_boot_policy, secure_boot_state,
                                          EFI_GLOBAL_VARIABLE)
from ztfl.attestation.eventlog import (EV_NO_ACTION, EventLog, check_replay, encode_event, encode_event_log,
                                       event_type_code, parse_event_log, replay)
from ztfl.attestation.tpm_agent import TpmAttestor
from ztfl.attestation.tpm_wire import ALG_SHA1, ALG_SHA256, HASH_ALGS, PcrSelection

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"no boot event log fixtures at {FIXTURES}")
needs_tpm2_tools = pytest.mark.skipif(shutil.which("tpm2_eventlog") is None,
                                      reason="tpm2_eventlog missing (tpm2-tools, installed by `make`)")


def tpm2_eventlog(name: str) -> tuple[dict, str]:
    done = subprocess.run(["tpm2_eventlog", str(FIXTURES / name)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout), done.stderr


def as_bytes(value, size: int) -> bytes:
    return int(value).to_bytes(size, "big") if isinstance(value, int) else bytes.fromhex(str(value).removeprefix("0x"))


# --- against tpm2-tools --------------------------------------------------------------------------

@needs_tpm2_tools
@pytest.mark.parametrize("name", BOOT_LOGS)
def test_replay_gives_the_pcrs_tpm2_eventlog_computes(name):
    log = parse_event_log(boot_log(name))
    parsed, _ = tpm2_eventlog(name)
    assert parsed["pcrs"], "tpm2_eventlog reported no PCRs"
    for bank, pcrs in parsed["pcrs"].items():
        ours = replay(log, bank)
        size = hashlib.new(bank).digest_size
        assert {i: as_bytes(v, size) for i, v in pcrs.items()} == ours, f"{name} {bank}"


@needs_tpm2_tools
@pytest.mark.parametrize("name", BOOT_LOGS)
def test_every_event_matches_tpm2_eventlog(name):
    log = parse_event_log(boot_log(name))
    parsed, _ = tpm2_eventlog(name)
    theirs = {e["EventNum"]: e for e in parsed["events"] if e["EventNum"] > 0}
    assert sorted(theirs) == [e.number for e in log.events]
    for event in log.events:
        other = theirs[event.number]
        assert (other["PCRIndex"], other["EventSize"]) == (event.pcr, len(event.data))
        assert event.type_name == other["EventType"] or other["EventType"].startswith(event.type_name)
        digests = {d["AlgorithmId"]: bytes.fromhex(d["Digest"]) for d in other["Digests"]}
        assert digests == {name_: event.digests[HASH_ALGS[name_]] for name_ in digests}


def test_logs_round_trip_byte_for_byte():
    for name in BOOT_LOGS:
        data = boot_log(name)
        assert encode_event_log(parse_event_log(data)) == data


@needs_tpm2_tools
def test_the_event_whose_digest_is_not_its_data_is_replayed_by_its_logged_digest_and_judged_by_policy():
    # tpm2-tools warns about exactly this event; replay (ours and theirs) still uses the logged digest.
    _, warnings = tpm2_eventlog("event-arch-linux.bin")
    assert "Event 24's digest does not match its payload" in warnings
    log = parse_event_log(boot_log("event-arch-linux.bin"))
    event = next(e for e in log.events if e.number == 24)
    assert (event.pcr, event.type_name) == (8, "EV_IPL")
    assert hashlib.sha256(event.data).digest() != event.digests[ALG_SHA256]
    assert replay(log, "sha256")[8] == tpm2_eventlog("event-arch-linux.bin")[0]["pcrs"]["sha256"][8].to_bytes(32, "big")
    # A policy that judges PCR 8 and wants EV_IPL digests to be their data's hash refuses it ...
    strict = reference_boot_policy(log, "sha256", range(9))
    strict = BootPolicy(strict.pcrs, None, strict.boot_applications, strict.events,
                        strict.verify_event_data | {event_type_code("EV_IPL")})
    with pytest.raises(errors.BootEventDataMismatch, match="boot event 24 "):
        strict.evaluate(log, "sha256")
    # ... the default policy over PCRs 0-7 never looks at it.
    reference_boot_policy(log, "sha256").evaluate(log, "sha256")


# --- the reference policy ----------------------------------------------------------------------

@pytest.mark.parametrize("name", BOOT_LOGS)
def test_reference_policy_admits_its_own_log_and_survives_yaml(name):
    log = parse_event_log(boot_log(name))
    policy = reference_boot_policy(log, "sha256")
    policy.evaluate(log, "sha256")
    again = BootPolicy.from_mapping(yaml.safe_load(yaml.safe_dump(policy.to_mapping())))
    assert again == policy
    again.evaluate(log, "sha256")


def test_another_machines_boot_is_refused_by_event():
    policy = reference_boot_policy(parse_event_log(boot_log("event-arch-linux.bin")), "sha256")
    with pytest.raises(errors.BootEventNotAllowed, match="boot event 1 "):
        policy.evaluate(parse_event_log(boot_log("event-gce-ubuntu-2104-log.bin")), "sha256")


def _with_event(log: EventLog, number: int, **changes) -> EventLog:
    events = tuple(e if e.number != number else type(e)(**{**e.__dict__, **changes}) for e in log.events)
    return EventLog(log.algorithms, events, log.startup_locality)


def test_another_boot_loader_is_refused():
    log = parse_event_log(boot_log("event-gce-ubuntu-2104-log.bin"))
    policy = reference_boot_policy(log, "sha256")
    shim = next(e for e in log.events if e.type_name == "EV_EFI_BOOT_SERVICES_APPLICATION")
    patched = _with_event(log, shim.number, digests={**shim.digests, ALG_SHA256: hashlib.sha256(b"evil").digest()})
    with pytest.raises(errors.BootEventNotAllowed, match="boot loader or kernel"):
        policy.evaluate(patched, "sha256")


def test_secure_boot_state_is_read_from_pcr7_and_enforced():
    logs = {name: parse_event_log(boot_log(name)) for name in BOOT_LOGS}
    assert {name: secure_boot_state(log) for name, log in logs.items()} == dict.fromkeys(BOOT_LOGS, False)
    log = logs["event-sd-boot-fedora37.bin"]
    required = reference_boot_policy(log, "sha256", secure_boot=True)
    with pytest.raises(errors.SecureBootStateRejected, match="Secure Boot is disabled"):
        required.evaluate(log, "sha256")
    # The same boot with SecureBoot = 1 measured (and the policy built from it) is admitted.
    variable = next(e for e in log.events if e.pcr == 7 and e.data.startswith(EFI_GLOBAL_VARIABLE)
                    and "SecureBoot".encode("utf-16-le") in e.data)
    enabled_data = EFI_GLOBAL_VARIABLE + struct.pack("<QQ", 10, 1) + "SecureBoot".encode("utf-16-le") + b"\x01"
    enabled = _with_event(log, variable.number, data=enabled_data,
                          digests={ALG_SHA256: hashlib.sha256(enabled_data).digest()})
    assert secure_boot_state(enabled) is True
    reference_boot_policy(enabled, "sha256", secure_boot=True).evaluate(enabled, "sha256")
    with pytest.raises(errors.SecureBootStateRejected):
        reference_boot_policy(enabled, "sha256", secure_boot=False).evaluate(enabled, "sha256")


def test_variable_event_whose_digest_is_not_its_data_is_refused():
    log = parse_event_log(boot_log("event-sd-boot-fedora37.bin"))
    policy = reference_boot_policy(log, "sha256")
    variable = next(e for e in log.events if e.type_name == "EV_EFI_VARIABLE_DRIVER_CONFIG")
    lying = _with_event(log, variable.number, data=variable.data[:-1] + b"\x01")
    with pytest.raises(errors.BootEventDataMismatch, match=f"boot event {variable.number} "):
        policy.evaluate(lying, "sha256")


def test_policy_yaml_errors_name_the_key():
    with pytest.raises(errors.PolicyError, match="measured_boot.events.4:EV_NOPE"):
        BootPolicy.from_mapping({"events": {"4:EV_NOPE": []}})
    with pytest.raises(errors.PolicyError, match="measured_boot.boot_applications"):
        BootPolicy.from_mapping({"boot_applications": ["zz"]})
    with pytest.raises(errors.PolicyError, match="measured_boot.colour"):
        BootPolicy.from_mapping({"colour": 1})


# --- hostile bytes -----------------------------------------------------------------------------

def test_every_truncation_is_refused_typed():
    data = boot_log("event-sd-boot-fedora37.bin")
    ends = {0}
    pos = len(encode_event_log(EventLog(parse_event_log(data).algorithms, ())))
    ends.add(pos)
    for event in parse_event_log(data).events:
        pos += len(encode_event(event.pcr, event.event_type, event.digests, event.data))
        ends.add(pos)
    for cut in range(len(data)):
        if cut in ends and cut:
            assert len(parse_event_log(data[:cut]).events) >= 0   # a log cut between events still parses
            continue
        with pytest.raises(errors.EventLogFormatError):
            parse_event_log(data[:cut])


def test_malformed_headers_and_events_are_refused():
    good = parse_event_log(boot_log("event-arch-linux.bin"))
    head = encode_event_log(EventLog(good.algorithms, ()))
    cases = {
        "first event not Spec ID": struct.pack("<II", 1, 4) + head[8:],
        "not crypto-agile": head[:32] + b"Spec ID Event02\x00" + head[48:],
        "PCR 24": head + encode_event(24, 4, {ALG_SHA1: bytes(20), ALG_SHA256: bytes(32)}, b""),
        "unknown algorithm": head + encode_event(0, 4, {0x0012: bytes(32)}, b""),
        "one bank missing": head + encode_event(0, 4, {ALG_SHA256: bytes(32)}, b""),
        "too much data": head + struct.pack("<III", 0, 4, 0) + struct.pack("<I", 1 << 30),
    }
    for what, data in cases.items():
        with pytest.raises(errors.EventLogFormatError):
            parse_event_log(data)
        assert what


def test_replay_refuses_a_bank_the_log_does_not_have():
    log = parse_event_log(boot_log("event-sd-boot-fedora37.bin"))
    with pytest.raises(errors.BootLogReplayMismatch, match="no sha1 bank"):
        replay(log, "sha1")


def test_startup_locality_sets_pcr0s_start():
    log = parse_event_log(boot_log("event-sd-boot-fedora37.bin"))
    locality = encode_event(0, EV_NO_ACTION, {ALG_SHA256: bytes(32)}, b"StartupLocality\x00\x03")
    data = boot_log("event-sd-boot-fedora37.bin")
    head = len(encode_event_log(EventLog(log.algorithms, ())))
    with_locality = parse_event_log(data[:head] + locality + data[head:])
    assert with_locality.startup_locality == 3
    expected = bytes(31) + b"\x03"
    for event in log.events:
        if event.pcr == 0 and event.event_type != EV_NO_ACTION:
            expected = hashlib.sha256(expected + event.digests[ALG_SHA256]).digest()
    assert replay(with_locality, "sha256")[0] == expected != replay(log, "sha256")[0]


# --- against a TPM -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["event-arch-linux.bin", "event-sd-boot-fedora37.bin"])
def test_replay_matches_a_tpm_extended_with_the_log(swtpm, tmp_path, name):
    log = parse_event_log(boot_log(name))
    with TpmAttestor(swtpm.tcti, tmp_path / "agent") as tpm:
        for event in log.events:
            if event.event_type != EV_NO_ACTION:
                tpm.extend_pcr(event.pcr, {b: event.digests[HASH_ALGS[b]] for b in log.banks()})
        for bank in log.banks():
            selection = PcrSelection.parse(f"{bank}:0,1,2,3,4,5,6,7")
            quoted = dict(zip(selection.pcrs, tpm.read_pcrs(selection)))
            check_replay(log, bank, quoted, range(8))
            # The log of another machine does not replay to these PCRs.
            other = parse_event_log(boot_log("event-gce-ubuntu-2104-log.bin"))
            with pytest.raises(errors.BootLogReplayMismatch, match="PCR 0"):
                check_replay(other, bank, quoted, range(8))
