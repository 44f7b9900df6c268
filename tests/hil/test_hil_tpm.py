"""Hardware in the loop: enrolment, a round-bound quote and its verification on a real TPM 2.0
(`--tpm-device /dev/tpmrm0`), the flow the swtpm tests run (tests/test_attestation_tpm.py)."""
from __future__ import annotations

import hashlib

import pytest

from ztfl.attestation.enrolment import EnrolmentAuthority
from ztfl.attestation.errors import ReplayedNonce
from ztfl.attestation.measure import expected_pcr
from ztfl.attestation.messages import ActivationResponse, EnrolmentChallenge, EnrolmentRequest
from ztfl.attestation.policy import AttestationPolicy
from ztfl.attestation.registry import IdentityRegistry
from ztfl.attestation.tpm_agent import TpmAttestor
from ztfl.attestation.verifier import Verifier

pytestmark = pytest.mark.hil
PROFILE = "raspberry-pi-4"
MEASUREMENT = hashlib.sha256(b"hil agent measurement").digest()
KEYS = bytes(range(64))


def test_real_tpm_enrols_quotes_and_is_verified(tpm_device, tmp_path):
    attestor = TpmAttestor(f"device:{tpm_device}", tmp_path / "agent-state")
    try:
        attestor.extend_measurement(MEASUREMENT)
        policy = AttestationPolicy(allowlist={PROFILE: {23: frozenset({expected_pcr(MEASUREMENT)})}})
        registry = IdentityRegistry(path=tmp_path / "identities.json")
        authority = EnrolmentAuthority(registry, policy)
        request = EnrolmentRequest.from_bytes(attestor.enrolment_request("hil-01", PROFILE).to_bytes())
        challenge = EnrolmentChallenge.from_bytes(authority.begin(request).to_bytes())
        authority.complete(ActivationResponse.from_bytes(attestor.activate("hil-01", challenge).to_bytes()))
        verifier = Verifier(registry, policy)
        nonce = verifier.issue_nonce(1)
        evidence = attestor.quote(nonce, 1, KEYS, "sha256:23").to_bytes()
        seat = verifier.verify("hil-01", 1, KEYS, evidence)
        assert seat.pcr_values == {23: expected_pcr(MEASUREMENT)} and not seat.software_rooted
        with pytest.raises(ReplayedNonce):
            verifier.verify("hil-01", 1, KEYS, evidence)
    finally:
        attestor.evict_ak()       # leave no persistent object on the board's TPM
        attestor.close()
