"""Quote -> boot log replay -> boot policy -> IMA replay -> runtime policy, end to end against a
software TPM that a simulated kernel extends exactly as Linux does (firmware event log into PCRs
0-7, IMA ima-ng entries into PCR 10). Every attack is refused with its own typed error; PCR 23,
which root can reset, plays no part in the decision."""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from measured_kit import FIXTURES, SimulatedKernel, boot_log, copy_release, release_files
from ztfl.attestation import errors
from ztfl.attestation.boot_policy import reference_boot_policy
from ztfl.attestation.enrolment import EnrolmentAuthority
from ztfl.attestation.eventlog import parse_event_log
from ztfl.attestation.ima import encode_ima_entry, entry_sizes
from ztfl.attestation.measure import expected_pcr
from ztfl.attestation.messages import AttestationReceipt, EnrolmentChallenge, QuoteEvidence
from ztfl.attestation.policy import AttestationPolicy
from ztfl.attestation.registry import IdentityRegistry
from ztfl.attestation.runtime_policy import ReleaseScan, sign_policy, verify_signed_policy
from ztfl.attestation.tpm_agent import TpmAttestor
from ztfl.attestation.verifier import Verifier

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"no boot event log fixtures at {FIXTURES}")

AGENT = "pi-01"
PROFILE = "raspberry-pi-4"
KEYS = bytes(range(64))
BOOT_LOG = "event-sd-boot-fedora37.bin"
MEASUREMENT = hashlib.sha256(b"agent code, release 1").digest()
MEASURED_PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 10)
INTERPRETER = Path(sys.executable).resolve()


@dataclass
class Board:
    attestor: TpmAttestor
    kernel: SimulatedKernel
    verifier: Verifier
    registry: IdentityRegistry
    release: dict[str, Path]
    state: Path
    model: Path
    signed_policy: bytes
    public_key: bytes
    round_id: int = 0

    def quote(self) -> QuoteEvidence:
        self.round_id += 1
        return self.attestor.quote(self.verifier.issue_nonce(self.round_id), self.round_id, KEYS)

    def verify(self, evidence: QuoteEvidence):
        """The gateway's verdict, and the agent taking the gateway's receipt as it would."""
        try:
            return self.verifier.verify(AGENT, evidence.round_id, KEYS, evidence.to_bytes())
        finally:
            self.attestor.acknowledge(AttestationReceipt(evidence.round_id, self.verifier.ima_position(AGENT)))

    def admit(self):
        return self.verify(self.quote())

    def tamper(self, path: Path) -> None:
        """One byte of a released file changed on the board, and the file then loaded."""
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        self.kernel.load(path)


def make_policy(release: dict[str, Path], state: Path, extra: list[Path]) -> RuntimePolicyDoc:
    scan = ReleaseScan()
    for root in [INTERPRETER, *release.values(), *extra]:
        scan.add(root)
    runtime = scan.policy(exclude=[str(state / "state.json")], models=[str(state / "detector-v*.int8.onnx")],
                          release="test")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return RuntimePolicyDoc(sign_policy(runtime, private), public)


@dataclass
class RuntimePolicyDoc:
    signed: bytes
    public_key: bytes


@pytest.fixture
def board(swtpm, tmp_path) -> Board:
    attestor = TpmAttestor(swtpm.tcti, tmp_path / "agent")
    attestor.extend_measurement(MEASUREMENT)          # PCR 23: the agent's own claim, as today
    kernel = SimulatedKernel(attestor, tmp_path / "securityfs")
    kernel.boot(boot_log(BOOT_LOG))
    release = copy_release(tmp_path / "opt")
    state = (tmp_path / "var" / "lib" / "ztfl").resolve()
    state.mkdir(parents=True)
    model = state / "detector-v3.int8.onnx"
    model.write_bytes(b"int8 onnx detector, version 3")
    later = tmp_path / "opt" / "later"
    later.mkdir()
    for i in range(50):
        (later / f"plugin{i}.py").write_text(f"VALUE = {i}\n")
    doc = make_policy(release, state, [later])
    policy = AttestationPolicy(hash_alg="sha256", pcrs=MEASURED_PCRS, allowlist={PROFILE: {}},
                               boot=reference_boot_policy(parse_event_log(boot_log(BOOT_LOG)), "sha256"),
                               runtime=verify_signed_policy(doc.signed, doc.public_key))
    registry = IdentityRegistry(path=tmp_path / "identities.json")
    authority = EnrolmentAuthority(registry, policy)
    authority.complete(attestor.activate(AGENT, authority.begin(attestor.enrolment_request(AGENT, PROFILE))))
    verifier = Verifier(registry, policy)
    verifier.allow_model(hashlib.sha256(model.read_bytes()).digest())
    assert attestor.use_kernel_measurements(ima_list=kernel.list_path, boot_log=FIXTURES / BOOT_LOG)
    # The agent starts: the interpreter, every file of the release (bytecode included), the model.
    kernel.load(INTERPRETER)
    for path in release_files(release):
        kernel.load(path)
    kernel.load(model)
    (state / "state.json").write_text("{}")
    kernel.load(state / "state.json")
    yield Board(attestor, kernel, verifier, registry, release, state, model, doc.signed, doc.public_key)
    attestor.close()


# --- the released agent is admitted, first with its whole list, then incrementally ---------------

def test_released_agent_is_admitted_with_its_whole_list_then_incrementally(board):
    evidence = board.quote()
    assert evidence.ima_offset == 0 and evidence.boot_log == boot_log(BOOT_LOG)
    seat = board.verify(evidence)
    assert seat.ima_entries == len(board.kernel.entries) > 100
    assert set(seat.pcr_values) == set(MEASURED_PCRS) | {23}
    # Nothing measured since: the next quote carries no entry at all.
    evidence = board.quote()
    assert (evidence.ima_offset, evidence.ima_entries) == (len(board.kernel.entries), b"")
    board.verify(evidence)
    # 50 files loaded since: only their entries travel.
    for path in sorted((board.release["agent"].parents[1] / "later").glob("*.py")):
        board.kernel.load(path)
    evidence = board.quote()
    assert evidence.ima_offset == seat.ima_entries and len(entry_sizes(evidence.ima_entries)) == 50
    assert board.verify(evidence).ima_entries == seat.ima_entries + 50


def test_list_read_after_the_quote_may_run_ahead(board):
    board.admit()
    board.kernel.load(board.release["agent"].parents[1] / "later" / "plugin0.py")
    evidence = board.quote()
    # Measured between quote and read: in the list, not yet in the quoted PCR 10.
    board.kernel.load(board.release["agent"].parents[1] / "later" / "plugin1.py")
    late = replace(evidence, ima_entries=board.attestor.ima.pending()[1])
    position = board.verifier.ima_position(AGENT)
    assert board.verify(late).ima_entries == position + 1
    assert board.admit().ima_entries == position + 2


# --- changed code and data -----------------------------------------------------------------------

@pytest.mark.parametrize("part,name", [("agent", "update.py"), ("privacy", "mechanisms.py"),
                                       ("hw_profiles", "raspberry-pi-4.yaml"), ("nacl", "signing.py")])
def test_one_changed_byte_in_a_released_file_is_refused_naming_it(board, part, name):
    board.admit()
    target = board.release[part] / name
    board.tamper(target)
    with pytest.raises(errors.RuntimeFileChanged, match=str(target.resolve())):
        board.admit()
    # The list keeps the entry until the board reboots: every later quote is refused too.
    with pytest.raises(errors.RuntimeFileChanged):
        board.admit()


def test_changed_bytecode_is_refused(board):
    pyc = next(board.release["agent"].glob("__pycache__/update.*.pyc"))
    board.tamper(pyc)
    with pytest.raises(errors.RuntimeFileChanged, match="update"):
        board.admit()


def test_unknown_file_is_refused_naming_it(board):
    board.admit()
    rogue = board.release["agent"] / "backdoor.py"
    rogue.write_text("import os\n")
    board.kernel.load(rogue)
    with pytest.raises(errors.UnknownRuntimeFile, match="backdoor.py"):
        board.admit()


def test_model_must_be_a_version_the_gateway_distributed(board):
    board.admit()
    board.tamper(board.model)
    with pytest.raises(errors.ModelNotDistributed, match="detector-v3.int8.onnx"):
        board.admit()


def test_a_newly_distributed_model_version_is_admitted(board):
    board.admit()
    v4 = board.state / "detector-v4.int8.onnx"
    v4.write_bytes(b"int8 onnx detector, version 4")
    board.verifier.allow_model(hashlib.sha256(v4.read_bytes()).digest())
    board.kernel.load(v4)
    assert board.admit()


def test_a_violation_is_refused(board):
    board.kernel.record(encode_ima_entry(str(board.state / "state.json"), bytes(32), violation=True))
    with pytest.raises(errors.ImaViolation, match="state.json"):
        board.admit()


# --- PCR 23 is no longer what decides --------------------------------------------------------------

def test_pcr23_reset_to_the_golden_value_by_root_does_not_hide_changed_code(board):
    board.tamper(board.release["agent"] / "update.py")
    # Root resets PCR 23 and extends the released measurement: it holds the golden value ...
    board.attestor.extend_measurement(MEASUREMENT, reset=True)
    evidence = board.quote()
    assert dict(zip((0, 1, 2, 3, 4, 5, 6, 7, 10, 23), evidence.pcr_values))[23] == expected_pcr(MEASUREMENT)
    # ... and the gateway still refuses, from the IMA list.
    with pytest.raises(errors.RuntimeFileChanged, match="update.py"):
        board.verify(evidence)


def test_pcr23_holding_anything_does_not_refuse_released_code(board):
    board.attestor.extend_measurement(b"whatever root extended", reset=True)
    assert board.admit()


def test_a_gateway_without_a_runtime_policy_still_judges_pcr23_of_the_same_quote(board):
    legacy = Verifier(board.registry, AttestationPolicy(pcrs=(23,),
                                                        allowlist={PROFILE: {23: frozenset({expected_pcr(MEASUREMENT)})}}))
    assert legacy.verify(AGENT, 1, KEYS, board.attestor.quote(legacy.issue_nonce(1), 1, KEYS).to_bytes())


# --- forged, truncated, reordered lists --------------------------------------------------------------

def split(entries: bytes) -> list[bytes]:
    out, pos = [], 0
    for size in entry_sizes(entries):
        out.append(entries[pos:pos + size])
        pos += size
    return out


def test_truncated_list_is_refused(board):
    evidence = board.quote()
    with pytest.raises(errors.ImaReplayMismatch):
        board.verify(replace(evidence, ima_entries=b"".join(split(evidence.ima_entries)[:-1])))


def test_list_hiding_one_entry_is_refused(board):
    board.admit()
    board.tamper(board.release["privacy"] / "ledger.py")
    board.kernel.load(board.release["agent"].parents[1] / "later" / "plugin0.py")
    evidence = board.quote()
    entries = split(evidence.ima_entries)
    assert len(entries) == 2
    with pytest.raises(errors.ImaReplayMismatch):
        board.verify(replace(evidence, ima_entries=entries[1]))


def test_reordered_list_is_refused(board):
    evidence = board.quote()
    entries = split(evidence.ima_entries)
    entries[5], entries[6] = entries[6], entries[5]
    with pytest.raises(errors.ImaReplayMismatch):
        board.verify(replace(evidence, ima_entries=b"".join(entries)))


def test_forged_entries_are_refused(board):
    board.tamper(board.release["agent"] / "update.py")
    evidence = board.quote()
    entries = split(evidence.ima_entries)
    path = str((board.release["agent"] / "update.py").resolve())
    # The changed file's entry, claiming the released digest ...
    honest_looking = encode_ima_entry(path, hashlib.sha256(b"released bytes").digest())
    with pytest.raises(errors.ImaReplayMismatch):
        board.verify(replace(evidence, ima_entries=b"".join(entries[:-1] + [honest_looking])))
    # ... or with its template digest left as the kernel logged it.
    kept_digest = entries[-1][:24] + honest_looking[24:]
    with pytest.raises(errors.ImaTemplateHashMismatch, match="update.py"):
        board.verify(replace(evidence, ima_entries=b"".join(entries[:-1] + [kept_digest])))


def test_entries_from_an_offset_the_gateway_never_accepted_are_refused(board):
    evidence = board.quote()
    entries = split(evidence.ima_entries)
    with pytest.raises(errors.ImaLogGap, match="holds this boot's list up to 0"):
        board.verify(replace(evidence, ima_offset=3, ima_entries=b"".join(entries[3:])))


def test_a_quote_without_the_lists_is_refused(board):
    evidence = board.quote()
    with pytest.raises(errors.EvidenceLogMissing, match="IMA"):
        board.verify(replace(evidence, ima_entries=b""))
    evidence = board.quote()
    with pytest.raises(errors.EvidenceLogMissing, match="boot event log"):
        board.verify(replace(evidence, boot_log=b""))


def test_a_boot_log_that_does_not_replay_to_the_quote_is_refused(board):
    evidence = board.quote()
    with pytest.raises(errors.BootLogReplayMismatch, match="PCR 0"):
        board.verify(replace(evidence, boot_log=boot_log("event-arch-linux.bin")))


def test_a_boot_log_with_another_kernel_is_refused_by_the_boot_policy(board):
    # A policy for another release of what PCR 4 measures (boot loader, kernel): this boot's are refused.
    strict = replace(board.verifier.policy.boot, events={
        k: (frozenset() if k[0] == 4 else v) for k, v in board.verifier.policy.boot.events.items()})
    board.verifier.policy = replace(board.verifier.policy, boot=strict)
    with pytest.raises(errors.BootEventNotAllowed, match="PCR 4"):
        board.admit()


def test_boot_aggregate_must_be_the_hash_of_the_logged_boot(swtpm, tmp_path):
    with TpmAttestor(swtpm.tcti, tmp_path / "agent") as attestor:
        kernel = SimulatedKernel(attestor, tmp_path / "securityfs")
        kernel.boot_aggregate()                     # IMA started before this firmware log was measured
        kernel.firmware(boot_log(BOOT_LOG))
        policy = AttestationPolicy(pcrs=MEASURED_PCRS, allowlist={PROFILE: {}},
                                   boot=reference_boot_policy(parse_event_log(boot_log(BOOT_LOG)), "sha256"),
                                   runtime=ReleaseScan().policy())
        registry = IdentityRegistry(path=tmp_path / "identities.json")
        authority = EnrolmentAuthority(registry, policy)
        authority.complete(attestor.activate(AGENT, authority.begin(attestor.enrolment_request(AGENT, PROFILE))))
        verifier = Verifier(registry, policy)
        attestor.use_kernel_measurements(ima_list=kernel.list_path, boot_log=FIXTURES / BOOT_LOG)
        evidence = attestor.quote(verifier.issue_nonce(1), 1, KEYS)
        with pytest.raises(errors.BootAggregateMismatch, match="IMA entry 0"):
            verifier.verify(AGENT, 1, KEYS, evidence.to_bytes())


# --- the policy file and the gateway -----------------------------------------------------------------

def test_policy_file_names_the_signed_runtime_policy_and_the_boot_policy(board, tmp_path):
    (tmp_path / "runtime-policy.json").write_bytes(board.signed_policy)
    (tmp_path / "release.pub").write_bytes(board.public_key)
    doc = {"hash_alg": "sha256", "pcrs": list(MEASURED_PCRS), "allowlist": {PROFILE: {}},
           "measured_boot": board.verifier.policy.boot.to_mapping(),
           "runtime_policy": {"file": str(tmp_path / "runtime-policy.json"), "key": str(tmp_path / "release.pub")}}
    policy = AttestationPolicy.from_mapping(yaml.safe_load(yaml.safe_dump(doc)))
    assert policy.runtime == board.verifier.policy.runtime and policy.boot == board.verifier.policy.boot
    (tmp_path / "release.pub").write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(errors.PolicyError, match="another key"):
        AttestationPolicy.from_mapping(doc)
    with pytest.raises(errors.PolicyError, match="needs PCR 10"):
        AttestationPolicy(pcrs=(0,), runtime=policy.runtime)


def test_gateway_seats_the_board_and_returns_a_receipt_for_the_next_quote(board, tmp_path):
    from ztfl.gateway.attest import GatewayAttestation
    from ztfl.gateway.config import AttestationSettings
    from ztfl.protocol.rounds import attempt_id

    (tmp_path / "runtime-policy.json").write_bytes(board.signed_policy)
    (tmp_path / "release.pub").write_bytes(board.public_key)
    policy_file = tmp_path / "attestation-policy.yaml"
    policy_file.write_text(yaml.safe_dump({
        "pcrs": list(MEASURED_PCRS), "allowlist": {PROFILE: {}},
        "measured_boot": board.verifier.policy.boot.to_mapping(),
        "runtime_policy": {"file": str(tmp_path / "runtime-policy.json"), "key": str(tmp_path / "release.pub")}}))
    (tmp_path / "gateway").mkdir()
    gateway = GatewayAttestation(tmp_path / "gateway", settings=AttestationSettings(policy=str(policy_file),
                                                                                     trust_on_first_use=True))
    challenge = gateway.on_enrol(AGENT, board.attestor.enrolment_request(AGENT, PROFILE).to_bytes())
    gateway.on_enrol(AGENT, board.attestor.activate(AGENT, EnrolmentChallenge.from_bytes(challenge)).to_bytes())
    gateway.record_model(board.model.read_bytes())
    for round_id in (1, 2):
        nonce = gateway.issue_nonce(round_id, 0)
        evidence = board.attestor.quote(nonce, attempt_id(round_id, 0), KEYS).to_bytes()
        verdict = gateway.verify(AGENT, round_id, 0, KEYS, evidence)
        assert verdict.ok, verdict.message
        receipt = AttestationReceipt.from_bytes(verdict.receipt)
        assert receipt.ima_accepted == len(board.kernel.entries)
        board.attestor.acknowledge(receipt)
    assert QuoteEvidence.from_bytes(evidence).ima_offset == len(board.kernel.entries)   # round 2: nothing new
    board.tamper(board.release["agent"] / "update.py")
    nonce = gateway.issue_nonce(3, 0)
    verdict = gateway.verify(AGENT, 3, 0, KEYS, board.attestor.quote(nonce, attempt_id(3, 0), KEYS).to_bytes())
    assert (verdict.ok, verdict.reason) == (False, "ima_file_changed") and "update.py" in verdict.message
    assert AttestationReceipt.from_bytes(verdict.receipt).ima_accepted == len(board.kernel.entries) - 1
