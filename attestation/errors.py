"""One exception class per reason an identity, an enrolment or a quote is refused.

Every class carries a short `reason` code (stable, snake_case, unique across every refusal:
protocol.refusal) that the gateway uses as a metrics label and stores with the rejection; the
message says what exactly was wrong.
"""
from __future__ import annotations

from ztfl.protocol.refusal import Refusal


class AttestationError(Refusal):
    """Base class: the peer's evidence was refused (fail closed)."""

    reason = "attestation"


# --- decoding of peer bytes --------------------------------------------------------------

class MalformedEvidence(AttestationError):
    """A ztfl attestation message (length-prefixed framing) could not be decoded."""

    reason = "malformed_evidence"


class AttestFormatError(AttestationError):
    """TPMS_ATTEST is not a well-formed quote (magic, type, sizes, trailing bytes)."""

    reason = "attest_format"


class SignatureFormatError(AttestationError):
    """TPMT_SIGNATURE is malformed or uses an unsupported scheme."""

    reason = "signature_format"


class PublicKeyFormatError(AttestationError):
    """TPM2B_PUBLIC is malformed or describes an unsupported key."""

    reason = "public_key_format"


# --- identity ---------------------------------------------------------------------------

class UnknownAgent(AttestationError):
    """No enrolled identity exists for this agent id."""

    reason = "not_enrolled"


class AkNotActivated(AttestationError):
    """The agent started enrolment but never proved its AK lives in its TPM (no ActivateCredential)."""

    reason = "ak_not_activated"


class UnenrolledKey(AttestationError):
    """The quote names a signing key other than the AK enrolled for this agent."""

    reason = "unenrolled_key"


class EvidenceKindMismatch(AttestationError):
    """TPM evidence from a software-rooted identity or the reverse (a downgrade attempt)."""

    reason = "evidence_kind"


class SoftwareRootNotAllowed(AttestationError):
    """The policy does not admit identities without a TPM for this profile."""

    reason = "software_root_not_allowed"


# --- the quote itself ---------------------------------------------------------------------

class BadSignature(AttestationError):
    """The signature does not verify with the enrolled key."""

    reason = "bad_signature"


class HashAlgorithmMismatch(AttestationError):
    """PCR bank or signature hash differs from the policy's hash algorithm."""

    reason = "hash_algorithm"


class QualifyingDataMismatch(AttestationError):
    """The quote's extraData is not H(nonce || round || protocol public keys)."""

    reason = "qualifying_data"


class UnknownNonce(AttestationError):
    """The nonce was never issued by this verifier (or not to this agent)."""

    reason = "unknown_nonce"


class StaleNonce(AttestationError):
    """The nonce expired or was issued for another round."""

    reason = "stale_nonce"


class ReplayedNonce(AttestationError):
    """The nonce was already used by this agent: a replayed quote."""

    reason = "replayed_nonce"


class PcrSelectionMismatch(AttestationError):
    """The quote covers other PCRs than the policy asks for, or reports the wrong count of values."""

    reason = "pcr_selection"


class PcrDigestMismatch(AttestationError):
    """The reported PCR values do not hash to the digest the TPM signed."""

    reason = "pcr_digest"


class PcrValueNotAllowed(AttestationError):
    """A quoted PCR value is not on the allow-list of the agent's hardware profile."""

    reason = "pcr_not_allowed"


class UnknownProfile(AttestationError):
    """The policy has no allow-list for the agent's hardware profile."""

    reason = "unknown_profile"


class ClockRollback(AttestationError):
    """TPM clock, reset or restart counter went backwards since the last accepted quote."""

    reason = "clock_rollback"


# --- measured boot (TCG event log, PCRs 0-7) ---------------------------------------------------

class EvidenceLogMissing(AttestationError):
    """The policy asks for a boot event log or IMA entries and the evidence carries none."""

    reason = "log_missing"


class EventLogFormatError(AttestationError):
    """The TCG2 boot event log is not well formed (header, sizes, algorithms, trailing bytes)."""

    reason = "event_log_format"


class BootLogReplayMismatch(AttestationError):
    """The boot event log, replayed, does not give the PCR values the TPM quoted."""

    reason = "boot_log_replay"


class BootEventNotAllowed(AttestationError):
    """A boot event (boot loader, kernel, firmware, variable) has a digest the boot policy does not list."""

    reason = "boot_event_not_allowed"


class BootEventDataMismatch(AttestationError):
    """A boot event's digest is not the hash of its own data where the boot policy requires it."""

    reason = "boot_event_data"


class SecureBootStateRejected(AttestationError):
    """The logged Secure Boot state is not the one the boot policy requires."""

    reason = "secure_boot"


# --- runtime measurements (Linux IMA, PCR 10) --------------------------------------------------

class ImaLogFormatError(AttestationError):
    """The IMA measurement list is not well formed (sizes, template, fields, trailing bytes)."""

    reason = "ima_log_format"


class ImaTemplateHashMismatch(AttestationError):
    """An IMA entry's logged template digest is not the hash of its template data (a forged entry)."""

    reason = "ima_template_hash"


class ImaReplayMismatch(AttestationError):
    """The IMA entries, replayed, never reach the quoted PCR 10 (truncated, reordered or forged log)."""

    reason = "ima_replay"


class ImaLogGap(AttestationError):
    """Incremental IMA entries start at an offset the gateway holds no replay state for."""

    reason = "ima_log_gap"


class ImaViolation(AttestationError):
    """IMA recorded a violation (a file measured while open for writing, or changed under a reader)."""

    reason = "ima_violation"


class ImaFileHashAlgorithm(AttestationError):
    """An IMA entry's file digest uses another hash algorithm than the runtime policy."""

    reason = "ima_file_hash_alg"


class BootAggregateMismatch(AttestationError):
    """IMA's boot_aggregate entry does not match the PCRs 0-9 of the replayed boot event log."""

    reason = "ima_boot_aggregate"


class UnknownRuntimeFile(AttestationError):
    """IMA measured a file that the signed runtime policy does not list (unknown code)."""

    reason = "ima_unknown_file"


class RuntimeFileChanged(AttestationError):
    """IMA measured a file the runtime policy lists, with another digest (changed code)."""

    reason = "ima_file_changed"


class ModelNotDistributed(AttestationError):
    """The model file the agent loaded is not a version this gateway distributed."""

    reason = "ima_model_digest"


# --- enrolment ------------------------------------------------------------------------------

class EnrolmentError(AttestationError):
    """Base class for refused enrolments."""

    reason = "enrolment"


class KeyAttributesRejected(EnrolmentError):
    """The AK or EK lacks the attributes that make it a TPM-resident key of the right kind."""

    reason = "key_attributes"


class EndorsementKeyReused(EnrolmentError):
    """This EK is already enrolled under another agent id (a cloned or duplicated agent)."""

    reason = "ek_reused"


class EkCertificateRejected(EnrolmentError):
    """The EK certificate does not chain to a trusted manufacturer CA or does not match the EK."""

    reason = "ek_certificate"


class UnknownDevice(EnrolmentError):
    """The agent id is not in the provisioned device list."""

    reason = "unknown_device"


class ProfileMismatch(EnrolmentError):
    """The agent claims another hardware profile than it was provisioned with."""

    reason = "profile_mismatch"


class NoPendingEnrolment(EnrolmentError):
    """An activation answer arrived for an agent that has no open challenge."""

    reason = "no_pending_enrolment"


class ActivationFailed(EnrolmentError):
    """The agent could not recover the credential secret: the AK and EK are not in one TPM."""

    reason = "activation_failed"


# --- the device registry (provisioned list, EK pins, operator decisions) ------------------------

class EkNotPinned(EnrolmentError):
    """The EK is not the one pinned for this device at provisioning (or named by the operator's
    approval), or no EK is pinned and the policy does not trust the first one seen."""

    reason = "ek_not_pinned"


class ReenrolmentRefused(EnrolmentError):
    """Base class: an id that already holds an active identity enrols again without approval."""

    reason = "reenrolment_refused"


class EndorsementKeyChanged(ReenrolmentRefused):
    """Another TPM (another EK) enrols under an active identity: a stolen TLS key with a new TPM."""

    reason = "ek_changed"


class AttestationKeyChanged(ReenrolmentRefused):
    """The enrolled TPM presents a new AK for an active identity without the operator's approval."""

    reason = "ak_changed"


class DeviceRevoked(AttestationError):
    """The operator revoked this device: no enrolment and no seat."""

    reason = "device_revoked"


class BundleDigestMissing(AttestationError):
    """A device-key board whose bundle digest was recorded at provisioning reports none."""

    reason = "bundle_digest_missing"


class BundleDigestMismatch(AttestationError):
    """A device-key board reports another digest of its flashed files than the one recorded."""

    reason = "bundle_digest"


# --- configuration and local TPM ------------------------------------------------------------

class PolicyError(ValueError):
    """An attestation policy is invalid; the message names the bad key."""


class RuntimePolicyError(PolicyError):
    """A runtime policy file is unreadable, malformed or not signed by the expected key."""


class TpmError(RuntimeError):
    """A TPM command failed on the agent side; the message names the step."""


class TpmStateMismatch(TpmError):
    """The persistent AK handle holds another key than the one recorded in the state directory."""
