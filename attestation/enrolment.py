"""Gateway side of enrolment: credential activation without a TPM on the gateway.

The agent sends its EK and AK public areas. The authority checks that the AK is a
restricted, TPM-resident signing key and the EK a TPM-resident restricted decryption key,
then runs MakeCredential: a random secret encrypted to the EK and bound to the AK's name.
Only the TPM that holds that EK *and* an object with that name can run ActivateCredential
and return the secret, which proves the AK lives in the same TPM as the EK.
"""
from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ztfl.attestation.audit import ENROLLED, REENROLLED, Approval, OperatorDecisions
from ztfl.attestation.ek_pin import ek_fingerprint
from ztfl.attestation.errors import (ActivationFailed, AttestationKeyChanged, DeviceRevoked, EkCertificateRejected,
                                EkNotPinned, EndorsementKeyChanged, EndorsementKeyReused, KeyAttributesRejected,
                                NoPendingEnrolment, ProfileMismatch, PublicKeyFormatError, UnknownDevice)
from ztfl.attestation.keys import public_area_to_key
from ztfl.attestation.messages import ActivationResponse, EnrolmentChallenge, EnrolmentRequest
from ztfl.attestation.policy import AttestationPolicy
from ztfl.attestation.registry import TPM_ROOTED, EnrolledIdentity, IdentityRegistry
from ztfl.attestation.tpm_wire import (ADMIN_WITH_POLICY, ALG_ECC, ALG_ECDSA, DECRYPT, ECC_NIST_P256,
                                  FIXED_PARENT, FIXED_TPM, RESTRICTED, SENSITIVE_DATA_ORIGIN,
                                  SIGN_ENCRYPT, PublicArea, parse_public,
                                  qualified_name_under_endorsement)

log = logging.getLogger("ztfl.attestation")

AK_REQUIRED = RESTRICTED | SIGN_ENCRYPT | FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN
EK_REQUIRED = RESTRICTED | DECRYPT | FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | ADMIN_WITH_POLICY
SECRET_BYTES = 32
MAX_CHAIN = 4


@dataclass
class _Pending:
    identity: EnrolledIdentity
    secret: bytes
    expires_at: float
    ek_sha256: str
    approval: Approval | None       # the operator's approval this enrolment uses, if any


def check_ak(ak: PublicArea, policy: AttestationPolicy) -> None:
    if not ak.has(AK_REQUIRED) or ak.attributes & DECRYPT:
        raise KeyAttributesRejected(f"AK attributes 0x{ak.attributes:08x}: need restricted, sign, fixedTPM, "
                                    "fixedParent, sensitiveDataOrigin and no decrypt")
    if ak.key_type != ALG_ECC or ak.curve != ECC_NIST_P256 or ak.scheme != ALG_ECDSA:
        raise KeyAttributesRejected("AK must be an ECDSA key on NIST P-256")
    if ak.scheme_hash != policy.hash_alg_id or ak.name_alg != policy.hash_alg_id:
        raise KeyAttributesRejected(f"AK scheme hash and nameAlg must be {policy.hash_alg}")


def check_ek(ek: PublicArea) -> None:
    if not ek.has(EK_REQUIRED) or ek.attributes & SIGN_ENCRYPT:
        raise KeyAttributesRejected(f"EK attributes 0x{ek.attributes:08x}: need restricted, decrypt, fixedTPM, "
                                    "fixedParent, sensitiveDataOrigin, adminWithPolicy and no sign")


def check_ek_certificate(cert_der: bytes, ek: PublicArea, trusted_cas: Sequence[x509.Certificate],
                         intermediates: Sequence[x509.Certificate] = ()) -> None:
    """The EK certificate must chain (through `intermediates`, at most MAX_CHAIN links) to one of
    the trusted manufacturer CAs, and certify this very EK."""
    if not cert_der:
        raise EkCertificateRejected("the policy requires an EK certificate and the TPM has none")
    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except ValueError as exc:
        raise EkCertificateRejected(f"EK certificate is not DER X.509: {exc}") from None
    pool = list(trusted_cas) + list(intermediates)
    current = cert
    for _ in range(MAX_CHAIN):
        issuer = next((ca for ca in pool if ca.subject == current.issuer), None)
        if issuer is None:
            raise EkCertificateRejected(f"no trusted issuer {current.issuer.rfc4514_string()} for the EK certificate")
        try:
            current.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise EkCertificateRejected(f"EK certificate chain: {current.subject.rfc4514_string()} "
                                        f"not signed by its issuer: {str(exc) or 'bad signature'}") from None
        if any(issuer == ca for ca in trusted_cas):
            break
        current = issuer
    else:
        raise EkCertificateRejected(f"EK certificate chain longer than {MAX_CHAIN}")
    ek_key = public_area_to_key(ek)
    cert_key = cert.public_key()
    if isinstance(ek_key, rsa.RSAPublicKey) and isinstance(cert_key, rsa.RSAPublicKey):
        same = ek_key.public_numbers() == cert_key.public_numbers()
    elif isinstance(ek_key, ec.EllipticCurvePublicKey) and isinstance(cert_key, ec.EllipticCurvePublicKey):
        same = ek_key.public_numbers() == cert_key.public_numbers()
    else:
        same = False
    if not same:
        raise EkCertificateRejected("EK certificate certifies another key than the EK sent")


class EnrolmentAuthority:
    """begin(request) -> challenge; complete(response) -> the active identity.

    provisioned: agent id -> profile from `ztfl provision`; when given, only those agents may
    enrol and only with their provisioned profile. trusted_ek_cas: manufacturer CA certificates;
    when given, every EK must come with a certificate that chains to one of them (through
    ek_intermediates) and certifies that EK.

    ek_pins: agent id -> the EK pin recorded at provisioning (attestation.ek_pin); a device with
    a pin enrols only with that EK. A device without one is trusted on first use (its first EK is
    recorded, and refused for any other agent id) only if `trust_on_first_use`: on by default for
    direct use of this class, while the gateway passes `attestation.trust_on_first_use`, off
    unless the operator turns it on.

    decisions: the operator's audit log (attestation.audit). An id that holds an active identity
    enrolling with another EK or AK is refused unless the operator approved it; a revoked id
    cannot enrol. Every accepted enrolment is logged there. Without it, no re-enrolment is ever
    approved."""

    def __init__(self, registry: IdentityRegistry, policy: AttestationPolicy,
                 provisioned: Mapping[str, str] | None = None,
                 trusted_ek_cas: Sequence[x509.Certificate] = (),
                 ek_intermediates: Sequence[x509.Certificate] = (),
                 challenge_ttl_s: float = 300.0, clock: Callable[[], float] = time.monotonic, *,
                 ek_pins: Mapping[str, str] | None = None, trust_on_first_use: bool = True,
                 decisions: OperatorDecisions | None = None):
        self.registry = registry
        self.policy = policy
        self.provisioned = dict(provisioned) if provisioned is not None else None
        self.trusted_ek_cas = list(trusted_ek_cas)
        self.ek_intermediates = list(ek_intermediates)
        self.challenge_ttl_s = challenge_ttl_s
        self.clock = clock
        self.ek_pins = dict(ek_pins or {})
        self.trust_on_first_use = trust_on_first_use
        self.decisions = decisions
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    def begin(self, request: EnrolmentRequest) -> EnrolmentChallenge:
        from tpm2_pytss import TPM2B_NAME, TPM2B_PUBLIC
        from tpm2_pytss.utils import make_credential

        agent_id = request.agent_id
        if self.provisioned is not None:
            if agent_id not in self.provisioned:
                raise UnknownDevice(f"{agent_id} was not provisioned")
            if self.provisioned[agent_id] != request.profile:
                raise ProfileMismatch(f"{agent_id} was provisioned as {self.provisioned[agent_id]}, "
                                      f"claims {request.profile}")
        approval = self.decisions.approval(agent_id) if self.decisions is not None else None
        if approval is None and self.decisions is not None and self.decisions.revoked(agent_id):
            raise DeviceRevoked(f"{agent_id} was revoked by the operator")
        ak = parse_public(request.ak_public)
        ek = parse_public(request.ek_public)
        check_ak(ak, self.policy)
        check_ek(ek)
        existing = self.registry.get(agent_id)
        if approval is None:
            self._refuse_new_keys(existing, request)
        if self.trusted_ek_cas:
            check_ek_certificate(request.ek_certificate, ek, self.trusted_ek_cas, self.ek_intermediates)
        fingerprint = ek_fingerprint(request.ek_public)
        self._check_pin(agent_id, fingerprint, existing, approval)
        owner = self.registry.find_by_ek(request.ek_public)
        if owner is not None and owner.agent_id != agent_id:
            raise EndorsementKeyReused(f"this EK is already enrolled as {owner.agent_id}")
        try:
            ek_obj, _ = TPM2B_PUBLIC.unmarshal(request.ek_public)
            secret = secrets.token_bytes(SECRET_BYTES)
            blob, encrypted = make_credential(ek_obj, secret, TPM2B_NAME(ak.name))
        except (ValueError, TypeError) as exc:
            raise PublicKeyFormatError(f"EK unusable for MakeCredential: {exc}") from None
        identity = EnrolledIdentity(
            agent_id=agent_id, profile=request.profile, root=TPM_ROOTED, active=False,
            ek_public=request.ek_public, ek_certificate=request.ek_certificate,
            ak_public=request.ak_public, ak_name=ak.name,
            ak_qualified_name=qualified_name_under_endorsement(ak.name, ak.name_alg))
        with self._lock:
            self._pending[agent_id] = _Pending(identity, secret, self.clock() + self.challenge_ttl_s,
                                               fingerprint, approval)
        if existing is None or not existing.active:
            # Recorded as not yet activated so that its quotes get the precise refusal.
            self.registry.put(identity)
        log.info("enrolment of %s (%s) started%s", agent_id, request.profile,
                 " under the operator's approval" if approval else "")
        return EnrolmentChallenge(bytes(blob.marshal()), bytes(encrypted.marshal()))

    @staticmethod
    def _refuse_new_keys(existing: EnrolledIdentity | None, request: EnrolmentRequest) -> None:
        """An active identity keeps its EK and AK: whoever holds the device's TLS key and brings
        another TPM (or a new AK) must not take over the seat and lock the real device out."""
        if existing is None or not existing.active or existing.root != TPM_ROOTED:
            return
        if existing.ek_public != request.ek_public:
            raise EndorsementKeyChanged(f"{request.agent_id} is enrolled with another TPM (EK); the operator "
                                        "must approve a new one (ztfl attest approve)")
        if existing.ak_public != request.ak_public:
            raise AttestationKeyChanged(f"{request.agent_id} is enrolled with another AK; the operator must "
                                        "approve its re-enrolment (ztfl attest approve)")

    def _check_pin(self, agent_id: str, fingerprint: str, existing: EnrolledIdentity | None,
                   approval: Approval | None) -> None:
        if approval is not None and approval.ek_sha256:
            if fingerprint != approval.ek_sha256:
                raise EkNotPinned(f"EK {fingerprint[:16]}... of {agent_id} is not the one the operator approved")
            return
        if approval is not None or (existing is not None and existing.active and existing.ek_public
                                    and ek_fingerprint(existing.ek_public) == fingerprint):
            return      # the operator admitted any EK, or the TPM enrolled before with this very EK
        pin = self.ek_pins.get(agent_id)
        if pin is not None:
            if fingerprint != pin:
                raise EkNotPinned(f"EK {fingerprint[:16]}... of {agent_id} is not the EK pinned at provisioning "
                                  f"({pin[:16]}...)")
        elif not self.trust_on_first_use:
            raise EkNotPinned(f"no EK is pinned for {agent_id} and the policy does not trust the first one seen: "
                              "pin it (ztfl provision --ek) or approve it (ztfl attest approve --ek)")

    def complete(self, response: ActivationResponse) -> EnrolledIdentity:
        with self._lock:
            pending = self._pending.pop(response.agent_id, None)
        if pending is None or self.clock() > pending.expires_at:
            raise NoPendingEnrolment(f"no open enrolment challenge for {response.agent_id}")
        if not hmac.compare_digest(pending.secret, response.secret):
            log.warning("enrolment of %s refused: wrong activation secret", response.agent_id)
            raise ActivationFailed(f"{response.agent_id} did not recover the credential secret")
        if self.decisions is not None:
            # Decided meanwhile: the approval used by another enrolment, or the device revoked.
            if pending.approval is not None and self.decisions.approval(response.agent_id) != pending.approval:
                raise NoPendingEnrolment(f"the approval {response.agent_id}'s enrolment began under is used up")
            if pending.approval is None and self.decisions.revoked(response.agent_id):
                raise DeviceRevoked(f"{response.agent_id} was revoked by the operator")
        previous = self.registry.get(response.agent_id)
        identity = replace(pending.identity, active=True)
        self.registry.put(identity)
        if self.decisions is not None and (pending.approval is not None or previous is None or not previous.active):
            self.decisions.record(REENROLLED if pending.approval is not None else ENROLLED, response.agent_id,
                                  ek_sha256=pending.ek_sha256, ak_name=identity.ak_name.hex())
        log.info("enrolment of %s complete: AK %s", response.agent_id, identity.ak_name.hex()[:16])
        return identity
