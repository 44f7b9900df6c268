"""The shortcuts that keep a client's per-round work from growing with the roster give exactly what
the full computations give: one member's neighbours against the whole graph, the received roster's
digest against the re-encoded body, record-at-a-time decoding against the encoders, lazily built
verify keys against the round's outcome. And the server's set of keys in use refuses what the
pairwise comparison refused."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
from nacl.signing import SigningKey

from ztfl.agent.secagg import PeerKeys
from ztfl.protocol import graph, wire
from ztfl.protocol.errors import DuplicateMessage, MalformedMessage, UnknownSender
from ztfl.protocol.keys import EpochKeys
from ztfl.protocol.stages import Stage
from protocol_testkit import Round


@pytest.mark.parametrize("seed", range(12))
def test_own_neighbours_equal_the_full_graphs_entry(seed):
    rnd = random.Random(seed)
    for _ in range(8):
        n = rnd.choice([2, 3, 5, 8, 21, 40, 41, 100, 257])
        ids = rnd.sample(range(1, 0xFFFF), n)
        digest = rnd.randbytes(32)
        for k in {0, 2, 4, graph.secagg_plus_degree(n), max(0, n - 2 - (n % 2)), n - 1, n + 4}:
            if k % 2:
                continue
            full = graph.neighbours(ids, k, digest)
            for member in ids:
                assert graph.neighbours_of(member, ids, k, digest) == full[member]


def test_own_neighbours_of_a_non_member_is_refused():
    ids = list(range(1, 50))
    for k in (0, 10):
        with pytest.raises(ValueError, match="not a member"):
            graph.neighbours_of(99, ids, k, bytes(32))


def _roster(n: int, first: int = 1) -> wire.Roster:
    rng = random.Random(n)
    entries = tuple(wire.RosterEntry(c, rng.randbytes(32), rng.randbytes(32), rng.randbytes(64), rng.randbytes(32))
                    for c in range(first, first + n))
    return wire.Roster(wire.SERVER_ID, 3, 9, entries)


@pytest.mark.parametrize("n", [0, 1, 2, 300])
def test_decoded_roster_has_the_entries_and_the_digest_of_the_encoded_one(n):
    sent = _roster(n)
    frame = sent.encode(SigningKey(bytes(range(32))))
    got = wire.decode_frame(frame).message
    assert got == sent
    assert got.entries == sent.entries and all(isinstance(e.c_pk, bytes) for e in got.entries)
    assert got.digest() == sent.digest() == hashlib.sha256(sent.body()).digest()
    assert got.body_digest == hashlib.sha256(frame[wire.HEADER_BYTES:-wire.SIGNATURE_BYTES]).digest()
    assert got.body() == sent.body()
    # The signed server frame of a key-reuse round decodes to the same roster too.
    tagged = wire.decode_frame(sent.encode_for({1: bytes(32)})).message
    assert tagged == sent and tagged.digest() == sent.digest()


def test_roster_decoding_still_refuses_what_it_refused():
    body = _roster(5).body()
    for bad, why in [(body[:-1], "do not match"), (body + b"\0", "do not match"),
                     (body[:2] + b"\1\0" + body[4:], "reserved"),
                     (b"\xff\xff\0\0" + body[4:], "do not match")]:
        with pytest.raises(MalformedMessage, match=why):
            wire.Roster.parse(0, 3, 9, bad)
    swapped = body[:4] + body[4 + wire.ROSTER_ENTRY:4 + 2 * wire.ROSTER_ENTRY] + body[4:4 + wire.ROSTER_ENTRY] \
        + body[4 + 2 * wire.ROSTER_ENTRY:]
    with pytest.raises(MalformedMessage, match="ascending"):
        wire.Roster.parse(0, 3, 9, swapped)


def test_unmask_request_and_tag_lists_decode_as_encoded():
    rng = random.Random(4)
    sigs = tuple((c, rng.randbytes(64)) for c in range(2, 1900, 2))
    request = wire.UnmaskRequest(0, 3, 9, sigs, (1, 5, 7))
    got = wire.decode_frame(request.encode(SigningKey(bytes(32)))).message
    assert got == request and got.signatures == sigs and got.dropped == (1, 5, 7)
    body = request.body()
    with pytest.raises(MalformedMessage, match="ascending"):
        wire.UnmaskRequest.parse(0, 3, 9, body[:4] + body[4 + 66:4 + 132] + body[4:4 + 66] + body[4 + 132:])
    with pytest.raises(MalformedMessage, match="do not match"):
        wire.UnmaskRequest.parse(0, 3, 9, body[:-1])
    tags = tuple((c, rng.randbytes(16)) for c in (3, 4, 9))
    for msg in (wire.UnmaskRequestTags(0, 3, 9, tags, (2,)), wire.ConsistencyTags(5, 3, 9, tags)):
        assert type(msg).parse(msg.sender, 3, 9, msg.body()) == msg
    tagged = wire.decode_frame(wire.Abort(0, 3, 9).encode_for({c: bytes(32) for c in range(1, 500)}))
    assert [c for c, _ in tagged.tags] == list(range(1, 500))


def _advert(sender: int, c_pk: bytes, s_pk: bytes, rnd: Round) -> bytes:
    msg = wire.AdvertiseKeys(sender, rnd.server.epoch, rnd.server.round_id, rnd.server.config_digest, c_pk, s_pk)
    return msg.encode(rnd.cohort.identities[sender])


def test_server_refuses_a_key_already_in_use_and_changes_nothing():
    rnd = Round(n=5, threshold=4)
    keys = {c: EpochKeys.generate(1) for c in rnd.ids}
    rnd.server.receive(_advert(1, keys[1].c_pk, keys[1].s_pk, rnd))
    for c_pk, s_pk in [(keys[1].c_pk, keys[2].s_pk), (keys[2].c_pk, keys[1].c_pk), (keys[1].s_pk, keys[2].s_pk),
                       (keys[2].c_pk, keys[2].c_pk)]:
        with pytest.raises(DuplicateMessage, match="already in use"):
            rnd.server.receive(_advert(2, c_pk, s_pk, rnd))
    assert set(rnd.server.adverts) == {1} and rnd.server.keys_in_use == {keys[1].c_pk, keys[1].s_pk}
    rnd.server.receive(_advert(2, keys[2].c_pk, keys[2].s_pk, rnd))
    assert set(rnd.server.adverts) == {1, 2}


def test_server_refuses_equal_keys_in_the_first_advert_too():
    """c_pk == s_pk is refused whoever advertises first: every client would refuse the roster."""
    rnd = Round(n=5, threshold=4)
    key = EpochKeys.generate(1).c_pk
    with pytest.raises(DuplicateMessage):
        rnd.server.receive(_advert(1, key, key, rnd))
    assert not rnd.server.adverts and not rnd.server.keys_in_use


def test_peer_keys_build_only_the_keys_a_client_uses_and_the_round_is_exact():
    rnd = Round(n=60, threshold=9, neighbors=12)
    raw = {c: bytes(k) for c, k in rnd.cohort.directory.items()}
    for client in rnd.clients.values():
        client.directory = PeerKeys(dict(raw))
    result = rnd.run({Stage.MASKED_INPUT_COLLECTION: {7, 30}})
    survivors = sorted(set(rnd.ids) - {7, 30})
    assert list(result.survivors) == survivors
    np.testing.assert_array_equal(result.sums, rnd.expected(survivors)[0])
    for c, client in rnd.clients.items():
        # The server, the neighbours (roster entries) and its group's consistency signers.
        used = {wire.SERVER_ID} | client._state.neighbours | {c}
        assert client.directory.built <= len(used) < 15, (c, client.directory.built)
        assert set(client.directory._built) <= used


def test_peer_keys_check_sizes_up_front_and_membership_builds_nothing():
    good = bytes(SigningKey(bytes(32)).verify_key)
    with pytest.raises(ValueError, match="31 bytes"):
        PeerKeys({0: good, 4: good[:31]})
    with pytest.raises(TypeError):
        PeerKeys({0: good, 4: good.hex()})
    keys = PeerKeys({0: good, 4: good})
    assert 4 in keys and 5 not in keys and len(keys) == 2 and sorted(keys) == [0, 4]
    assert keys.built == 0
    assert keys[4] == SigningKey(bytes(32)).verify_key and keys[4] is keys[4] and keys.built == 1
    with pytest.raises(KeyError):
        keys[5]


def test_client_names_the_first_bad_roster_entry():
    rnd = Round(n=5, threshold=4)
    rnd.step()
    roster_frame = rnd.to_clients[1]
    roster = wire.decode_frame(roster_frame).message
    entries = list(roster.entries)
    # Client 3 repeats client 2's key and an unenrolled id 9 comes later: the duplicate is named.
    entries[2] = wire.RosterEntry(3, entries[1].c_pk, entries[2].s_pk, entries[2].signature)
    entries[4] = wire.RosterEntry(9, entries[4].c_pk, entries[4].s_pk, entries[4].signature)
    bad = wire.Roster(0, roster.epoch, roster.round_id, tuple(entries)).encode(rnd.cohort.server_identity)
    with pytest.raises(DuplicateMessage, match="client 3"):
        rnd.clients[1].receive(bad)
    entries[2] = roster.entries[2]
    bad = wire.Roster(0, roster.epoch, roster.round_id, tuple(entries)).encode(rnd.cohort.server_identity)
    with pytest.raises(UnknownSender, match="unenrolled client 9"):
        rnd.clients[1].receive(bad)
    assert rnd.clients[1].receive(roster_frame) is not None      # refusals changed nothing
