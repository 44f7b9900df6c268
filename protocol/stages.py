"""The stages of a round as explicit state machines for both roles.

A transition table maps (stage, event) to the next stage; anything not in the table raises
InvalidTransition before the session touches its state. Events are message types received (and
for the server, closing the current stage). A round's kind picks its table, one per (key reuse,
graph reveal):

* classic and key-reuse rounds (docs/protocol.md 2.7) differ in the consistency check (survivor
  signatures, 0x08 / 0x09, against pairwise tags, 0x0D / 0x0E) and in the unmasking answer (0x0A
  against 0x0C);
* a round that fixes a sparse neighbour graph (1.7) has one more stage, GraphReveal, between the
  roster and the shares: the clients reveal the seed contributions they committed to, and the
  server relays all of them (0x0F / 0x10) before anyone deals a share.
"""
from __future__ import annotations

from enum import Enum

from ztfl.protocol import wire
from ztfl.protocol.errors import InvalidTransition


class Stage(Enum):
    ADVERTISE_KEYS = "AdvertiseKeys"
    GRAPH_REVEAL = "GraphReveal"
    SHARE_KEYS = "ShareKeys"
    MASKED_INPUT_COLLECTION = "MaskedInputCollection"
    CONSISTENCY_CHECK = "ConsistencyCheck"
    UNMASKING = "Unmasking"
    DONE = "Done"
    ABORTED = "Aborted"

    @classmethod
    def order(cls, reveal: bool = False) -> tuple["Stage", ...]:
        """The stages of a round in order; `reveal`: a round that fixes its graph (GraphReveal)."""
        return ((cls.ADVERTISE_KEYS,) + ((cls.GRAPH_REVEAL,) if reveal else ())
                + (cls.SHARE_KEYS, cls.MASKED_INPUT_COLLECTION, cls.CONSISTENCY_CHECK, cls.UNMASKING, cls.DONE))

    @property
    def terminal(self) -> bool:
        return self in (Stage.DONE, Stage.ABORTED)


CLOSE = "close"   # server event: the current stage's collection window ends

# In each stage, the server message the client answers with that stage's own message.
_ANSWERED = {
    Stage.ADVERTISE_KEYS: wire.ROUND_CONFIG,
    Stage.GRAPH_REVEAL: wire.ROSTER,
    Stage.MASKED_INPUT_COLLECTION: wire.SHARES_RELAY,
    Stage.CONSISTENCY_CHECK: wire.CONSISTENCY_REQUEST,
}


def _client_table(key_reuse: bool, reveal: bool) -> dict[tuple[Stage, object], Stage]:
    """Client: the server message that moves each stage to the next one."""
    answered = {**_ANSWERED,
                Stage.SHARE_KEYS: wire.GRAPH_SEEDS if reveal else wire.ROSTER,
                Stage.UNMASKING: wire.UNMASK_REQUEST_TAGS if key_reuse else wire.UNMASK_REQUEST}
    order = Stage.order(reveal)
    table = {}
    for i, stage in enumerate(order[:-1]):
        table[(stage, answered[stage])] = order[i + 1]
        table[(stage, wire.ABORT)] = Stage.ABORTED
    return table


def _server_table(key_reuse: bool, reveal: bool) -> dict[tuple[Stage, object], Stage]:
    """Server: the client message each stage collects (stage unchanged), and closing the stage."""
    collects = {
        Stage.ADVERTISE_KEYS: wire.ADVERTISE_KEYS,
        Stage.GRAPH_REVEAL: wire.GRAPH_REVEAL,
        Stage.SHARE_KEYS: wire.SHARE_KEYS,
        Stage.MASKED_INPUT_COLLECTION: wire.MASKED_INPUT,
        Stage.CONSISTENCY_CHECK: wire.CONSISTENCY_TAGS if key_reuse else wire.CONSISTENCY_SIGNATURE,
        Stage.UNMASKING: wire.UNMASK_ROUND_KEYS if key_reuse else wire.UNMASK_SHARES,
    }
    order = Stage.order(reveal)
    table: dict[tuple[Stage, object], Stage] = {}
    for i, stage in enumerate(order[:-1]):
        table[(stage, collects[stage])] = stage
        table[(stage, CLOSE)] = order[i + 1]
    return table


KINDS = [(key_reuse, reveal) for key_reuse in (False, True) for reveal in (False, True)]
CLIENT_TABLES = {kind: _client_table(*kind) for kind in KINDS}
SERVER_TABLES = {kind: _server_table(*kind) for kind in KINDS}


def client_transitions(key_reuse: bool, reveal: bool = False) -> dict[tuple[Stage, object], Stage]:
    return CLIENT_TABLES[(key_reuse, reveal)]


def server_transitions(key_reuse: bool, reveal: bool = False) -> dict[tuple[Stage, object], Stage]:
    return SERVER_TABLES[(key_reuse, reveal)]


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
