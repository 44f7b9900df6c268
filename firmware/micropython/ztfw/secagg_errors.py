"""Typed errors of the secure-aggregation client (the same causes as protocol.errors).

A refused frame raises one of these and leaves the session unchanged; RoundAborted is final.
"""


class ProtocolError(Exception):
    """Base class: a frame or a request was refused."""


class ConfigurationError(ProtocolError):
    """A round configuration is unsafe, or these keys may not serve it."""


class MalformedMessage(ProtocolError):
    """Bytes from the server do not parse (size, magic, type, layout)."""


class UnsupportedVersion(MalformedMessage):
    """The frame announces a protocol version this client does not speak."""


class BadSignature(ProtocolError):
    """An Ed25519 signature does not verify under the sender's identity key."""


class UnknownSender(ProtocolError):
    """The sender is not the server, or a roster names an unenrolled client."""


class WrongRound(ProtocolError):
    """The frame belongs to another epoch or round."""


class DuplicateMessage(ProtocolError):
    """A key appears twice in the roster."""


class DecryptionFailed(ProtocolError):
    """An encrypted share failed authentication."""


class InvalidTransition(ProtocolError):
    """The message is not the one the current stage expects."""


class ConsistencyViolation(ProtocolError):
    """The server's lists are inconsistent or hostile."""


class KeyAgreementError(ProtocolError):
    """X25519 gave the all-zero secret (a low-order public key)."""


class RoundKindMismatch(ConfigurationError):
    """The signed round kind (key reuse or classic) is not the announced one."""


class RoundAborted(ProtocolError):
    def __init__(self, reason, code=1):
        super().__init__(reason)
        self.code = code


class BelowSecurityFloor(ConfigurationError):
    """The round offers less protection than this board's provisioned security floor accepts."""


class SemiHonestRefused(BelowSecurityFloor):
    """Semi-honest thresholds: the board takes part with active security only."""


class ThresholdOverrideRefused(BelowSecurityFloor):
    """The threshold-override flag: the board never lowers the threshold rule."""


class ThresholdBelowFloor(BelowSecurityFloor):
    """The threshold is at most 2g/3 of the sharing group the board actually sees."""


class GroupBelowFloor(BelowSecurityFloor):
    """The sharing group is smaller than the provisioned minimum."""


class NeighborsBelowFloor(BelowSecurityFloor):
    """The SecAgg+ neighbour count is below the provisioned minimum."""


class NoEpochGraph(ConfigurationError):
    """A key-reuse round keeps the key epoch's graph, and these keys hold none."""


class RevealMissing(RoundAborted):
    """A roster member's graph reveal is missing; final for the attempt."""


class RevealMismatch(RoundAborted):
    """A graph reveal does not match its member's commitment; final for the attempt."""
