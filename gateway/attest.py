"""The gateway's side of "no quote, no seat", over MQTT.

Enrolment (once per agent): the agent publishes an EnrolmentRequest (EK and AK public areas) on
`agents/<id>/enrol`; the gateway answers with a credential challenge on
`broadcast/to/<id>/attest`; the agent's ActivationResponse (on `agents/<id>/enrol`) proves the AK
lives in the TPM that holds the EK. Per round: the round announcement carries a fresh nonce; a
seated agent returns a TPM quote whose qualifying data binds that nonce, the attestation round id
and its protocol identity key; the gateway verifies it before the agent gets a seat.

The expected PCR value is the measurement of the agent code this gateway ships
(attestation.measure), so an agent running other code is refused. A policy file with a signed
runtime policy (and optionally `measured_boot:`) has the gateway judge each quote's IMA entries
and boot event log (PCRs 10 and 0-7) instead of PCR 23, which root on the agent can reset; each
verdict on a TPM agent then carries a receipt telling it how much of its IMA list is held.

Boards without a TPM (profile `attestation: device-key`, the ESP32) do not enrol over MQTT:
their Ed25519 device keys come from provisioning (`software_devices:`, the `devices.yaml` that
`ztfl provision` writes). Per round they sign the same binding with that key instead of
quoting, and get a seat only when `allow_software_rooted` is set; such seats are marked
software-rooted, since the key proves who the board is, not what code it runs.

The device registry (`attestation:` in gateway.yaml): the provisioned device list with each TPM
device's pinned EK and each board's bundle digest, the EK CAs, the policy file, and the
operator's approvals and revocations (attestation.audit, read again whenever they change).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from cryptography import x509

from ztfl.attestation import errors
from ztfl.attestation.audit import AuditLog, OperatorDecisions
from ztfl.attestation.bundle import TAG_BUNDLE, BundleEvidence, bound_keys
from ztfl.attestation.device_list import DeviceList
from ztfl.attestation.ek_pin import ek_fingerprint
from ztfl.attestation.enrolment import EnrolmentAuthority
from ztfl.attestation.errors import AttestationError, PolicyError
from ztfl.attestation.measure import expected_pcr, measure_agent
from ztfl.attestation.messages import (TAG_ACTIVATION, TAG_ENROL, ActivationResponse, AttestationReceipt,
                                       EnrolmentRequest)
from ztfl.attestation.policy import AttestationPolicy
from ztfl.attestation.provision import ProvisionError
from ztfl.attestation.registry import SOFTWARE_ROOTED, TPM_ROOTED, EnrolledIdentity, IdentityRegistry
from ztfl.attestation.verifier import Verifier
from ztfl.fednet.topics import Impersonation
from ztfl.gateway.config import AttestationSettings
from ztfl.hw_profiles import available_profiles, load_profile
from ztfl.protocol.rounds import attempt_id

log = logging.getLogger("ztfl.gateway.attest")

REPO_ROOT = Path(__file__).resolve().parents[1]
PCR = 23


class AttestationConfigError(ValueError):
    """The gateway's attestation inputs (device list, EK CAs, policy) cannot be used; the message says why."""


@dataclass(frozen=True)
class Verdict:
    """One agent's evidence for one round: seated or not, why not (message and stable reason
    code), and the root of trust of its identity (`tpm`, `software`, or `unknown`)."""

    ok: bool
    message: str
    reason: str
    root: str
    receipt: bytes = b""      # for the agent's attest topic: AttestationReceipt (TPM agents judged by IMA)


class GatewayAttestation:
    def __init__(self, state_dir: Path, software_devices: str | Path | None = None,
                 allow_software_rooted: bool = False, settings: AttestationSettings | None = None):
        """`software_devices`: a device list read for its device-key boards only (the older key);
        `settings.devices`: the device list every id must be on."""
        settings = settings or AttestationSettings()
        self.policy = (_policy_file(Path(settings.policy), allow_software_rooted) if settings.policy
                       else _builtin_policy(allow_software_rooted))
        self.registry = IdentityRegistry.load(Path(state_dir) / "identities.json")
        self.decisions = OperatorDecisions(AuditLog(state_dir))
        self.devices: DeviceList | None = None
        self.bundle_digests: dict[str, bytes] = {}
        if settings.devices:
            self._load_devices(Path(settings.devices), "attestation.devices", authoritative=True)
        elif software_devices:
            self._load_devices(Path(software_devices), "software_devices", authoritative=False)
        self.authority = EnrolmentAuthority(
            self.registry, self.policy, provisioned=self.devices.profiles() if self.devices else None,
            trusted_ek_cas=_certificates(settings.ek_cas), ek_pins=self.devices.ek_pins() if self.devices else None,
            trust_on_first_use=settings.trust_on_first_use, decisions=self.decisions)
        self.verifier = Verifier(self.registry, self.policy)

    def _load_devices(self, path: Path, key: str, authoritative: bool) -> None:
        """The provisioning output is the whole truth about device keys: a board dropped from it
        (or given a new key) loses its old record here. When it is the list every id must be on,
        so it is for TPM identities: one no longer listed, or enrolled with another EK than the one
        now pinned (and not approved by the operator), must enrol again."""
        try:
            devices = DeviceList.load(path)
        except (OSError, ProvisionError, yaml.YAMLError) as exc:
            raise AttestationConfigError(f"{key}: {exc}") from None
        software = {d.agent_id for d in devices if d.root == SOFTWARE_ROOTED}
        for ident in self.registry.all():
            if (ident.agent_id not in software if ident.software_rooted
                    else authoritative and self._stale_tpm_identity(ident, devices)):
                self.registry.remove(ident.agent_id)
        for d in devices:
            if d.root == SOFTWARE_ROOTED:
                self.registry.add_software_device(d.agent_id, d.profile, d.device_public_key)
        self.bundle_digests = {d.agent_id: bytes.fromhex(d.bundle_sha256) for d in devices if d.bundle_sha256}
        if authoritative:
            self.devices = devices
        log.info("%d provisioned devices loaded from %s (%d device keys, %d EK pins)", len(list(devices)), path,
                 len(software), len(devices.ek_pins()))

    def _stale_tpm_identity(self, ident: EnrolledIdentity, devices: DeviceList) -> bool:
        device = devices.get(ident.agent_id)
        if device is None or device.root != TPM_ROOTED:
            return True
        if not device.ek_sha256 or not ident.ek_public:
            return False
        held = ek_fingerprint(ident.ek_public)
        return held != device.ek_sha256 and held != self.decisions.approved_ek(ident.agent_id)

    def enrolled(self, agent_id: str) -> bool:
        ident = self.registry.get(agent_id)
        return ident is not None and ident.active

    def root_of(self, agent_id: str) -> str | None:
        """`tpm` or `software` for an identity this gateway knows, else None."""
        ident = self.registry.get(agent_id)
        return ident.root if ident is not None else None

    def refusal_before_round(self, agent_id: str, attestation: str) -> AttestationError | None:
        """Why an agent will get no seat, if it will not: revoked by the operator, not on the
        device list, or a board that cannot enrol over MQTT without a provisioned device key or
        under a policy that admits no software root. A listed TPM agent that is not enrolled yet is
        not refused: it may still enrol."""
        if self.decisions.revoked(agent_id):
            return errors.DeviceRevoked(f"{agent_id} was revoked by the operator")
        if self.devices is not None and agent_id not in self.devices:
            return errors.UnknownDevice(f"{agent_id} is not on the provisioned device list")
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
            if self.decisions.revoked(agent_id):
                raise errors.DeviceRevoked(f"{agent_id} was revoked by the operator")
            keys, evidence = self._bundle_bound(agent_id, identity_pk, evidence)
            seat = self.verifier.verify(agent_id, attempt_id(round_id, attempt), keys, evidence)
        except AttestationError as exc:
            return Verdict(False, f"{exc.reason}: {exc}", exc.reason, self.root_of(agent_id) or "unknown",
                           self._receipt(agent_id, round_id))
        return Verdict(True, "", "", SOFTWARE_ROOTED if seat.software_rooted else TPM_ROOTED,
                       self._receipt(agent_id, round_id))

    def _receipt(self, agent_id: str, round_id: int) -> bytes:
        """After every verdict on a TPM agent judged by IMA, a refusal too: an agent whose last
        quote was lost learns where its next one must start."""
        if self.policy.runtime is None or self.root_of(agent_id) != TPM_ROOTED:
            return b""
        return AttestationReceipt(round_id, self.verifier.ima_position(agent_id)).to_bytes()

    def record_model(self, model_file: bytes) -> None:
        """A model file as agents store and load it (the int8 ONNX detector) that this gateway
        distributed: the runtime policy admits it where IMA shows an agent loaded it."""
        self.verifier.allow_model(hashlib.sha256(model_file).digest())

    def _bundle_bound(self, agent_id: str, identity_pk: bytes, evidence: bytes) -> tuple[bytes, bytes]:
        """The keys the evidence must be bound to, and the evidence to verify: a board reporting
        its bundle digest signed over `identity key || digest`, and the digest must be the one
        recorded for it, if one is."""
        recorded = self.bundle_digests.get(agent_id)
        if bytes(evidence[:4]) != TAG_BUNDLE:
            if recorded is not None:
                raise errors.BundleDigestMissing(f"{agent_id} reports no digest of its flashed files; "
                                                 f"{recorded.hex()[:16]}... was recorded")
            return identity_pk, evidence
        reported = BundleEvidence.from_bytes(evidence)
        if recorded is not None and not hmac.compare_digest(reported.digest, recorded):
            raise errors.BundleDigestMismatch(f"{agent_id} reports bundle digest {reported.digest.hex()[:16]}..., "
                                              f"{recorded.hex()[:16]}... was recorded")
        return bound_keys(identity_pk, reported.digest), reported.evidence


def _builtin_policy(allow_software_rooted: bool) -> AttestationPolicy:
    """PCR 23 must hold the measurement of the agent code this gateway ships; device-key boards
    only where the gateway allows software roots."""
    golden = expected_pcr(measure_agent(REPO_ROOT))
    profiles = {p: load_profile(p).attestation for p in available_profiles()}
    return AttestationPolicy(hash_alg="sha256", pcrs=(PCR,),
                             allowlist={p: {PCR: frozenset({golden})}
                                        for p, kind in profiles.items() if kind == "tpm-required"},
                             allow_software_rooted=allow_software_rooted,
                             software_rooted_profiles=frozenset(
                                 p for p, kind in profiles.items() if kind == "device-key"))


def _policy_file(path: Path, allow_software_rooted: bool) -> AttestationPolicy:
    """The operator's policy (attestation-policy.yaml); device-key boards are seated only where
    both it and gateway.yaml's `allow_software_rooted` admit them."""
    try:
        policy = AttestationPolicy.from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError, PolicyError) as exc:
        raise AttestationConfigError(f"attestation.policy: {path}: {exc}") from None
    return policy if allow_software_rooted else replace(policy, allow_software_rooted=False)


def _certificates(paths) -> list[x509.Certificate]:
    """Every certificate of the PEM files given as `attestation.ek_cas` (each one a trust anchor)."""
    out = []
    for path in paths:
        try:
            out += x509.load_pem_x509_certificates(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise AttestationConfigError(f"attestation.ek_cas: {path}: {exc}") from None
    return out
