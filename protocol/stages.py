"""The stages of a round as explicit state machines for both roles.

A transition table maps (stage, event) to the next stage; anything not in the table raises
InvalidTransition before the session touches its state. Events are message types received (and
for the server, closing the current stage). Classic rounds and key-reuse rounds (docs/protocol.md
2.7) have one table each: they differ in the consistency check (survivor signatures, 0x08 / 0x09,
against pairwise tags, 0x0D / 0x0E) and in the unmasking answer (0x0A against 0x0C).
"""
from __future__ import annotations

from enum import Enum

from ztfl.protocol import wire
from ztfl.protocol.errors import InvalidTransition


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


def _client_table(unmask_request: int) -> dict[tuple[Stage, object], Stage]:
    """Client: the server message that drives each stage forward."""
    table = {
        (Stage.ADVERTISE_KEYS, wire.ROUND_CONFIG): Stage.SHARE_KEYS,
        (Stage.SHARE_KEYS, wire.ROSTER): Stage.MASKED_INPUT_COLLECTION,
        (Stage.MASKED_INPUT_COLLECTION, wire.SHARES_RELAY): Stage.CONSISTENCY_CHECK,
        (Stage.CONSISTENCY_CHECK, wire.CONSISTENCY_REQUEST): Stage.UNMASKING,
        (Stage.UNMASKING, unmask_request): Stage.DONE,
    }
    for stage in Stage.order()[:-1]:
        table[(stage, wire.ABORT)] = Stage.ABORTED
    return table


def _server_table(collects: dict[Stage, int]) -> dict[tuple[Stage, object], Stage]:
    """Server: the client message each stage collects (stage unchanged), and closing the stage."""
    table: dict[tuple[Stage, object], Stage] = {(stage, mtype): stage for stage, mtype in collects.items()}
    order = Stage.order()
    for i, stage in enumerate(order[:-1]):
        table[(stage, CLOSE)] = order[i + 1]
    return table


SERVER_COLLECTS: dict[Stage, int] = {
    Stage.ADVERTISE_KEYS: wire.ADVERTISE_KEYS,
    Stage.SHARE_KEYS: wire.SHARE_KEYS,
    Stage.MASKED_INPUT_COLLECTION: wire.MASKED_INPUT,
    Stage.CONSISTENCY_CHECK: wire.CONSISTENCY_SIGNATURE,
    Stage.UNMASKING: wire.UNMASK_SHARES,
}
SERVER_COLLECTS_KEY_REUSE: dict[Stage, int] = {
    **SERVER_COLLECTS,
    Stage.CONSISTENCY_CHECK: wire.CONSISTENCY_TAGS,
    Stage.UNMASKING: wire.UNMASK_ROUND_KEYS,
}

CLIENT_TRANSITIONS = _client_table(wire.UNMASK_REQUEST)
CLIENT_TRANSITIONS_KEY_REUSE = _client_table(wire.UNMASK_REQUEST_TAGS)
SERVER_TRANSITIONS = _server_table(SERVER_COLLECTS)
SERVER_TRANSITIONS_KEY_REUSE = _server_table(SERVER_COLLECTS_KEY_REUSE)


def client_transitions(key_reuse: bool) -> dict[tuple[Stage, object], Stage]:
    return CLIENT_TRANSITIONS_KEY_REUSE if key_reuse else CLIENT_TRANSITIONS


def server_transitions(key_reuse: bool) -> dict[tuple[Stage, object], Stage]:
    return SERVER_TRANSITIONS_KEY_REUSE if key_reuse else SERVER_TRANSITIONS


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
