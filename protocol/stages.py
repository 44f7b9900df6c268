"""The stages of a round as explicit state machines for both roles.

A transition table maps (stage, event) to the next stage; anything not in the table raises
InvalidTransition before the session touches its state. Events are message types received (and
for the server, closing the current stage).
"""
from __future__ import annotations

from enum import Enum

from protocol import wire
from protocol.errors import InvalidTransition


class Stage(Enum):
    ADVERTISE_KEYS = "AdvertiseKeys"
    SHARE_KEYS = "ShareKeys"
    MASKED_INPUT_COLLECTION = "MaskedInputCollection"
    CONSISTENCY_CHECK = "ConsistencyCheck"
    UNMASKING = "Unmasking"
    DONE = "Done"
    ABORTED = "Aborted"

    @classmethod
    def order(cls) -> tuple["Stage", ...]:
        return (cls.ADVERTISE_KEYS, cls.SHARE_KEYS, cls.MASKED_INPUT_COLLECTION,
                cls.CONSISTENCY_CHECK, cls.UNMASKING, cls.DONE)

    @property
    def terminal(self) -> bool:
        return self in (Stage.DONE, Stage.ABORTED)


CLOSE = "close"   # server event: the current stage's collection window ends

# Client: the server message that drives each stage forward.
CLIENT_TRANSITIONS: dict[tuple[Stage, object], Stage] = {
    (Stage.ADVERTISE_KEYS, wire.ROUND_CONFIG): Stage.SHARE_KEYS,
    (Stage.SHARE_KEYS, wire.ROSTER): Stage.MASKED_INPUT_COLLECTION,
    (Stage.MASKED_INPUT_COLLECTION, wire.SHARES_RELAY): Stage.CONSISTENCY_CHECK,
    (Stage.CONSISTENCY_CHECK, wire.CONSISTENCY_REQUEST): Stage.UNMASKING,
    (Stage.UNMASKING, wire.UNMASK_REQUEST): Stage.DONE,
}
for _stage in Stage.order()[:-1]:
    CLIENT_TRANSITIONS[(_stage, wire.ABORT)] = Stage.ABORTED

# Server: the client message each stage collects (stage unchanged), and closing the stage.
SERVER_COLLECTS: dict[Stage, int] = {
    Stage.ADVERTISE_KEYS: wire.ADVERTISE_KEYS,
    Stage.SHARE_KEYS: wire.SHARE_KEYS,
    Stage.MASKED_INPUT_COLLECTION: wire.MASKED_INPUT,
    Stage.CONSISTENCY_CHECK: wire.CONSISTENCY_SIGNATURE,
    Stage.UNMASKING: wire.UNMASK_SHARES,
}
SERVER_TRANSITIONS: dict[tuple[Stage, object], Stage] = {}
for _stage, _mtype in SERVER_COLLECTS.items():
    SERVER_TRANSITIONS[(_stage, _mtype)] = _stage
# A key-reuse round collects UNMASK_ROUND_KEYS in Unmasking instead (the session checks which).
SERVER_TRANSITIONS[(Stage.UNMASKING, wire.UNMASK_ROUND_KEYS)] = Stage.UNMASKING
_order = Stage.order()
for _i, _stage in enumerate(_order[:-1]):
    SERVER_TRANSITIONS[(_stage, CLOSE)] = _order[_i + 1]


def _name(event) -> str:
    if event == CLOSE:
        return "closing the stage"
    cls = wire.MESSAGE_TYPES.get(event)
    return cls.__name__ if cls else repr(event)


def next_stage(table: dict, stage: Stage, event) -> Stage:
    try:
        return table[(stage, event)]
    except KeyError:
        raise InvalidTransition(f"{_name(event)} is not allowed in stage {stage.value}") from None
