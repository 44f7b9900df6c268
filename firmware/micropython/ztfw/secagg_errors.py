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


class RoundAborted(ProtocolError):
    def __init__(self, reason, code=1):
        super().__init__(reason)
        self.code = code
