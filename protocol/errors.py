"""Typed errors of the secure-aggregation protocol.

Every rejection has its own class so callers (and tests) can tell causes apart, and its own
stable `reason` code (protocol.refusal) for counting. A message that raises any `ProtocolError`
subclass leaves the receiving session's state unchanged, except `RoundAborted`, which is final.
"""
from __future__ import annotations

from ztfl.protocol.refusal import Refusal


class ProtocolError(Refusal):
    """Base class: a message or a request was refused."""

    reason = "protocol"


class ConfigurationError(ProtocolError):
    """A round configuration is unsafe or inconsistent (threshold, overflow, sizes)."""

    reason = "configuration"


class MalformedMessage(ProtocolError):
    """Bytes from a peer do not parse: truncated, wrong length, bad magic, unknown type..."""

    reason = "malformed_message"


class UnsupportedVersion(MalformedMessage):
    """The frame announces a protocol version this implementation does not speak."""

    reason = "unsupported_version"


class BadSignature(ProtocolError):
    """An Ed25519 signature or a session tag does not verify under the sender's key."""

    # Not "bad_signature": that code is attestation's (a quote's signature).
    reason = "bad_authenticator"


class UnknownSender(ProtocolError):
    """The sender id is not enrolled, or not expected at this point."""

    reason = "unknown_sender"


class WrongRound(ProtocolError):
    """The frame belongs to another epoch or round."""

    reason = "wrong_round"


class DuplicateMessage(ProtocolError):
    """A second message of the same kind from the same sender, or a repeated entry."""

    reason = "duplicate_message"


class DecryptionFailed(ProtocolError):
    """An encrypted share failed authentication (AEAD)."""

    reason = "decryption_failed"


class InvalidTransition(ProtocolError):
    """The message or call is not allowed in the session's current stage."""

    reason = "invalid_transition"


class ConsistencyViolation(ProtocolError):
    """The server's lists are inconsistent or hostile (overlap, growing sets, forged survivors...)."""

    reason = "consistency_violation"


class ShamirError(ProtocolError):
    """Shares are invalid: duplicate or zero index, wrong length, too few, inconsistent."""

    reason = "invalid_shares"


class KeyAgreementError(ProtocolError):
    """X25519 produced the all-zero secret (low-order public key)."""

    reason = "low_order_key"


class RoundKindMismatch(ConfigurationError):
    """The signed ROUND_CONFIG's round kind (key reuse or classic) is not the announced one: keys
    kept for the epoch must never serve a classic round, which Shamir-shares their secret."""

    reason = "round_kind_mismatch"


class RoundAborted(ProtocolError):
    """The round cannot complete (too few clients or shares); final for the session."""

    reason = "round_aborted"

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class BelowSecurityFloor(ConfigurationError):
    """The round offers less protection than this agent's provisioned security floor accepts."""

    reason = "below_security_floor"


class SemiHonestRefused(BelowSecurityFloor):
    """The round asks for semi-honest thresholds: an agent accepts active security only."""

    reason = "semi_honest_refused"


class ThresholdOverrideRefused(BelowSecurityFloor):
    """The round sets the threshold-override flag: an agent never lowers the threshold rule."""

    reason = "threshold_override_refused"


class ThresholdBelowFloor(BelowSecurityFloor):
    """The threshold is at most 2g/3 of the sharing group the agent actually sees."""

    reason = "threshold_below_floor"


class GroupBelowFloor(BelowSecurityFloor):
    """The sharing group is smaller than the agent's provisioned minimum."""

    reason = "group_below_floor"


class NeighborsBelowFloor(BelowSecurityFloor):
    """The SecAgg+ neighbour count is below the agent's provisioned minimum."""

    reason = "neighbors_below_floor"


class NoEpochGraph(ConfigurationError):
    """A key-reuse round uses the key epoch's neighbour graph, and none was fixed for these keys."""

    reason = "no_epoch_graph"


class RevealMissing(RoundAborted):
    """A roster member's graph reveal is missing: the graph cannot be fixed; final for the attempt."""

    reason = "reveal_missing"


class RevealMismatch(RoundAborted):
    """A graph reveal does not match its member's commitment; final for the attempt."""

    reason = "reveal_mismatch"
