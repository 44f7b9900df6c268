"""The one root of every refusal of peer input, and its stable reason codes.

Whatever a peer sends and we refuse raises a subclass of `Refusal`: protocol frames
(protocol.errors.ProtocolError), MQTT payloads (fednet.messages.WireError), topics
(fednet.topics.TopicError), attestation evidence and enrolments (attestation.errors.AttestationError).
A handler of peer input catches `Refusal` alone and counts it by `reason`.

`reason` is a short snake_case code, one per class, never reused and never changed: it is a
metrics label and is stored with rejections. Every subclass sets its own; the class statement
checks the format and the uniqueness, so a clash fails when the module is imported, not in a
dashboard.
"""
from __future__ import annotations

import re
from typing import ClassVar

_CODE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
_OWNERS: dict[str, str] = {}


def _claim(cls: type, reason) -> None:
    """Record `reason` as `cls`'s code; a class defined again under the same name keeps it."""
    name = f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(reason, str) or not _CODE.match(reason):
        raise TypeError(f"{name} must set its own snake_case reason code, got {reason!r}")
    owner = _OWNERS.setdefault(reason, name)
    if owner != name:
        raise TypeError(f"reason code {reason!r} of {name} already belongs to {owner}")


class Refusal(Exception):
    """Base class: input from a peer was refused; the message says what exactly was wrong."""

    reason: ClassVar[str] = "refused"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Only the class's own attribute counts: an inherited code would be a reused one.
        _claim(cls, cls.__dict__.get("reason"))


_claim(Refusal, Refusal.reason)
