"""Typed errors of the secure-aggregation protocol.

Every rejection has its own class so callers (and tests) can tell causes apart. A message that
raises any `ProtocolError` subclass leaves the receiving session's state unchanged, except
`RoundAborted`, which is final.
"""
from __future__ import annotations


class ProtocolError(Exception):
    """Base class: a message or a request was refused."""


class ConfigurationError(ProtocolError):
    """A round configuration is unsafe or inconsistent (threshold, overflow, sizes)."""


class MalformedMessage(ProtocolError):
    """Bytes from a peer do not parse: truncated, wrong length, bad magic, unknown type..."""


class UnsupportedVersion(MalformedMessage):
    """The frame announces a protocol version this implementation does not speak."""


class BadSignature(ProtocolError):
    """An Ed25519 signature does not verify under the sender's identity key."""


class UnknownSender(ProtocolError):
    """The sender id is not enrolled, or not expected at this point."""


class WrongRound(ProtocolError):
    """The frame belongs to another epoch or round."""


class DuplicateMessage(ProtocolError):
    """A second message of the same kind from the same sender, or a repeated entry."""


class DecryptionFailed(ProtocolError):
    """An encrypted share failed authentication (AEAD)."""


class InvalidTransition(ProtocolError):
    """The message or call is not allowed in the session's current stage."""


class ConsistencyViolation(ProtocolError):
    """The server's lists are inconsistent or hostile (overlap, growing sets, forged survivors...)."""


class ShamirError(ProtocolError):
    """Shares are invalid: duplicate or zero index, wrong length, too few, inconsistent."""


class KeyAgreementError(ProtocolError):
    """X25519 produced the all-zero secret (low-order public key)."""


class RoundAborted(ProtocolError):
    """The round cannot complete (too few clients or shares); final for the session."""

    def __init__(self, reason: str, code: int = 1):
        super().__init__(reason)
        self.code = code
