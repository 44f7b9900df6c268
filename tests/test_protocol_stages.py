"""The full stage-transition matrix of both state machines: every pair not in the table raises
InvalidTransition and leaves the session exactly as it was."""
from __future__ import annotations

import numpy as np
import pytest

from protocol import wire
from protocol.errors import InvalidTransition
from protocol.stages import CLIENT_TRANSITIONS, CLOSE, SERVER_TRANSITIONS, Stage
from protocol_testkit import Round

EPOCH, ROUND = 1, 7


def server_frames(rnd: Round) -> dict[int, bytes]:
    """One well-formed, server-signed frame of every type (content irrelevant: the transition
    check comes before any content check)."""
    key = rnd.cohort.server_identity
    msgs = [
        wire.RoundConfigMessage(0, EPOCH, ROUND, rnd.config),
        wire.AdvertiseKeys(0, EPOCH, ROUND, bytes(32), bytes(32), bytes(32)),
        wire.Roster(0, EPOCH, ROUND, ()),
        wire.ShareKeys(0, EPOCH, ROUND, ()),
        wire.SharesRelay(0, EPOCH, ROUND, ()),
        wire.MaskedInput(0, EPOCH, ROUND, 32, np.zeros(3, dtype=np.uint32)),
        wire.ConsistencyRequest(0, EPOCH, ROUND, ()),
        wire.ConsistencySignature(0, EPOCH, ROUND, bytes(64)),
        wire.UnmaskRequest(0, EPOCH, ROUND, (), ()),
        wire.UnmaskShares(0, EPOCH, ROUND, (), ()),
        wire.UnmaskRoundKeys(0, EPOCH, ROUND, (), ()),
        wire.Abort(0, EPOCH, ROUND, 1),
    ]
    return {m.TYPE: m.encode(key) for m in msgs}


def client_frames(rnd: Round, sender: int = 1) -> dict[int, bytes]:
    key = rnd.cohort.identities[sender]
    msgs = [
        wire.RoundConfigMessage(sender, EPOCH, ROUND, rnd.config),
        wire.AdvertiseKeys(sender, EPOCH, ROUND, rnd.config.digest(), b"\x01" * 32, b"\x02" * 32),
        wire.Roster(sender, EPOCH, ROUND, ()),
        wire.ShareKeys(sender, EPOCH, ROUND, ()),
        wire.SharesRelay(sender, EPOCH, ROUND, ()),
        wire.MaskedInput(sender, EPOCH, ROUND, 32, np.zeros(rnd.config.words, dtype=np.uint32)),
        wire.ConsistencyRequest(sender, EPOCH, ROUND, ()),
        wire.ConsistencySignature(sender, EPOCH, ROUND, bytes(64)),
        wire.UnmaskRequest(sender, EPOCH, ROUND, (), ()),
        wire.UnmaskShares(sender, EPOCH, ROUND, (), ()),
        wire.UnmaskRoundKeys(sender, EPOCH, ROUND, (), ()),
        wire.Abort(sender, EPOCH, ROUND, 1),
    ]
    return {m.TYPE: m.encode(key) for m in msgs}


def round_with_client_at(stage: Stage) -> Round:
    rnd = Round(n=4, threshold=3, dim=3, round_id=ROUND)
    client = rnd.clients[1]
    if stage == Stage.ABORTED:
        client.receive(server_frames(rnd)[wire.ABORT])
        return rnd
    while client.stage != stage:
        rnd.step()
    return rnd


def round_with_server_at(stage: Stage) -> Round:
    rnd = Round(n=4, threshold=3, dim=3, round_id=ROUND)
    if stage == Stage.ABORTED:
        rnd.server.abort("test")
        return rnd
    while rnd.server.stage != stage:
        rnd.step()
    return rnd


def client_snapshot(client):
    return client.stage, client._state, client.released, client.abort_reason


def server_snapshot(server):
    acc = None if server.accumulator is None else server.accumulator.copy()
    return (server.stage, dict(server.adverts), dict(server.shares), set(server.masked_from),
            dict(server.consistency), dict(server.unmask), server.survivors, server.dropped, acc)


ALL_TYPES = sorted(wire.MESSAGE_TYPES)
ALL_STAGES = list(Stage)


def test_client_table_is_the_protocol_order():
    path = [CLIENT_TRANSITIONS[(s, t)] for s, t in (
        (Stage.ADVERTISE_KEYS, wire.ROUND_CONFIG), (Stage.SHARE_KEYS, wire.ROSTER),
        (Stage.MASKED_INPUT_COLLECTION, wire.SHARES_RELAY), (Stage.CONSISTENCY_CHECK, wire.CONSISTENCY_REQUEST),
        (Stage.UNMASKING, wire.UNMASK_REQUEST))]
    assert path == list(Stage.order()[1:])


@pytest.mark.parametrize("stage", ALL_STAGES, ids=lambda s: s.value)
def test_client_refuses_every_message_not_allowed_in_its_stage(stage):
    rnd = round_with_client_at(stage)
    client = rnd.clients[1]
    frames = server_frames(rnd)
    refused = 0
    for mtype in ALL_TYPES:
        if (stage, mtype) in CLIENT_TRANSITIONS:
            continue
        before = client_snapshot(client)
        with pytest.raises(InvalidTransition):
            client.receive(frames[mtype])
        after = client_snapshot(client)
        assert after[0] == before[0] and after[1] is before[1] and after[2:] == before[2:]
        refused += 1
    allowed = sum(1 for (s, _t) in CLIENT_TRANSITIONS if s == stage)
    assert refused + allowed == len(ALL_TYPES)
    if stage.terminal:
        assert refused == len(ALL_TYPES)


@pytest.mark.parametrize("stage", ALL_STAGES, ids=lambda s: s.value)
def test_server_refuses_every_message_not_collected_in_its_stage(stage):
    rnd = round_with_server_at(stage)
    frames = client_frames(rnd)
    for mtype in ALL_TYPES:
        if (stage, mtype) in SERVER_TRANSITIONS:
            continue
        before = server_snapshot(rnd.server)
        with pytest.raises(InvalidTransition):
            rnd.server.receive(frames[mtype])
        after = server_snapshot(rnd.server)
        assert repr(after) == repr(before)
    if stage.terminal:
        with pytest.raises(InvalidTransition):
            rnd.server.close_stage()
        assert rnd.server.stage == stage


def test_server_stages_close_in_protocol_order():
    rnd = Round(n=4, threshold=3, dim=3)
    seen = [rnd.server.stage]
    while not rnd.server.stage.terminal:
        rnd.step()
        seen.append(rnd.server.stage)
    assert seen == list(Stage.order())
    assert all((s, CLOSE) in SERVER_TRANSITIONS for s in Stage.order()[:-1])


def test_client_without_input_refuses_the_relay_and_can_continue_after_set_input():
    rnd = Round(n=3, threshold=3, dim=4)
    rnd.step(); rnd.step()
    client = rnd.clients[2]
    client._update = None
    relay = rnd.to_clients[2]
    before = client_snapshot(client)
    with pytest.raises(InvalidTransition):
        client.receive(relay)
    assert client_snapshot(client)[1] is before[1] and client.stage == Stage.MASKED_INPUT_COLLECTION
    client.set_input(rnd.inputs[2], rnd.weights[2])
    assert client.receive(relay) is not None
    assert client.stage == Stage.CONSISTENCY_CHECK
