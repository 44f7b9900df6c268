"""Key-reuse rounds with session-authenticated frames (docs/protocol.md 1.8, 2.7), from the
attacker's side: forged, missing, flipped, reflected and replayed tags, frames in the wrong
authentication mode, the other round kind's messages; and whole rounds: a client lost at each
stage with exact aggregates, what a later round costs a client, the roster-entry cache, re-keying."""
from __future__ import annotations

import numpy as np
import pytest

from ztfl.protocol import session, wire
from ztfl.protocol.config import RoundConfig
from ztfl.protocol.epochs import ClientKeyring, EpochPolicy, EpochSchedule, RekeyReason
from ztfl.protocol.errors import (BadSignature, ConsistencyViolation, DuplicateMessage, InvalidTransition,
                             KeyAgreementError, MalformedMessage, RoundAborted, UnknownSender, WrongRound)
from ztfl.protocol.keys import EpochKeys
from ztfl.protocol.simulate import Cohort, expected_sums, run_round
from ztfl.protocol.stages import Stage
from protocol_testkit import Round
from test_protocol_hostile import assert_client_refuses, assert_server_refuses


def reuse_round(round_id=7, cohort=None, n=5, threshold=4, **kw) -> Round:
    return Round(n=n, threshold=threshold, dim=6, round_id=round_id, cohort=cohort, key_reuse=True, **kw)


def at(rnd: Round, stage: Stage, drop=()) -> Round:
    while rnd.server.stage != stage:
        rnd.step(drop=drop)
    return rnd


def akey(rnd: Round, c: int) -> bytes:
    return rnd.clients[c]._session_key()


def message(frame: bytes) -> wire.Message:
    return wire.decode_frame(frame).message


def assert_exact(rnd: Round, result):
    assert result is not None, rnd.server.abort_reason
    expected, weight = rnd.expected(result.survivors)
    assert np.array_equal(result.sums, expected) and result.total_weight == weight


# ------------------------------------------------------------------ session key
def test_client_and_server_derive_the_same_session_key_from_either_side():
    rnd = at(reuse_round(), Stage.SHARE_KEYS)
    for c in rnd.ids:
        assert rnd.server.akeys[c] == akey(rnd, c)
    assert len({akey(rnd, c) for c in rnd.ids}) == len(rnd.ids)
    # One X25519 per set of keys: the second ask is served from the keys.
    keys = rnd.clients[1].keys
    before = keys.agreements
    keys.session_key(1, rnd.cohort.server_identity.verify_key)
    assert keys.agreements == before


def test_the_session_key_depends_on_client_id_epoch_and_c_pk():
    server = Cohort.create([1]).server_identity
    keys = EpochKeys.generate(3)
    base = keys.session_key(1, server.verify_key)
    assert base != keys.session_key(2, server.verify_key)
    assert base != EpochKeys(4, keys.c_sk, keys.s_sk).session_key(1, server.verify_key)
    assert base != EpochKeys.generate(3).session_key(1, server.verify_key)
    g_sk = session.server_curve_secret(server)
    assert session.server_session_key(g_sk, keys.c_pk, 1, 3) == base


# ------------------------------------------------------------------ client side
def test_client_refuses_a_server_frame_in_the_wrong_authentication_mode():
    rnd = at(reuse_round(), Stage.SHARE_KEYS)
    roster = message(rnd.to_clients[1])
    with pytest.raises(BadSignature, match="wrong authentication mode"):
        rnd.clients[1].receive(roster.encode(rnd.cohort.server_identity))
    assert_client_refuses(rnd, 1, roster.encode(rnd.cohort.server_identity), BadSignature)
    # ROUND_CONFIG and ABORT stay signed: tagged, they are refused too.
    config = wire.RoundConfigMessage(0, 1, 7, rnd.config).encode_for({1: akey(rnd, 1)})
    fresh = reuse_round()
    with pytest.raises(BadSignature):
        fresh.clients[1].receive(config)
    abort = wire.Abort(0, 1, 7, wire.ABORT_TIMEOUT).encode_for({1: akey(rnd, 1)})
    assert_client_refuses(rnd, 1, abort, BadSignature)


def test_a_classic_round_refuses_tagged_frames():
    rnd = at(Round(n=5, threshold=4, dim=4), Stage.SHARE_KEYS)
    roster = message(rnd.to_clients[1])
    tagged = roster.encode_for({c: bytes(32) for c in rnd.ids})
    assert_client_refuses(rnd, 1, tagged, BadSignature)
    reply = rnd.clients[1].receive(rnd.to_clients[1])
    shares = message(reply)
    assert_server_refuses(rnd, shares.encode_tagged(bytes(32)), BadSignature)


def test_client_refuses_a_frame_without_its_own_tag_or_with_a_forged_one():
    rnd = at(reuse_round(), Stage.SHARE_KEYS)
    roster = message(rnd.to_clients[1])
    keys = {c: akey(rnd, c) for c in rnd.ids}
    missing = roster.encode_for({c: k for c, k in keys.items() if c != 1})
    assert_client_refuses(rnd, 1, missing, BadSignature)
    forged = roster.encode_for({**keys, 1: bytes(32)})
    assert_client_refuses(rnd, 1, forged, BadSignature)
    # Another client's session key does not make a tag for this one.
    borrowed = roster.encode_for({**keys, 1: keys[2]})
    assert_client_refuses(rnd, 1, borrowed, BadSignature)
    assert rnd.clients[1].receive(rnd.to_clients[1]) is not None


def test_every_flipped_bit_of_a_tagged_frame_is_refused_except_in_other_recipients_tags():
    rnd = at(reuse_round(), Stage.SHARE_KEYS)
    frame = rnd.to_clients[2]
    client = rnd.clients[2]
    tags_start = len(frame) - 5 * wire.RECIPIENT_TAG_ENTRY
    others = {tags_start + 18 * i + j for i in (0, 2, 3, 4) for j in range(18)}   # entries of 1, 3, 4, 5
    for i in range(len(frame)):
        if i in others:
            continue
        bad = bytearray(frame)
        bad[i] ^= 0x04
        with pytest.raises((MalformedMessage, BadSignature, UnknownSender)):
            client.receive(bytes(bad))
    assert client.stage == Stage.SHARE_KEYS
    # A client checks its own tag only: another recipient's broken tag is that recipient's business.
    bad = bytearray(frame)
    bad[max(others)] ^= 0x04
    assert client.receive(bytes(bad)) is not None


def test_a_verbatim_frame_of_another_round_is_refused():
    first = reuse_round()
    first.run()
    second = at(reuse_round(round_id=8, cohort=first.cohort), Stage.SHARE_KEYS)
    old_roster = first.history[Stage.SHARE_KEYS][1]
    # Same keys, so the old tag still verifies: the round id in the header refuses it.
    assert_client_refuses(second, 1, old_roster, WrongRound)


def unmask_stage(drop_after_sharing=(5,), round_id=7, cohort=None) -> Round:
    rnd = reuse_round(round_id=round_id, cohort=cohort)
    rnd.step()
    rnd.step()
    rnd.step(drop=set(drop_after_sharing))
    rnd.step(drop=set(drop_after_sharing))
    assert rnd.server.stage == Stage.UNMASKING
    return rnd


def request_for(rnd: Round, c: int, tags, dropped=None) -> bytes:
    honest = message(rnd.to_clients[c])
    dropped = honest.dropped if dropped is None else dropped
    return wire.UnmaskRequestTags(0, 1, rnd.server.round_id, tuple(tags), tuple(dropped)).encode_for(
        {c: akey(rnd, c)})


def own_tags(rnd: Round, c: int) -> dict[int, bytes]:
    return dict(rnd.server.consistency[c])


def test_client_refuses_a_reflected_consistency_tag():
    rnd = unmask_stage()
    honest = message(rnd.to_clients[1])
    # Client 1's own tag for 2, handed back to it as 2's tag for 1.
    reflected = [(v, own_tags(rnd, 1)[v] if v == 2 else t) for v, t in honest.tags]
    assert_client_refuses(rnd, 1, request_for(rnd, 1, reflected), BadSignature)
    assert rnd.clients[1].released == {"self_mask": frozenset(), "secret_key": frozenset()}


def test_client_refuses_consistency_tags_the_server_made_up():
    rnd = unmask_stage()
    honest = message(rnd.to_clients[1])
    # The server holds every session key but no pairwise epoch key.
    forged = [(v, session.frame_tag(rnd.server.akeys[v], b"survivors 1 2 3 4") if v == 3 else t)
              for v, t in honest.tags]
    assert_client_refuses(rnd, 1, request_for(rnd, 1, forged), BadSignature)


def test_client_refuses_consistency_tags_replayed_from_an_earlier_round():
    first = unmask_stage(round_id=7)
    old = message(first.to_clients[1])
    for c in first.ids[:4]:
        first.server.receive(first.clients[c].receive(first.to_clients[c]))
    first.server.close_stage()
    assert first.server.stage == Stage.DONE
    # Round 8, same keys, same survivors: the old tags name round 7 in key and statement.
    second = unmask_stage(round_id=8, cohort=first.cohort)
    assert message(second.to_clients[1]).dropped == old.dropped
    assert_client_refuses(second, 1, request_for(second, 1, old.tags), BadSignature)
    assert second.clients[1].receive(second.to_clients[1]) is not None


def test_client_refuses_tags_from_outside_its_surviving_neighbours():
    rnd = unmask_stage()
    honest = message(rnd.to_clients[1])
    extra = sorted(honest.tags + ((5, bytes(16)),))
    assert_client_refuses(rnd, 1, request_for(rnd, 1, extra), ConsistencyViolation)
    overlap = request_for(rnd, 1, honest.tags, dropped=(2, 5))
    assert_client_refuses(rnd, 1, overlap, ConsistencyViolation)


def test_fewer_than_t_confirmations_release_nothing():
    rnd = unmask_stage()
    honest = message(rnd.to_clients[1])
    few = request_for(rnd, 1, honest.tags[:rnd.config.threshold - 2])
    with pytest.raises(RoundAborted):
        rnd.clients[1].receive(few)
    assert rnd.clients[1].stage == Stage.ABORTED
    assert rnd.clients[1].released == {"self_mask": frozenset(), "secret_key": frozenset()}


def test_the_other_round_kinds_consistency_messages_are_refused():
    rnd = unmask_stage()
    honest = message(rnd.to_clients[1])
    classic_request = wire.UnmaskRequest(0, 1, 7, (), honest.dropped)
    assert_client_refuses(rnd, 1, classic_request.encode_for({1: akey(rnd, 1)}), InvalidTransition)
    assert_client_refuses(rnd, 1, classic_request.encode(rnd.cohort.server_identity), BadSignature)
    classic = at(Round(n=5, threshold=4, dim=4), Stage.UNMASKING)
    tags_request = wire.UnmaskRequestTags(0, 1, 7, (), ()).encode(classic.cohort.server_identity)
    assert_client_refuses(classic, 1, tags_request, InvalidTransition)


# ------------------------------------------------------------------ server side
def test_server_refuses_client_frames_in_the_wrong_mode_or_under_another_key():
    rnd = at(reuse_round(), Stage.SHARE_KEYS)
    reply = rnd.clients[1].receive(rnd.to_clients[1])
    shares = message(reply)
    assert_server_refuses(rnd, shares.encode(rnd.cohort.identities[1]), BadSignature)
    assert_server_refuses(rnd, shares.encode_tagged(akey(rnd, 2)), BadSignature)
    # Adverts stay signed: a tagged one is refused before any key could exist.
    fresh = reuse_round()
    advert = message(fresh.clients[1].receive(fresh.to_clients[1]))
    assert_server_refuses(fresh, advert.encode_tagged(bytes(32)), BadSignature)
    rnd.server.receive(reply)
    assert_server_refuses(rnd, reply, DuplicateMessage)


def test_server_refuses_an_advert_whose_c_pk_gives_no_session_key():
    rnd = reuse_round()
    advert = message(rnd.clients[1].receive(rnd.to_clients[1]))
    low = wire.AdvertiseKeys(1, 1, 7, advert.config_digest, bytes(32), advert.s_pk)
    assert_server_refuses(rnd, low.encode(rnd.cohort.identities[1]), KeyAgreementError)
    assert rnd.server.akeys == {}


def test_server_refuses_a_tagged_frame_from_a_client_without_an_advert():
    rnd = reuse_round()
    for c in (1, 2, 3, 4):
        rnd.server.receive(rnd.clients[c].receive(rnd.to_clients[c]))
    rnd.server.close_stage()
    shares = wire.ShareKeys(5, 1, 7, ()).encode_tagged(bytes(32))
    assert_server_refuses(rnd, shares, UnknownSender)


def test_server_refuses_consistency_tags_that_are_not_exactly_the_surviving_neighbours():
    rnd = at(reuse_round(), Stage.MASKED_INPUT_COLLECTION)
    rnd.step(drop={5})                   # 5 shared its keys, then its masked input never came
    reply = rnd.clients[1].receive(rnd.to_clients[1])
    tags = message(reply)
    assert [v for v, _ in tags.tags] == [2, 3, 4]
    key = akey(rnd, 1)
    short = wire.ConsistencyTags(1, 1, 7, tags.tags[:2]).encode_tagged(key)
    assert_server_refuses(rnd, short, ConsistencyViolation)
    to_dropped = wire.ConsistencyTags(1, 1, 7, tags.tags + ((5, bytes(16)),)).encode_tagged(key)
    assert_server_refuses(rnd, to_dropped, ConsistencyViolation)
    signature = wire.ConsistencySignature(1, 1, 7, bytes(64)).encode_tagged(key)
    assert_server_refuses(rnd, signature, InvalidTransition)
    rnd.server.receive(reply)


def test_each_client_gets_only_the_tags_addressed_to_it():
    rnd = at(reuse_round(), Stage.UNMASKING)
    for c in rnd.ids:
        frame = wire.decode_frame(rnd.to_clients[c])
        assert [cid for cid, _ in frame.tags] == [c]
        expected = [(v, own_tags(rnd, v)[c]) for v in rnd.ids if v != c]
        assert list(frame.message.tags) == expected


# ------------------------------------------------------------------ decoding
def _server_tagged(body_frame: bytes, trailer: bytes) -> bytes:
    body_len = int.from_bytes(body_frame[16:20], "little")
    return body_frame[:20 + body_len] + trailer


@pytest.mark.parametrize("trailer", [
    b"",                                                         # no count
    b"\x00\x00",                                                 # zero recipients
    b"\x01\x00" + b"\x01\x00" + bytes(15),                       # short tag
    b"\x01\x00" + b"\x01\x00" + bytes(17),                       # trailing byte
    b"\x02\x00" + b"\x02\x00" + bytes(16) + b"\x01\x00" + bytes(16),   # not ascending
    b"\x02\x00" + b"\x01\x00" + bytes(16) + b"\x01\x00" + bytes(16),   # duplicate
    b"\x01\x00" + b"\x00\x00" + bytes(16),                       # the server's id
    b"\x06\x00" + b"".join(i.to_bytes(2, "little") + bytes(16) for i in range(1, 7)),  # above max_clients
    b"\xff\xff" + b"\x01\x00" + bytes(16),                       # huge count, few bytes
])
def test_malformed_recipient_trailers_are_refused(trailer):
    rnd = at(reuse_round(), Stage.SHARE_KEYS)
    frame = _server_tagged(rnd.to_clients[1], trailer)
    assert_client_refuses(rnd, 1, frame, MalformedMessage)


def test_client_frame_tag_of_the_wrong_length_is_refused():
    rnd = at(reuse_round(), Stage.SHARE_KEYS)
    reply = rnd.clients[1].receive(rnd.to_clients[1])
    for bad in (reply[:-1], reply + b"\x00"):
        assert_server_refuses(rnd, bad, MalformedMessage)


# ------------------------------------------------------------------ whole rounds
# Six clients: one can be lost at any stage, even before advertising, and the rest still form a
# group the security floor accepts (5 members) with t = 5.
IDS = [1, 2, 3, 4, 5, 6]
CONFIG = RoundConfig.for_range(dim=30, max_clients=6, threshold=5, clip=4.0, key_reuse=True)


def epoch_rounds(rounds, drops=None, cohort=None, config=CONFIG):
    """Rounds of one key epoch; `drops[round] = {client: stage}`; returns the runs."""
    cohort = cohort or Cohort.create(IDS, epoch=3)
    keys = {c: EpochKeys.generate(3) for c in IDS}
    rng = np.random.default_rng(11)
    runs = []
    for r in rounds:
        inputs = {c: rng.normal(0, 0.5, config.dim) for c in IDS}
        weights = {c: int(rng.integers(1, 4)) for c in IDS} if config.max_weight > 1 else {}
        run = run_round(config, cohort, inputs, weights, drop_before=(drops or {}).get(r), round_id=r,
                        epoch_keys=keys)
        run.inputs, run.weights, run.keys = inputs, weights, keys
        runs.append(run)
    return runs


def exact(run, config=CONFIG) -> bool:
    if run.result is None:
        return False
    expected, weight = expected_sums(config, run.inputs, run.weights, run.result.survivors)
    return bool(np.array_equal(run.result.sums, expected) and run.result.total_weight == weight)


@pytest.mark.parametrize("stage", Stage.order()[:-1], ids=lambda s: s.value)
def test_a_client_lost_at_each_stage_of_a_later_key_reuse_round_leaves_an_exact_aggregate(stage):
    first, second = epoch_rounds([1, 2], drops={2: {4: stage}})
    assert exact(first) and exact(second)
    survivors = set(second.result.survivors)
    # Lost before its masked input: left out (its round keys unmask the others). After: counted.
    if Stage.order().index(stage) <= Stage.order().index(Stage.MASKED_INPUT_COLLECTION):
        assert 4 not in survivors
    else:
        assert 4 in survivors
    assert second.result.dropped == ((4,) if stage == Stage.MASKED_INPUT_COLLECTION else ())
    # Whatever the loss, no epoch secret left a client: nobody's keys need replacing.
    assert not any(second.clients[c].keys_exposed for c in IDS)
    assert all(not second.clients[c].released["secret_key"] for c in survivors)


def test_a_later_key_reuse_round_costs_a_client_one_verification_one_signature_and_no_x25519():
    first, second = epoch_rounds([1, 2])
    assert exact(first) and exact(second)
    for c in IDS:
        w1, w2 = first.clients[c].work, second.clients[c].work
        # First round: ROUND_CONFIG + the 5 neighbours' roster entries; the advert.
        assert (w1.ed25519_verify, w1.ed25519_sign) == (6, 1)
        # Later: ROUND_CONFIG only (the entries are cached with the keys); the advert.
        assert (w2.ed25519_verify, w2.ed25519_sign) == (1, 1)
        # 4 server frames checked + 4 replies tagged; 5 tags made + 5 checked.
        assert (w2.session_tags, w2.consistency_tags) == (8, 10)
    x25519 = [{c: r.keys[c].agreements for c in IDS} for r in (first, second)]
    assert x25519[0] == x25519[1] == {c: 3 + 2 * 5 for c in IDS}


def test_a_classic_round_costs_the_signatures_it_always_did():
    config = RoundConfig.for_range(dim=30, max_clients=6, threshold=5, clip=4.0)
    (run,) = epoch_rounds([1], config=config)
    assert exact(run, config)
    for c in IDS:
        w = run.clients[c].work
        # 5 server frames + 5 roster entries + 6 survivor signatures; the 5 replies + the statement.
        assert (w.ed25519_verify, w.ed25519_sign, w.session_tags) == (16, 6, 0)


def test_the_roster_cache_holds_keys_not_identities():
    first = reuse_round()
    first.run()
    keys1 = first.clients[1].keys
    assert {e[0] for e in keys1.verified_entries} == {2, 3, 4, 5}
    # Next round client 2 comes with new keys: its entry must be verified again, and a server that
    # pairs the new keys with the old signature is caught.
    first.cohort.epoch_keys[2] = EpochKeys.generate(1)
    second = at(reuse_round(round_id=8, cohort=first.cohort), Stage.SHARE_KEYS)
    roster = message(second.to_clients[1])
    old_signature = next(e.signature for e in message(first.history[Stage.SHARE_KEYS][1]).entries
                         if e.client_id == 2)
    entries = tuple(wire.RosterEntry(e.client_id, e.c_pk, e.s_pk, old_signature if e.client_id == 2 else e.signature)
                    for e in roster.entries)
    forged = wire.Roster(0, 1, 8, entries).encode_for({c: akey(second, c) for c in second.ids})
    assert_client_refuses(second, 1, forged, BadSignature)
    before = second.clients[1].work.ed25519_verify
    assert second.clients[1].receive(second.to_clients[1]) is not None
    assert second.clients[1].work.ed25519_verify == before + 1          # only client 2's entry


def test_rekeying_after_a_classic_round_starts_a_fresh_session_key_and_roster_cache():
    cohort = Cohort.create(IDS, epoch=1)
    rings = {c: ClientKeyring(EpochPolicy(max_rounds=10)) for c in IDS}
    schedule = EpochSchedule(EpochPolicy(max_rounds=10))
    classic = RoundConfig.for_range(dim=30, max_clients=6, threshold=5, clip=4.0)
    rng = np.random.default_rng(5)
    seen_keys = []
    for r, config in ((1, classic), (2, CONFIG), (3, CONFIG)):
        epoch = schedule.epoch_for(r, 0.0)
        keys = {c: rings[c].keys_for(epoch, r, 0.0, config.key_reuse) for c in IDS}
        inputs = {c: rng.normal(0, 0.5, config.dim) for c in IDS}
        run = run_round(config, cohort, inputs, round_id=r, epoch_keys=keys, revealed_keys=schedule.revealed_keys)
        run.inputs, run.weights = inputs, {}
        assert exact(run, config)
        for c in IDS:
            rings[c].finish(run.clients[c])
        schedule.finish(run.server)
        seen_keys.append(keys[1])
        if r == 2:
            assert run.clients[1].work.ed25519_verify == 6     # nothing cached from the classic round
    assert rings[1].rekeys == [(1, RekeyReason.FIRST), (2, RekeyReason.NO_REUSE)]
    assert seen_keys[0] is not seen_keys[1] and seen_keys[1] is seen_keys[2]
    assert seen_keys[0].verified_entries == set()              # a classic round caches nothing
    assert seen_keys[1].agreements == 3 + 2 * 5                # rounds 2 and 3: one key setup


def test_secagg_plus_key_reuse_round_tags_only_neighbours():
    ids = list(range(1, 11))
    config = RoundConfig.for_range(dim=20, max_clients=10, threshold=4, clip=4.0, neighbors=4,
                                   key_reuse=True, new_graph=True)
    cohort = Cohort.create(ids)
    rng = np.random.default_rng(8)
    inputs = {c: rng.normal(0, 0.5, 20) for c in ids}
    run = run_round(config, cohort, inputs, drop_before={6: Stage.MASKED_INPUT_COLLECTION})
    run.inputs, run.weights = inputs, {}
    assert exact(run, config)
    for c in run.result.survivors:
        tagged = [v for v, _ in run.server.consistency[c]]
        assert tagged == sorted(run.server.neighbours[c] & set(run.result.survivors))
        assert run.clients[c].work.ed25519_verify == 1 + 4     # ROUND_CONFIG + 4 neighbour entries
