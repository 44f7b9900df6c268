"""Typed errors of the secure-aggregation client (the same causes as protocol.errors).

A refused frame raises one of these and leaves the session unchanged; RoundAborted is final.
"""


class ProtocolError(Exception):
    pass


class ConfigurationError(ProtocolError):
    pass


class MalformedMessage(ProtocolError):
    pass


class UnsupportedVersion(MalformedMessage):
    pass


class BadSignature(ProtocolError):
    pass


class UnknownSender(ProtocolError):
    pass


class WrongRound(ProtocolError):
    pass


class DuplicateMessage(ProtocolError):
    pass


class DecryptionFailed(ProtocolError):
    pass


class InvalidTransition(ProtocolError):
    pass


class ConsistencyViolation(ProtocolError):
    pass


class KeyAgreementError(ProtocolError):
    pass


class RoundAborted(ProtocolError):
    def __init__(self, reason, code=1):
        super().__init__(reason)
        self.code = code
