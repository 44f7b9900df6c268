"""Attestation against a real software TPM (swtpm, one fresh TPM state per test):
enrolment by credential activation, quotes bound to the protocol keys, and every attack
refused with its own error."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import pytest

from ztfl.attestation import errors
from ztfl.attestation.enrolment import EnrolmentAuthority
from ztfl.attestation.measure import expected_pcr
from ztfl.attestation.messages import ActivationResponse, EnrolmentChallenge, EnrolmentRequest, QuoteEvidence
from ztfl.attestation.nonces import NonceBook
from ztfl.attestation.policy import AttestationPolicy
from ztfl.attestation.registry import IdentityRegistry
from ztfl.attestation.software_identity import new_device_key, sign_software_quote
from ztfl.attestation.tpm_agent import TpmAttestor
from ztfl.attestation.verifier import Verifier
from ztfl.services import start_swtpm

AGENT = "pi-01"
PROFILE = "raspberry-pi-4"
MEASUREMENT = hashlib.sha256(b"agent code and model, release 1").digest()
KEYS = bytes(range(64))           # stands for the agent's X25519 public keys of the round


@dataclass
class Enrolled:
    attestor: TpmAttestor
    policy: AttestationPolicy
    registry: IdentityRegistry
    authority: EnrolmentAuthority
    verifier: Verifier


def make_policy(**kw) -> AttestationPolicy:
    return AttestationPolicy(allowlist={PROFILE: {23: frozenset({expected_pcr(MEASUREMENT)})}}, **kw)


@pytest.fixture
def enrolled(swtpm, tmp_path):
    attestor = TpmAttestor(swtpm.tcti, tmp_path / "agent-state")
    attestor.extend_measurement(MEASUREMENT)
    policy = make_policy()
    registry = IdentityRegistry(path=tmp_path / "identities.json")
    authority = EnrolmentAuthority(registry, policy)
    # Messages cross the wire as bytes in both directions.
    request = EnrolmentRequest.from_bytes(attestor.enrolment_request(AGENT, PROFILE).to_bytes())
    challenge = EnrolmentChallenge.from_bytes(authority.begin(request).to_bytes())
    response = ActivationResponse.from_bytes(attestor.activate(AGENT, challenge).to_bytes())
    authority.complete(response)
    yield Enrolled(attestor, policy, registry, authority, Verifier(registry, policy))
    attestor.close()


def fresh_quote(e: Enrolled, round_id: int = 1, keys: bytes = KEYS, selection: str = "sha256:23") -> bytes:
    nonce = e.verifier.issue_nonce(round_id)
    return e.attestor.quote(nonce, round_id, keys, selection).to_bytes()


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def with_field(evidence: bytes, **changes) -> bytes:
    ev = QuoteEvidence.from_bytes(evidence)
    return QuoteEvidence(**{**ev.__dict__, **changes}).to_bytes()


# --- golden path ----------------------------------------------------------------------------

def test_enrolled_agent_with_fresh_quote_gets_a_seat(enrolled):
    seat = enrolled.verifier.verify(AGENT, 1, KEYS, fresh_quote(enrolled))
    assert seat.agent_id == AGENT and seat.profile == PROFILE and not seat.software_rooted
    assert seat.pcr_values == {23: expected_pcr(MEASUREMENT)}
    assert enrolled.verifier.metrics.snapshot() == {"accepted_tpm": 1, "accepted_software": 0, "rejected": {}}
    record = IdentityRegistry.load(enrolled.registry.path).get(AGENT)
    assert record.active and record.last_clock == seat.clock


def test_ak_persists_across_agent_and_tpm_restarts(enrolled, swtpm, tmp_path):
    ak_before = enrolled.attestor.ensure_ak()
    first = enrolled.verifier.verify(AGENT, 1, KEYS, fresh_quote(enrolled))
    enrolled.attestor.close()
    swtpm.stop()
    restarted = start_swtpm(swtpm.workdir)            # same TPM state: a reboot
    try:
        enrolled.attestor = TpmAttestor(restarted.tcti, tmp_path / "agent-state")
        assert enrolled.attestor.ensure_ak() == ak_before
        enrolled.attestor.extend_measurement(MEASUREMENT)
        second = enrolled.verifier.verify(AGENT, 2, KEYS, fresh_quote(enrolled, 2))
        assert second.clock[0] > first.clock[0]           # resetCount went up: allowed
    finally:
        enrolled.attestor.close()
        restarted.stop()


# --- attacks, one error each -------------------------------------------------------------------

def test_replayed_quote_is_refused(enrolled):
    evidence = fresh_quote(enrolled)
    enrolled.verifier.verify(AGENT, 1, KEYS, evidence)
    with pytest.raises(errors.ReplayedNonce):
        enrolled.verifier.verify(AGENT, 1, KEYS, evidence)


def test_nonce_of_an_earlier_round_is_stale(enrolled):
    old_nonce = enrolled.verifier.issue_nonce(1)
    enrolled.verifier.issue_nonce(2)
    evidence = enrolled.attestor.quote(old_nonce, 2, KEYS).to_bytes()
    with pytest.raises(errors.StaleNonce):
        enrolled.verifier.verify(AGENT, 2, KEYS, evidence)


def test_expired_nonce_is_stale(enrolled):
    now = [1000.0]
    verifier = Verifier(enrolled.registry, enrolled.policy, NonceBook(ttl_s=30, clock=lambda: now[0]))
    nonce = verifier.issue_nonce(1)
    evidence = enrolled.attestor.quote(nonce, 1, KEYS).to_bytes()
    now[0] += 31
    with pytest.raises(errors.StaleNonce):
        verifier.verify(AGENT, 1, KEYS, evidence)


def test_retired_round_makes_its_nonces_stale(enrolled):
    evidence = fresh_quote(enrolled, 3)
    enrolled.verifier.retire_round(3)
    with pytest.raises(errors.StaleNonce):
        enrolled.verifier.verify(AGENT, 3, KEYS, evidence)


def test_nonce_never_issued_is_unknown(enrolled):
    enrolled.verifier.issue_nonce(1)
    evidence = enrolled.attestor.quote(os.urandom(32), 1, KEYS).to_bytes()
    with pytest.raises(errors.UnknownNonce):
        enrolled.verifier.verify(AGENT, 1, KEYS, evidence)


def test_nonce_issued_to_another_agent_is_unknown(enrolled):
    nonce = enrolled.verifier.issue_nonce(1, agent_id="pi-02")
    with pytest.raises(errors.UnknownNonce):
        enrolled.verifier.verify(AGENT, 1, KEYS, enrolled.attestor.quote(nonce, 1, KEYS).to_bytes())


def test_one_flipped_bit_in_the_signed_quote_breaks_the_signature(enrolled):
    evidence = fresh_quote(enrolled)
    attest = QuoteEvidence.from_bytes(evidence).attest
    # The last bytes of TPMS_ATTEST are the PCR digest: well-formed after the flip, but unsigned.
    with pytest.raises(errors.BadSignature):
        enrolled.verifier.verify(AGENT, 1, KEYS, with_field(evidence, attest=flip(attest, 8 * len(attest) - 3)))


def test_every_single_bit_flip_of_the_quote_is_refused_and_costs_nothing(enrolled):
    evidence = fresh_quote(enrolled)
    attest = QuoteEvidence.from_bytes(evidence).attest
    reasons = set()
    for bit in range(8 * len(attest)):
        with pytest.raises(errors.AttestationError) as caught:
            enrolled.verifier.verify(AGENT, 1, KEYS, with_field(evidence, attest=flip(attest, bit)))
        reasons.add(caught.value.reason)
    assert reasons <= {"attest_format", "unenrolled_key", "bad_signature"}
    assert {"attest_format", "unenrolled_key", "bad_signature"} <= reasons
    # The forgeries did not burn the agent's nonce: the genuine quote is still admitted.
    assert enrolled.verifier.verify(AGENT, 1, KEYS, evidence).agent_id == AGENT
    assert enrolled.verifier.metrics.rejected.total() == 8 * len(attest)


def test_one_flipped_bit_in_the_signature_is_refused(enrolled):
    evidence = fresh_quote(enrolled)
    signature = QuoteEvidence.from_bytes(evidence).signature
    # Layout: sigAlg(2) hashAlg(2) size(2) r(32) size(2) s(32); flip a bit inside r.
    with pytest.raises(errors.BadSignature):
        enrolled.verifier.verify(AGENT, 1, KEYS, with_field(evidence, signature=flip(signature, 8 * 10)))
    for bit in range(8 * len(signature)):
        with pytest.raises(errors.AttestationError):
            enrolled.verifier.verify(AGENT, 1, KEYS, with_field(evidence, signature=flip(signature, bit)))


def test_tampered_pcr_value_does_not_match_the_signed_digest(enrolled):
    evidence = fresh_quote(enrolled)
    # The attacker reports the allowed value although the TPM quoted another one.
    enrolled.attestor.extend_measurement(hashlib.sha256(b"patched agent").digest())
    tampered = with_field(enrolled.attestor.quote(enrolled.verifier.issue_nonce(1), 1, KEYS).to_bytes(),
                          pcr_values=(expected_pcr(MEASUREMENT),))
    with pytest.raises(errors.PcrDigestMismatch):
        enrolled.verifier.verify(AGENT, 1, KEYS, tampered)
    assert enrolled.verifier.verify(AGENT, 1, KEYS, evidence)


def test_pcr_value_outside_the_allow_list_is_refused(enrolled):
    enrolled.attestor.extend_measurement(hashlib.sha256(b"patched agent").digest())
    with pytest.raises(errors.PcrValueNotAllowed):
        enrolled.verifier.verify(AGENT, 1, KEYS, fresh_quote(enrolled))


def test_profile_without_allow_list_is_refused(enrolled):
    verifier = Verifier(enrolled.registry, AttestationPolicy(allowlist={"jetson-orin-nano": {23: frozenset()}}))
    nonce = verifier.issue_nonce(1)
    with pytest.raises(errors.UnknownProfile):
        verifier.verify(AGENT, 1, KEYS, enrolled.attestor.quote(nonce, 1, KEYS).to_bytes())


def test_quote_signed_by_an_unenrolled_key_is_refused(enrolled, tmp_path):
    with start_swtpm(tmp_path / "attacker-tpm") as other:
        with TpmAttestor(other.tcti, tmp_path / "attacker-state") as attacker:
            attacker.extend_measurement(MEASUREMENT)
            forged = attacker.quote(enrolled.verifier.issue_nonce(1), 1, KEYS).to_bytes()
    with pytest.raises(errors.UnenrolledKey):
        enrolled.verifier.verify(AGENT, 1, KEYS, forged)


def test_ak_never_activated_is_refused(swtpm, tmp_path):
    policy = make_policy()
    registry = IdentityRegistry()
    authority = EnrolmentAuthority(registry, policy)
    with TpmAttestor(swtpm.tcti, tmp_path / "agent") as attestor:
        attestor.extend_measurement(MEASUREMENT)
        authority.begin(attestor.enrolment_request(AGENT, PROFILE))     # challenge never answered
        verifier = Verifier(registry, policy)
        with pytest.raises(errors.AkNotActivated):
            verifier.verify(AGENT, 1, KEYS, attestor.quote(verifier.issue_nonce(1), 1, KEYS).to_bytes())


def test_sha1_bank_where_the_policy_says_sha256_is_refused(enrolled):
    with pytest.raises(errors.HashAlgorithmMismatch):
        enrolled.verifier.verify(AGENT, 1, KEYS, fresh_quote(enrolled, selection="sha1:23"))


def test_quote_over_other_protocol_keys_is_refused(enrolled):
    # A quote made for one set of protocol keys cannot vouch for keys swapped in by a relay.
    evidence = fresh_quote(enrolled, keys=KEYS)
    with pytest.raises(errors.QualifyingDataMismatch):
        enrolled.verifier.verify(AGENT, 1, bytes(64), evidence)


def test_quote_over_fewer_pcrs_than_the_policy_is_refused(enrolled):
    verifier = Verifier(enrolled.registry, AttestationPolicy(
        pcrs=(16, 23), allowlist={PROFILE: {16: frozenset({bytes(32)}), 23: frozenset({expected_pcr(MEASUREMENT)})}}))
    nonce = verifier.issue_nonce(1)
    with pytest.raises(errors.PcrSelectionMismatch):
        verifier.verify(AGENT, 1, KEYS, enrolled.attestor.quote(nonce, 1, KEYS, "sha256:23").to_bytes())
    nonce = verifier.issue_nonce(1)
    assert verifier.verify(AGENT, 1, KEYS, enrolled.attestor.quote(nonce, 1, KEYS, "sha256:16,23").to_bytes())


def test_tpm_clock_running_backwards_is_refused(enrolled):
    early = fresh_quote(enrolled, 1)
    late = fresh_quote(enrolled, 1)
    enrolled.verifier.verify(AGENT, 1, KEYS, late)
    with pytest.raises(errors.ClockRollback):
        enrolled.verifier.verify(AGENT, 1, KEYS, early)


def test_unknown_agent_is_refused_and_the_reason_is_kept(enrolled):
    with pytest.raises(errors.UnknownAgent):
        enrolled.verifier.verify("pi-99", 1, KEYS, fresh_quote(enrolled))
    rejection = enrolled.verifier.last_rejection("pi-99")
    assert rejection.reason == "not_enrolled" and rejection.round_id == 1
    assert enrolled.verifier.metrics.rejected["not_enrolled"] == 1


def test_malformed_evidence_is_a_typed_refusal(enrolled):
    evidence = fresh_quote(enrolled)
    for bad in (b"", evidence[:-1], evidence + b"\x00", b"ZQT\x02" + evidence[4:]):
        with pytest.raises(errors.MalformedEvidence):
            enrolled.verifier.verify(AGENT, 1, KEYS, bad)


# --- enrolment ------------------------------------------------------------------------------

def test_challenge_for_another_tpm_cannot_be_activated(enrolled, tmp_path):
    # An attacker pairs a not-yet-enrolled victim's EK with its own AK: MakeCredential encrypts
    # to the victim's EK, so the attacker's TPM cannot recover the secret.
    authority = EnrolmentAuthority(IdentityRegistry(), enrolled.policy)
    with start_swtpm(tmp_path / "attacker-tpm") as other:
        with TpmAttestor(other.tcti, tmp_path / "attacker-state") as attacker:
            victim = enrolled.attestor.enrolment_request("pi-02", PROFILE)
            mixed = EnrolmentRequest("pi-02", PROFILE, victim.ek_public, attacker.ensure_ak())
            challenge = authority.begin(mixed)
            with pytest.raises(errors.TpmError):
                attacker.activate("pi-02", challenge)
    with pytest.raises(errors.ActivationFailed):
        authority.complete(ActivationResponse("pi-02", os.urandom(32)))
    assert not authority.registry.get("pi-02").active
    with pytest.raises(errors.NoPendingEnrolment):
        authority.complete(ActivationResponse("pi-02", os.urandom(32)))


def test_one_tpm_cannot_enrol_under_two_agent_ids(enrolled):
    with pytest.raises(errors.EndorsementKeyReused):
        enrolled.authority.begin(enrolled.attestor.enrolment_request("pi-clone", PROFILE))


def test_provisioned_list_limits_who_may_enrol(enrolled):
    authority = EnrolmentAuthority(IdentityRegistry(), enrolled.policy, provisioned={AGENT: "jetson-orin-nano"})
    with pytest.raises(errors.UnknownDevice):
        authority.begin(enrolled.attestor.enrolment_request("pi-07", PROFILE))
    with pytest.raises(errors.ProfileMismatch):
        authority.begin(enrolled.attestor.enrolment_request(AGENT, PROFILE))


# --- software-rooted identities -----------------------------------------------------------

def test_software_rooted_device_admitted_only_where_policy_allows(enrolled):
    seed, public = new_device_key()
    enrolled.registry.add_software_device("esp-01", "esp32", public)
    strict = enrolled.verifier
    with pytest.raises(errors.SoftwareRootNotAllowed):
        strict.verify("esp-01", 1, KEYS, sign_software_quote(seed, strict.issue_nonce(1), 1, KEYS).to_bytes())

    lenient = Verifier(enrolled.registry, make_policy(allow_software_rooted=True,
                                                      software_rooted_profiles=frozenset({"esp32"})))
    evidence = sign_software_quote(seed, lenient.issue_nonce(1), 1, KEYS).to_bytes()
    with pytest.raises(errors.BadSignature):
        lenient.verify("esp-01", 1, bytes(64), evidence)          # keys differ from the signed ones
    seat = lenient.verify("esp-01", 1, KEYS, evidence)
    assert seat.software_rooted and seat.profile == "esp32"
    assert lenient.metrics.accepted_software == 1 and lenient.metrics.accepted_tpm == 0
    with pytest.raises(errors.ReplayedNonce):
        lenient.verify("esp-01", 1, KEYS, evidence)
    # A TPM-rooted agent cannot fall back to a device-key signature.
    with pytest.raises(errors.EvidenceKindMismatch):
        lenient.verify(AGENT, 1, KEYS, sign_software_quote(seed, lenient.issue_nonce(1), 1, KEYS).to_bytes())


def test_ak_is_recreated_identically_and_a_foreign_key_at_its_handle_is_refused(swtpm, tmp_path):
    from tpm2_pytss import ESYS_TR, TPM2B_SENSITIVE_CREATE

    from ztfl.attestation.tpm_agent import DEFAULT_AK_HANDLE, ak_template

    with TpmAttestor(swtpm.tcti, tmp_path / "agent") as attestor:
        ak = attestor.ensure_ak()
        attestor.evict_ak()
    # The AK is a primary of the endorsement hierarchy: the same TPM derives the same key again.
    with TpmAttestor(swtpm.tcti, tmp_path / "agent") as attestor:
        assert attestor.ensure_ak() == ak
        attestor.evict_ak()
        # Someone persists another key (same template, owner hierarchy) at the AK's handle.
        esapi = attestor.esapi
        other, _, _, _, _ = esapi.create_primary(TPM2B_SENSITIVE_CREATE(), ak_template(), ESYS_TR.OWNER)
        esapi.evict_control(ESYS_TR.OWNER, other, DEFAULT_AK_HANDLE)
        esapi.flush_context(other)
    (tmp_path / "agent" / "ak.pub").write_bytes(ak)          # the state still records our AK
    with TpmAttestor(swtpm.tcti, tmp_path / "agent") as attestor:
        with pytest.raises(errors.TpmStateMismatch):
            attestor.ensure_ak()
