"""Gateway side: decide whether an agent gets a seat in a round ("no quote, no seat").

`Verifier.verify` fails closed: it returns the verified identity or raises exactly one
AttestationError subclass naming the cause. Each refusal is logged, kept in `rejections`
(most recent first, bounded) and counted in `metrics` by reason; accepted identities are
counted as TPM-rooted or software-rooted.

Order of checks (each on data already authenticated by the previous ones where possible):
identity known and activated -> evidence kind allowed -> nonce issued, fresh, unused ->
TPMS_ATTEST and TPMT_SIGNATURE parse -> signer is the enrolled AK -> signature ->
hash algorithm -> qualifying data -> PCR selection -> PCR digest -> allow-list ->
[boot event log replays to the quoted PCRs 0-7 -> boot policy] ->
[IMA entries replay to the quoted PCR 10 -> runtime policy, entry by entry] ->
clock monotonic -> nonce consumed (and the agent's IMA replay state advanced).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ztfl.attestation import errors
from ztfl.attestation.binding import qualifying_data, software_quote_message
from ztfl.attestation.eventlog import EventLog, check_replay, parse_event_log, replay
from ztfl.attestation.ima import IMA_PCR, ImaReplayBook, boot_aggregate, check_entry_pcrs, parse_ima_log, quoted_prefix
from ztfl.attestation.keys import public_area_to_key
from ztfl.attestation.messages import QuoteEvidence, SoftwareEvidence, decode_evidence
from ztfl.attestation.nonces import NonceBook
from ztfl.attestation.policy import AttestationPolicy
from ztfl.attestation.registry import EnrolledIdentity, IdentityRegistry
from ztfl.attestation.tpm_wire import (hash_name, parse_public, parse_quote_attest, parse_signature,
                                  pcr_composite_digest)

log = logging.getLogger("ztfl.attestation")

_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


@dataclass(frozen=True)
class VerifiedIdentity:
    """Who was admitted, how its identity is rooted, and what its TPM reported."""

    agent_id: str
    profile: str
    software_rooted: bool
    round_id: int
    pcr_values: dict[int, bytes] = field(default_factory=dict)
    clock: tuple[int, int, int] | None = None        # (reset_count, restart_count, clock)
    ima_entries: int | None = None                   # IMA entries of this boot judged so far


@dataclass(frozen=True)
class Rejection:
    agent_id: str
    round_id: int
    reason: str
    message: str
    at: float


@dataclass
class AttestationMetrics:
    accepted_tpm: int = 0
    accepted_software: int = 0
    rejected: Counter = field(default_factory=Counter)

    def snapshot(self) -> dict:
        return {"accepted_tpm": self.accepted_tpm, "accepted_software": self.accepted_software,
                "rejected": dict(self.rejected)}


class Verifier:
    def __init__(self, registry: IdentityRegistry, policy: AttestationPolicy,
                 nonces: NonceBook | None = None, history: int = 1000):
        self.registry = registry
        self.policy = policy
        self.nonces = nonces or NonceBook(ttl_s=policy.nonce_ttl_s)
        self.metrics = AttestationMetrics()
        self.rejections: deque[Rejection] = deque(maxlen=history)
        self._keys: dict[bytes, ec.EllipticCurvePublicKey] = {}
        self._lock = threading.Lock()
        self.ima_book = ImaReplayBook(policy.hash_alg)
        self.model_digests: set[bytes] = set()      # SHA-256 of every model file this gateway distributed

    def allow_model(self, digest: bytes) -> None:
        """A model file (as the agents store it) this gateway distributed: IMA may show it loaded."""
        self.model_digests.add(bytes(digest))

    def ima_position(self, agent_id: str) -> int:
        """IMA entries of the agent's current list accepted so far (what its receipt says)."""
        return self.ima_book.position(agent_id)

    # --- nonces ---------------------------------------------------------------------------
    def issue_nonce(self, round_id: int, agent_id: str | None = None) -> bytes:
        return self.nonces.issue(round_id, agent_id)

    def retire_round(self, round_id: int) -> None:
        self.nonces.retire_round(round_id)

    # --- verification -----------------------------------------------------------------------
    def verify(self, agent_id: str, round_id: int, public_keys: bytes,
               evidence: bytes | QuoteEvidence | SoftwareEvidence) -> VerifiedIdentity:
        """Admit `agent_id` to `round_id` with the protocol `public_keys` it advertised, or raise."""
        try:
            if isinstance(evidence, (bytes, bytearray, memoryview)):
                evidence = decode_evidence(evidence)
            result = self._verify(agent_id, round_id, bytes(public_keys), evidence)
        except errors.AttestationError as exc:
            self._reject(agent_id, round_id, exc)
            raise
        with self._lock:
            if result.software_rooted:
                self.metrics.accepted_software += 1
            else:
                self.metrics.accepted_tpm += 1
        log.info("attestation of %s for round %d accepted (%s-rooted)", agent_id, round_id,
                 "software" if result.software_rooted else "TPM")
        return result

    def last_rejection(self, agent_id: str) -> Rejection | None:
        with self._lock:
            return next((r for r in self.rejections if r.agent_id == agent_id), None)

    def _reject(self, agent_id: str, round_id: int, exc: errors.AttestationError) -> None:
        with self._lock:
            self.metrics.rejected[exc.reason] += 1
            self.rejections.appendleft(Rejection(agent_id, round_id, exc.reason, str(exc), time.time()))
        log.warning("attestation of %s for round %d refused [%s]: %s", agent_id, round_id, exc.reason, exc)

    def _verify(self, agent_id, round_id, public_keys, evidence) -> VerifiedIdentity:
        identity = self.registry.get(agent_id)
        if identity is None:
            raise errors.UnknownAgent(f"{agent_id} is not enrolled")
        if not identity.active:
            raise errors.AkNotActivated(f"{agent_id} never completed credential activation")
        if identity.software_rooted:
            if not self.policy.software_rooted_allowed(identity.profile):
                raise errors.SoftwareRootNotAllowed(f"{agent_id} ({identity.profile}) has no TPM and the policy "
                                                    "does not admit software-rooted identities")
            if not isinstance(evidence, SoftwareEvidence):
                raise errors.EvidenceKindMismatch(f"{agent_id} is software-rooted but sent TPM evidence")
            return self._verify_software(identity, round_id, public_keys, evidence)
        if not isinstance(evidence, QuoteEvidence):
            raise errors.EvidenceKindMismatch(f"{agent_id} is TPM-rooted but sent software evidence")
        return self._verify_quote(identity, round_id, public_keys, evidence)

    def _check_round_and_nonce(self, agent_id: str, round_id: int, evidence) -> None:
        if evidence.round_id != round_id:
            raise errors.StaleNonce(f"evidence is for round {evidence.round_id}, the round is {round_id}")
        self.nonces.check(evidence.nonce, agent_id, round_id)

    def _verify_software(self, identity: EnrolledIdentity, round_id: int, public_keys: bytes,
                         evidence: SoftwareEvidence) -> VerifiedIdentity:
        self._check_round_and_nonce(identity.agent_id, round_id, evidence)
        message = software_quote_message(evidence.nonce, round_id, public_keys)
        try:
            Ed25519PublicKey.from_public_bytes(identity.device_public_key).verify(evidence.signature, message)
        except (InvalidSignature, ValueError):
            raise errors.BadSignature(f"device-key signature of {identity.agent_id} does not verify "
                                      "over this nonce, round and public keys") from None
        self.nonces.consume(evidence.nonce, identity.agent_id, round_id)
        return VerifiedIdentity(identity.agent_id, identity.profile, True, round_id)

    def _ak_key(self, identity: EnrolledIdentity) -> ec.EllipticCurvePublicKey:
        key = self._keys.get(identity.ak_public)
        if key is None:
            key = public_area_to_key(parse_public(identity.ak_public))
            self._keys[identity.ak_public] = key
        return key

    def _verify_quote(self, identity: EnrolledIdentity, round_id: int, public_keys: bytes,
                      evidence: QuoteEvidence) -> VerifiedIdentity:
        agent_id = identity.agent_id
        policy = self.policy
        self._check_round_and_nonce(agent_id, round_id, evidence)

        attest = parse_quote_attest(evidence.attest)
        signature = parse_signature(evidence.signature)
        if attest.qualified_signer != identity.ak_qualified_name:
            raise errors.UnenrolledKey(f"quote signed by {attest.qualified_signer.hex()[:20]}..., "
                                       f"not the AK enrolled for {agent_id}")
        if signature.hash_alg != policy.hash_alg_id:
            raise errors.HashAlgorithmMismatch(f"signature hash is {_name(signature.hash_alg)}, "
                                               f"the policy says {policy.hash_alg}")
        try:
            self._ak_key(identity).verify(encode_dss_signature(signature.r, signature.s), evidence.attest,
                                          ec.ECDSA(_HASHES[policy.hash_alg]()))
        except InvalidSignature:
            raise errors.BadSignature(f"quote signature does not verify with {agent_id}'s AK") from None

        # From here on every field of `attest` is vouched for by the enrolled AK.
        banks = attest.pcr_selection
        if len(banks) != 1 or banks[0].hash_alg != policy.hash_alg_id:
            got = ",".join(_name(b.hash_alg) for b in banks) or "none"
            raise errors.HashAlgorithmMismatch(f"PCR bank {got}, the policy says {policy.hash_alg}")
        expected_qd = qualifying_data(evidence.nonce, round_id, public_keys)
        if attest.extra_data != expected_qd:
            raise errors.QualifyingDataMismatch("quote extraData is not H(nonce || round || public keys)")
        quoted = banks[0].pcrs
        if not set(policy.pcrs) <= set(quoted):
            # More PCRs than the policy's are harmless (an agent with IMA also quotes 0-7 and 10
            # for gateways that judge them); fewer would leave a PCR unproven.
            raise errors.PcrSelectionMismatch(f"quote covers PCRs {list(quoted)}, "
                                              f"the policy asks for {list(policy.pcrs)}")
        if len(evidence.pcr_values) != len(quoted):
            raise errors.PcrSelectionMismatch(f"{len(evidence.pcr_values)} PCR values reported for "
                                              f"{len(quoted)} selected PCRs")
        if pcr_composite_digest(signature.hash_alg, evidence.pcr_values) != attest.pcr_digest:
            raise errors.PcrDigestMismatch("reported PCR values do not match the digest the TPM signed")
        values = dict(zip(quoted, evidence.pcr_values))
        allowed = policy.allowlist.get(identity.profile)
        if allowed is None:
            raise errors.UnknownProfile(f"no PCR allow-list for profile {identity.profile}")
        for pcr in policy.value_checked_pcrs:
            if values[pcr] not in allowed[pcr]:
                raise errors.PcrValueNotAllowed(f"PCR {pcr} = {values[pcr].hex()[:16]}... is not allowed for "
                                                f"{identity.profile}")
        boot_log = self._check_boot_log(evidence, values)
        ima = self._check_ima(agent_id, attest.clock_info.reset_count, evidence, values, boot_log)
        clock = (attest.clock_info.reset_count, attest.clock_info.restart_count, attest.clock_info.clock)
        if identity.last_clock is not None and _went_back(identity.last_clock, clock):
            raise errors.ClockRollback(f"TPM (reset, restart, clock) went from {identity.last_clock} to {clock}")
        self.nonces.consume(evidence.nonce, agent_id, round_id)
        self.registry.update(agent_id, last_clock=clock)
        if ima is not None:
            self.ima_book.commit(agent_id, clock[0], *ima)
        return VerifiedIdentity(agent_id, identity.profile, False, round_id, values, clock,
                                ima[0] if ima is not None else None)

    def _check_boot_log(self, evidence: QuoteEvidence, values: dict[int, bytes]) -> EventLog | None:
        """Measured boot: the event log must replay to the quoted PCRs and pass the boot policy."""
        boot = self.policy.boot
        if boot is None:
            return None
        if not evidence.boot_log:
            raise errors.EvidenceLogMissing("the policy judges measured boot; the evidence has no boot event log")
        log = parse_event_log(evidence.boot_log)
        check_replay(log, self.policy.hash_alg, values, boot.pcrs)
        boot.evaluate(log, self.policy.hash_alg)
        return log

    def _check_ima(self, agent_id: str, boot_id: int, evidence: QuoteEvidence, values: dict[int, bytes],
                   boot_log: EventLog | None) -> tuple[int, bytes] | None:
        """Runtime: the IMA entries since the last accepted quote must replay, from the gateway's own
        state, to the quoted PCR 10, and every entry the quote covers must pass the runtime policy.
        Returns (entries covered in all, PCR 10 there) for the state to advance to."""
        runtime = self.policy.runtime
        if runtime is None:
            return None
        offset = evidence.ima_offset
        if offset == 0 and not evidence.ima_entries:
            raise errors.EvidenceLogMissing("the policy judges IMA; the evidence has no IMA entries")
        start = self.ima_book.start(agent_id, boot_id, offset)
        entries = parse_ima_log(evidence.ima_entries, offset)
        check_entry_pcrs(entries, offset)
        count, value = quoted_prefix(entries, self.policy.hash_alg, start, values[IMA_PCR])

        def expected_boot_aggregate(bank: str) -> bytes | None:
            if boot_log is None or bank not in boot_log.banks():
                return None
            return boot_aggregate(replay(boot_log, bank), bank)

        runtime.check(entries[:count], offset, self.model_digests, expected_boot_aggregate)
        return offset + count, value


def _went_back(last: tuple[int, int, int], now: tuple[int, int, int]) -> bool:
    """Lexicographic on (resetCount, restartCount, clock): a TPM reset may restart the clock, a
    restart may not lower resetCount, and within one boot the clock never runs backwards."""
    return now < last


def _name(alg: int) -> str:
    try:
        return hash_name(alg)
    except ValueError:
        return f"0x{alg:04x}"
