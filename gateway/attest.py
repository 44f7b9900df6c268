"""The gateway's side of "no quote, no seat", over MQTT.

Enrolment (once per agent): the agent publishes an EnrolmentRequest (EK and AK public areas) on
`agents/<id>/enrol`; the gateway answers with a credential challenge on
`broadcast/to/<id>/attest`; the agent's ActivationResponse (on `agents/<id>/enrol`) proves the AK
lives in the TPM that holds the EK. Per round: the round announcement carries a fresh nonce; a
seated agent returns a TPM quote whose qualifying data binds that nonce, the attestation round id
and its protocol identity key; the gateway verifies it before the agent gets a seat.

The expected PCR value is the measurement of the agent code this gateway ships
(attestation.measure), so an agent running other code is refused.
"""
from __future__ import annotations

import logging
from pathlib import Path

from attestation.enrolment import EnrolmentAuthority
from attestation.errors import AttestationError
from attestation.measure import expected_pcr, measure_agent
from attestation.messages import TAG_ACTIVATION, TAG_ENROL, ActivationResponse, EnrolmentRequest
from attestation.policy import AttestationPolicy
from attestation.registry import IdentityRegistry
from attestation.verifier import Verifier
from hw_profiles import available_profiles, load_profile

log = logging.getLogger("ztfl.gateway.attest")

REPO_ROOT = Path(__file__).resolve().parents[1]
PCR = 23


def attestation_round(round_id: int, attempt: int) -> int:
    """Each attempt of a round gets its own nonce space."""
    return round_id * 16 + attempt


class GatewayAttestation:
    def __init__(self, state_dir: Path):
        golden = expected_pcr(measure_agent(REPO_ROOT))
        tpm_profiles = [p for p in available_profiles() if load_profile(p).attestation == "tpm-required"]
        self.policy = AttestationPolicy(hash_alg="sha256", pcrs=(PCR,),
                                        allowlist={p: {PCR: frozenset({golden})} for p in tpm_profiles})
        self.registry = IdentityRegistry.load(Path(state_dir) / "identities.json")
        self.authority = EnrolmentAuthority(self.registry, self.policy)
        self.verifier = Verifier(self.registry, self.policy)

    def enrolled(self, agent_id: str) -> bool:
        ident = self.registry.get(agent_id)
        return ident is not None and ident.active

    def on_enrol(self, agent_id: str, payload: bytes) -> bytes | None:
        """An enrolment message; returns the challenge to send back, if any. Raises AttestationError."""
        if payload[:4] == TAG_ENROL:
            request = EnrolmentRequest.from_bytes(payload)
            if request.agent_id != agent_id:
                raise ValueError(f"enrolment for {request.agent_id} on {agent_id}'s topic")
            return self.authority.begin(request).to_bytes()
        if payload[:4] == TAG_ACTIVATION:
            response = ActivationResponse.from_bytes(payload)
            if response.agent_id != agent_id:
                raise ValueError(f"activation for {response.agent_id} on {agent_id}'s topic")
            self.authority.complete(response)
            log.info("agent %s enrolled (AK activated)", agent_id)
            return None
        raise ValueError("neither an enrolment request nor an activation response")

    def issue_nonce(self, round_id: int, attempt: int) -> bytes:
        return self.verifier.issue_nonce(attestation_round(round_id, attempt))

    def retire(self, round_id: int, attempt: int) -> None:
        self.verifier.retire_round(attestation_round(round_id, attempt))

    def verify(self, agent_id: str, round_id: int, attempt: int, identity_pk: bytes,
               evidence: bytes) -> tuple[bool, str]:
        try:
            self.verifier.verify(agent_id, attestation_round(round_id, attempt), identity_pk, evidence)
        except AttestationError as exc:
            return False, f"{exc.reason}: {exc}"
        return True, ""
