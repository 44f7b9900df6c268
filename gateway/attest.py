"""The gateway's side of "no quote, no seat", over MQTT.

Enrolment (once per agent): the agent publishes an EnrolmentRequest (EK and AK public areas) on
`agents/<id>/enrol`; the gateway answers with a credential challenge on
`broadcast/to/<id>/attest`; the agent's ActivationResponse (on `agents/<id>/enrol`) proves the AK
lives in the TPM that holds the EK. Per round: the round announcement carries a fresh nonce; a
seated agent returns a TPM quote whose qualifying data binds that nonce, the attestation round id
and its protocol identity key; the gateway verifies it before the agent gets a seat.

The expected PCR value is the measurement of the agent code this gateway ships
(attestation.measure), so an agent running other code is refused.

Boards without a TPM (profile `attestation: device-key`, the ESP32) do not enrol over MQTT:
their Ed25519 device keys come from provisioning (`software_devices:`, the `devices.yaml` that
`ztfl provision` writes). Per round they sign the same binding with that key instead of
quoting, and get a seat only when `allow_software_rooted` is set; such seats are marked
software-rooted, since the key proves who the board is, not what code it runs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from ztfl.attestation import errors
from ztfl.attestation.enrolment import EnrolmentAuthority
from ztfl.attestation.errors import AttestationError
from ztfl.attestation.measure import expected_pcr, measure_agent
from ztfl.attestation.messages import TAG_ACTIVATION, TAG_ENROL, ActivationResponse, EnrolmentRequest
from ztfl.attestation.policy import AttestationPolicy
from ztfl.attestation.provision import ProvisionError, load_devices, register_provisioned
from ztfl.attestation.registry import SOFTWARE_ROOTED, TPM_ROOTED, IdentityRegistry
from ztfl.attestation.verifier import Verifier
from ztfl.fednet.topics import Impersonation
from ztfl.hw_profiles import available_profiles, load_profile
from ztfl.protocol.rounds import attempt_id

log = logging.getLogger("ztfl.gateway.attest")

REPO_ROOT = Path(__file__).resolve().parents[1]
PCR = 23


class AttestationConfigError(ValueError):
    """The gateway's attestation inputs (provisioned device keys) cannot be used; the message says why."""


@dataclass(frozen=True)
class Verdict:
    """One agent's evidence for one round: seated or not, why not (message and stable reason
    code), and the root of trust of its identity (`tpm`, `software`, or `unknown`)."""

    ok: bool
    message: str
    reason: str
    root: str


class GatewayAttestation:
    def __init__(self, state_dir: Path, software_devices: str | Path | None = None,
                 allow_software_rooted: bool = False):
        golden = expected_pcr(measure_agent(REPO_ROOT))
        profiles = {p: load_profile(p).attestation for p in available_profiles()}
        self.policy = AttestationPolicy(hash_alg="sha256", pcrs=(PCR,),
                                        allowlist={p: {PCR: frozenset({golden})}
                                                   for p, kind in profiles.items() if kind == "tpm-required"},
                                        allow_software_rooted=allow_software_rooted,
                                        software_rooted_profiles=frozenset(
                                            p for p, kind in profiles.items() if kind == "device-key"))
        self.registry = IdentityRegistry.load(Path(state_dir) / "identities.json")
        if software_devices:
            self._load_software_devices(Path(software_devices))
        self.authority = EnrolmentAuthority(self.registry, self.policy)
        self.verifier = Verifier(self.registry, self.policy)

    def _load_software_devices(self, path: Path) -> None:
        """The provisioning output is the whole truth about device keys: a board dropped from it
        (or given a new key) loses its old record here."""
        try:
            devices = load_devices(path)
            provisioned = {d["agent_id"] for d in devices if d["root"] == "software"}
            for ident in self.registry.all():
                if ident.software_rooted and ident.agent_id not in provisioned:
                    self.registry.remove(ident.agent_id)
            register_provisioned(self.registry, devices)
        except (OSError, ProvisionError, yaml.YAMLError) as exc:
            raise AttestationConfigError(f"software_devices: {exc}") from None
        log.info("%d provisioned device keys loaded from %s", len(provisioned), path)

    def enrolled(self, agent_id: str) -> bool:
        ident = self.registry.get(agent_id)
        return ident is not None and ident.active

    def root_of(self, agent_id: str) -> str | None:
        """`tpm` or `software` for an identity this gateway knows, else None."""
        ident = self.registry.get(agent_id)
        return ident.root if ident is not None else None

    def refusal_before_round(self, agent_id: str, attestation: str) -> AttestationError | None:
        """Why a board that cannot enrol over MQTT will never get a seat, if it will not: no
        provisioned device key, or a policy that admits no software root. A TPM agent that is not
        enrolled yet is not refused: it may still enrol."""
        ident = self.registry.get(agent_id)
        if attestation == "tpm-required" or (ident is not None and not ident.software_rooted):
            return None
        if ident is None:
            return errors.UnknownAgent(f"{agent_id} ({attestation}) has no provisioned device key")
        if not self.policy.software_rooted_allowed(ident.profile):
            return errors.SoftwareRootNotAllowed(f"{agent_id} ({ident.profile}) has no TPM and the policy "
                                                 "does not admit software-rooted identities")
        return None

    def on_enrol(self, agent_id: str, payload: bytes) -> bytes | None:
        """An enrolment message; returns the challenge to send back, if any. Raises AttestationError, or
        Impersonation for a message naming another agent than the topic's."""
        if self.root_of(agent_id) == SOFTWARE_ROOTED:
            # Its identity is the provisioned device key: a TPM enrolling under its name must not replace it.
            raise errors.EnrolmentError(f"{agent_id} is a provisioned device-key board; it does not enrol")
        if payload[:4] == TAG_ENROL:
            request = EnrolmentRequest.from_bytes(payload)
            if request.agent_id != agent_id:
                raise Impersonation(f"enrolment for {request.agent_id} on {agent_id}'s topic")
            return self.authority.begin(request).to_bytes()
        if payload[:4] == TAG_ACTIVATION:
            response = ActivationResponse.from_bytes(payload)
            if response.agent_id != agent_id:
                raise Impersonation(f"activation for {response.agent_id} on {agent_id}'s topic")
            self.authority.complete(response)
            log.info("agent %s enrolled (AK activated)", agent_id)
            return None
        raise errors.MalformedEvidence("neither an enrolment request nor an activation response")

    def issue_nonce(self, round_id: int, attempt: int) -> bytes:
        return self.verifier.issue_nonce(attempt_id(round_id, attempt))

    def retire(self, round_id: int, attempt: int) -> None:
        self.verifier.retire_round(attempt_id(round_id, attempt))

    def verify(self, agent_id: str, round_id: int, attempt: int, identity_pk: bytes,
               evidence: bytes) -> Verdict:
        try:
            seat = self.verifier.verify(agent_id, attempt_id(round_id, attempt), identity_pk, evidence)
        except AttestationError as exc:
            return Verdict(False, f"{exc.reason}: {exc}", exc.reason, self.root_of(agent_id) or "unknown")
        return Verdict(True, "", "", SOFTWARE_ROOTED if seat.software_rooted else TPM_ROOTED)
