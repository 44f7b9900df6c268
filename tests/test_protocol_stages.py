"""The full stage-transition matrix of both state machines, for classic and key-reuse rounds: every
pair not in the round kind's table raises InvalidTransition and leaves the session exactly as it
was. Frames are authenticated the way the receiver expects (signed, or session-tagged in a
key-reuse round), so the transition check is what refuses them."""
from __future__ import annotations

import numpy as np
import pytest

from ztfl.protocol import wire
from ztfl.protocol.errors import InvalidTransition
from ztfl.protocol.stages import (CLIENT_TRANSITIONS, CLIENT_TRANSITIONS_KEY_REUSE, CLOSE, SERVER_TRANSITIONS,
                             Stage, client_transitions, server_transitions)
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
    ]
    return {m.TYPE: _encode(m, key, akey, rnd.config.key_reuse) for m in msgs}


def round_with_client_at(stage: Stage, key_reuse: bool = False) -> Round:
    rnd = Round(n=4, threshold=3, dim=3, round_id=ROUND, key_reuse=key_reuse)
    client = rnd.clients[1]
    if stage == Stage.ABORTED:
        client.receive(server_frames(rnd)[wire.ABORT])
        return rnd
    while client.stage != stage:
        rnd.step()
    return rnd


def round_with_server_at(stage: Stage, key_reuse: bool = False) -> Round:
    rnd = Round(n=4, threshold=3, dim=3, round_id=ROUND, key_reuse=key_reuse)
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
    return (server.stage, dict(server.adverts), dict(server.shares), set(server.masked_from),
            dict(server.consistency), dict(server.unmask), server.survivors, server.dropped, acc)


ALL_TYPES = sorted(wire.MESSAGE_TYPES)
ALL_STAGES = list(Stage)
KINDS = pytest.mark.parametrize("key_reuse", [False, True], ids=["classic", "key-reuse"])


@pytest.mark.parametrize("table, unmask", [(CLIENT_TRANSITIONS, wire.UNMASK_REQUEST),
                                           (CLIENT_TRANSITIONS_KEY_REUSE, wire.UNMASK_REQUEST_TAGS)])
def test_client_table_is_the_protocol_order(table, unmask):
    path = [table[(s, t)] for s, t in (
        (Stage.ADVERTISE_KEYS, wire.ROUND_CONFIG), (Stage.SHARE_KEYS, wire.ROSTER),
        (Stage.MASKED_INPUT_COLLECTION, wire.SHARES_RELAY), (Stage.CONSISTENCY_CHECK, wire.CONSISTENCY_REQUEST),
        (Stage.UNMASKING, unmask))]
    assert path == list(Stage.order()[1:])


def test_the_two_round_kinds_differ_only_in_the_consistency_check_and_unmasking():
    classic, reuse = server_transitions(False), server_transitions(True)
    assert set(classic) - set(reuse) == {(Stage.CONSISTENCY_CHECK, wire.CONSISTENCY_SIGNATURE),
                                         (Stage.UNMASKING, wire.UNMASK_SHARES)}
    assert set(reuse) - set(classic) == {(Stage.CONSISTENCY_CHECK, wire.CONSISTENCY_TAGS),
                                         (Stage.UNMASKING, wire.UNMASK_ROUND_KEYS)}
    assert set(client_transitions(False)) ^ set(client_transitions(True)) == {
        (Stage.UNMASKING, wire.UNMASK_REQUEST), (Stage.UNMASKING, wire.UNMASK_REQUEST_TAGS)}


@KINDS
@pytest.mark.parametrize("stage", ALL_STAGES, ids=lambda s: s.value)
def test_client_refuses_every_message_not_allowed_in_its_stage(stage, key_reuse):
    rnd = round_with_client_at(stage, key_reuse)
    client = rnd.clients[1]
    frames = server_frames(rnd)
    table = client_transitions(client.key_reuse)
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


@KINDS
@pytest.mark.parametrize("stage", ALL_STAGES, ids=lambda s: s.value)
def test_server_refuses_every_message_not_collected_in_its_stage(stage, key_reuse):
    rnd = round_with_server_at(stage, key_reuse)
    frames = client_frames(rnd)
    table = server_transitions(key_reuse)
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
