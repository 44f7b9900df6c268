"""The full stage-transition matrix of both state machines, for every round kind (classic or
key-reuse, with or without the graph reveal): every pair not in the round kind's table raises
InvalidTransition and leaves the session exactly as it was. Frames are authenticated the way the
receiver expects (signed, or session-tagged in a key-reuse round), so the transition check is what
refuses them."""
from __future__ import annotations

import numpy as np
import pytest

from ztfl.protocol import wire
from ztfl.protocol.errors import InvalidTransition
from ztfl.protocol.stages import KINDS, CLOSE, Stage, client_transitions, server_transitions
from protocol_testkit import Round

EPOCH, ROUND = 1, 7


def _encode(msg, key, akey, key_reuse: bool, recipient: int | None = None) -> bytes:
    if akey is not None and wire.expected_auth(msg.TYPE, key_reuse) == wire.AUTH_SESSION:
        return msg.encode_for({recipient: akey}) if recipient is not None else msg.encode_tagged(akey)
    return msg.encode(key)


def server_frames(rnd: Round, client: int = 1) -> dict[int, bytes]:
    """One well-formed server frame of every type, signed or tagged for `client` as it expects
    (content irrelevant: the transition check comes before any content check)."""
    key = rnd.cohort.server_identity
    session = rnd.clients[client]
    akey = session._session_key() if session.key_reuse else None
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
        wire.ConsistencyTags(0, EPOCH, ROUND, ()),
        wire.UnmaskRequestTags(0, EPOCH, ROUND, (), ()),
        wire.GraphReveal(0, EPOCH, ROUND, bytes(32)),
        wire.GraphSeeds(0, EPOCH, ROUND, ()),
    ]
    return {m.TYPE: _encode(m, key, akey, session.key_reuse, client) for m in msgs}


def client_frames(rnd: Round, sender: int = 1) -> dict[int, bytes]:
    """One well-formed frame of every type from `sender`, signed or tagged as the server expects."""
    key = rnd.cohort.identities[sender]
    akey = rnd.server.akeys.get(sender)
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
        wire.ConsistencyTags(sender, EPOCH, ROUND, ()),
        wire.UnmaskRequestTags(sender, EPOCH, ROUND, (), ()),
        wire.GraphReveal(sender, EPOCH, ROUND, bytes(32)),
        wire.GraphSeeds(sender, EPOCH, ROUND, ()),
    ]
    return {m.TYPE: _encode(m, key, akey, rnd.config.key_reuse) for m in msgs}


def new_round(key_reuse: bool = False, reveal: bool = False) -> Round:
    """A round of the given kind: the reveal comes with a sparse graph (its first key-reuse round)."""
    sparse = {"neighbors": 4, "new_graph": key_reuse} if reveal else {}
    return Round(n=5, threshold=4, dim=3, round_id=ROUND, key_reuse=key_reuse, **sparse)


def round_with_client_at(stage: Stage, key_reuse: bool = False, reveal: bool = False) -> Round:
    rnd = new_round(key_reuse, reveal)
    client = rnd.clients[1]
    if stage == Stage.ABORTED:
        client.receive(server_frames(rnd)[wire.ABORT])
        return rnd
    while client.stage != stage:
        rnd.step()
    return rnd


def round_with_server_at(stage: Stage, key_reuse: bool = False, reveal: bool = False) -> Round:
    rnd = new_round(key_reuse, reveal)
    if key_reuse:
        # Client 1's signed advert gives the server its session key, so its tagged frames
        # authenticate and reach the transition check in every stage.
        rnd.server.receive(rnd.clients[1].receive(rnd.to_clients[1]))
        rnd.to_clients[1] = None
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
    return (server.stage, dict(server.adverts), dict(server.reveals), dict(server.shares), set(server.masked_from),
            dict(server.consistency), dict(server.unmask), server.survivors, server.dropped, acc)


ALL_TYPES = sorted(wire.MESSAGE_TYPES)
KIND_IDS = {(False, False): "classic", (False, True): "classic-reveal", (True, False): "key-reuse",
            (True, True): "key-reuse-reveal"}
# Every stage a round of each kind passes through, and the terminal ones.
CASES = [(kind, stage) for kind in KINDS for stage in Stage if stage != Stage.GRAPH_REVEAL or kind[1]]
MATRIX = pytest.mark.parametrize("kind, stage", CASES, ids=[f"{KIND_IDS[k]}-{s.value}" for k, s in CASES])


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS.get)
def test_client_table_is_the_protocol_order(kind):
    key_reuse, reveal = kind
    table = client_transitions(*kind)
    answered = [wire.ROUND_CONFIG] + ([wire.ROSTER, wire.GRAPH_SEEDS] if reveal else [wire.ROSTER]) + [
        wire.SHARES_RELAY, wire.CONSISTENCY_REQUEST, wire.UNMASK_REQUEST_TAGS if key_reuse else wire.UNMASK_REQUEST]
    order = Stage.order(reveal)
    assert [table[(s, t)] for s, t in zip(order, answered)] == list(order[1:])
    assert {(s, t) for (s, t) in table if t != wire.ABORT} == set(zip(order, answered))


def test_the_round_kinds_differ_only_where_the_protocol_says():
    classic, reuse = server_transitions(False), server_transitions(True)
    assert set(classic) - set(reuse) == {(Stage.CONSISTENCY_CHECK, wire.CONSISTENCY_SIGNATURE),
                                         (Stage.UNMASKING, wire.UNMASK_SHARES)}
    assert set(reuse) - set(classic) == {(Stage.CONSISTENCY_CHECK, wire.CONSISTENCY_TAGS),
                                         (Stage.UNMASKING, wire.UNMASK_ROUND_KEYS)}
    assert set(client_transitions(False)) ^ set(client_transitions(True)) == {
        (Stage.UNMASKING, wire.UNMASK_REQUEST), (Stage.UNMASKING, wire.UNMASK_REQUEST_TAGS)}
    # The reveal adds one stage between the roster and the shares, and nothing else.
    for key_reuse in (False, True):
        plain, reveal = server_transitions(key_reuse), server_transitions(key_reuse, True)
        assert set(reveal) - set(plain) == {(Stage.GRAPH_REVEAL, wire.GRAPH_REVEAL), (Stage.GRAPH_REVEAL, CLOSE)}
        assert plain[(Stage.ADVERTISE_KEYS, CLOSE)] == Stage.SHARE_KEYS
        assert reveal[(Stage.ADVERTISE_KEYS, CLOSE)] == Stage.GRAPH_REVEAL
        assert reveal[(Stage.GRAPH_REVEAL, CLOSE)] == Stage.SHARE_KEYS
        client = client_transitions(key_reuse, True)
        assert client[(Stage.GRAPH_REVEAL, wire.ROSTER)] == Stage.SHARE_KEYS
        assert client[(Stage.SHARE_KEYS, wire.GRAPH_SEEDS)] == Stage.MASKED_INPUT_COLLECTION
        assert (Stage.SHARE_KEYS, wire.ROSTER) not in client


@MATRIX
def test_client_refuses_every_message_not_allowed_in_its_stage(kind, stage):
    rnd = round_with_client_at(stage, *kind)
    client = rnd.clients[1]
    frames = server_frames(rnd)
    table = client_transitions(*kind)
    refused = 0
    for mtype in ALL_TYPES:
        if (stage, mtype) in table:
            continue
        before = client_snapshot(client)
        with pytest.raises(InvalidTransition):
            client.receive(frames[mtype])
        after = client_snapshot(client)
        assert after[0] == before[0] and after[1] is before[1] and after[2:] == before[2:]
        refused += 1
    allowed = sum(1 for (s, _t) in table if s == stage)
    assert refused + allowed == len(ALL_TYPES)
    if stage.terminal:
        assert refused == len(ALL_TYPES)


@MATRIX
def test_server_refuses_every_message_not_collected_in_its_stage(kind, stage):
    rnd = round_with_server_at(stage, *kind)
    frames = client_frames(rnd)
    table = server_transitions(*kind)
    for mtype in ALL_TYPES:
        if (stage, mtype) in table:
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


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS.get)
def test_server_stages_close_in_protocol_order(kind):
    rnd = new_round(*kind)
    seen = [rnd.server.stage]
    while not rnd.server.stage.terminal:
        rnd.step()
        seen.append(rnd.server.stage)
    assert seen == list(Stage.order(kind[1]))
    assert all((s, CLOSE) in server_transitions(*kind) for s in Stage.order(kind[1])[:-1])
    assert all(c.stage == Stage.DONE for c in rnd.clients.values())


def test_client_without_input_refuses_the_relay_and_can_continue_after_set_input():
    rnd = Round(n=5, threshold=5, dim=4)
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
