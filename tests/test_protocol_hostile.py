"""Malformed and hostile messages: each is refused with its own typed error and changes nothing."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from nacl.signing import SigningKey

from ztfl.protocol import shamir, wire
from ztfl.protocol.config import RoundConfig
from ztfl.protocol.server import ServerSession
from ztfl.protocol.errors import (BadSignature, ConsistencyViolation, DecryptionFailed, DuplicateMessage,
                                  InvalidTransition, KeyAgreementError, MalformedMessage, RoundAborted, ShamirError,
                                  ThresholdOverrideRefused, UnknownSender, UnsupportedVersion, WrongRound)
from ztfl.protocol.keys import EpochKeys
from ztfl.protocol.stages import Stage
from protocol_testkit import Round
from test_protocol_stages import client_snapshot, server_snapshot


def resign(frame: bytes, key: SigningKey, **changes) -> bytes:
    """Re-encode a frame's message with some fields changed, signed by `key`."""
    msg = wire.decode_frame(frame).message
    fields = {**msg.__dict__, **changes}
    return type(msg)(**fields).encode(key)


def assert_client_refuses(rnd, c, frame, error):
    client = rnd.clients[c]
    before = client_snapshot(client)
    with pytest.raises(error):
        client.receive(frame)
    after = client_snapshot(client)
    assert after[0] == before[0] and after[1] is before[1] and after[2:] == before[2:]


def assert_server_refuses(rnd, frame, error):
    before = repr(server_snapshot(rnd.server))
    with pytest.raises(error):
        rnd.server.receive(frame)
    assert repr(server_snapshot(rnd.server)) == before


@pytest.fixture
def rnd():
    return Round(n=5, threshold=4, dim=6)


def at(rnd, stage):
    while rnd.server.stage != stage:
        rnd.step()
    return rnd


# ------------------------------------------------------------------ framing
def test_every_truncation_of_a_frame_is_malformed(rnd):
    frame = rnd.to_clients[1]
    for cut in range(len(frame)):
        with pytest.raises(MalformedMessage):
            wire.decode_frame(frame[:cut])
    with pytest.raises(MalformedMessage):
        wire.decode_frame(frame + b"\x00")


def test_bad_magic_version_type_reserved_and_length_are_refused(rnd):
    frame = bytearray(rnd.to_clients[1])
    cases = [(0, b"X", MalformedMessage), (2, b"\x02", UnsupportedVersion), (3, b"\x7f", MalformedMessage),
             (6, b"\x02", MalformedMessage), (16, struct.pack("<I", 29), MalformedMessage),
             (16, struct.pack("<I", 2**31), MalformedMessage)]
    for offset, patch, error in cases:
        bad = bytearray(frame)
        bad[offset:offset + len(patch)] = patch
        with pytest.raises(error):
            rnd.clients[1].receive(bytes(bad))
    assert rnd.clients[1].stage == Stage.ADVERTISE_KEYS


def test_body_length_limit_is_checked_before_parsing(rnd):
    at(rnd, Stage.MASKED_INPUT_COLLECTION)
    big = wire.MaskedInput(1, 1, 7, 32, np.zeros(10_000, dtype=np.uint32)).encode(rnd.cohort.identities[1])
    assert_server_refuses(rnd, big, MalformedMessage)


def test_client_limits_frame_size_by_the_configured_roster(rnd):
    at(rnd, Stage.SHARE_KEYS)
    # A roster body larger than max_clients entries is refused before its entries are parsed.
    head = wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.ROSTER, 0, 0, 1, 7, 4 + 130 * 6)
    assert_client_refuses(rnd, 1, head + bytes(4 + 130 * 6 + 64), MalformedMessage)


def test_every_flipped_bit_of_a_signed_frame_is_refused(rnd):
    frame = rnd.to_clients[3]
    client = rnd.clients[3]
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x10
        before = client_snapshot(client)
        with pytest.raises((MalformedMessage, BadSignature, WrongRound, UnknownSender)):
            client.receive(bytes(bad))
        assert client_snapshot(client)[1] is before[1]
    assert client.stage == Stage.ADVERTISE_KEYS


# ------------------------------------------------------------------ signatures, rounds, senders
def test_client_refuses_a_configuration_with_the_threshold_override(rnd):
    lowered = RoundConfig(dim=3, threshold=2, max_clients=5, threshold_override=True)
    frame = wire.RoundConfigMessage(0, 1, 7, lowered).encode(rnd.cohort.server_identity)
    assert_client_refuses(rnd, 1, frame, ThresholdOverrideRefused)
    with pytest.raises(ThresholdOverrideRefused):        # nor does an honest server announce it
        ServerSession(lowered, rnd.cohort.server_identity, rnd.cohort.directory, 1, 7)
    assert rnd.clients[1].receive(rnd.to_clients[1]) is not None     # the safe configuration goes through


def test_client_refuses_a_frame_not_signed_by_the_server(rnd):
    forged = resign(rnd.to_clients[1], SigningKey.generate())
    assert_client_refuses(rnd, 1, forged, BadSignature)


def test_client_refuses_a_frame_of_another_round_or_epoch(rnd):
    key = rnd.cohort.server_identity
    assert_client_refuses(rnd, 1, resign(rnd.to_clients[1], key, round_id=8), WrongRound)
    assert_client_refuses(rnd, 1, resign(rnd.to_clients[1], key, epoch=2), WrongRound)


def test_client_refuses_frames_from_a_client_id(rnd):
    forged = resign(rnd.to_clients[1], rnd.cohort.identities[2], sender=2)
    assert_client_refuses(rnd, 1, forged, UnknownSender)


def test_server_refuses_bad_signature_unknown_sender_wrong_round(rnd):
    advert = rnd.clients[1].receive(rnd.to_clients[1])
    assert_server_refuses(rnd, resign(advert, rnd.cohort.identities[2]), BadSignature)
    assert_server_refuses(rnd, resign(advert, SigningKey.generate(), sender=77), UnknownSender)
    assert_server_refuses(rnd, resign(advert, rnd.cohort.identities[1], round_id=6), WrongRound)
    rnd.server.receive(advert)
    assert_server_refuses(rnd, advert, DuplicateMessage)


def test_server_refuses_a_duplicate_public_key(rnd):
    rnd.server.receive(rnd.clients[1].receive(rnd.to_clients[1]))
    own = wire.decode_frame(rnd.clients[2].receive(rnd.to_clients[2])).message
    stolen = wire.AdvertiseKeys(2, 1, 7, own.config_digest, own.c_pk, rnd.clients[1].keys.s_pk)
    assert_server_refuses(rnd, stolen.encode(rnd.cohort.identities[2]), DuplicateMessage)


def test_server_refuses_keys_advertised_for_another_configuration(rnd):
    advert = rnd.clients[1].receive(rnd.to_clients[1])
    assert_server_refuses(rnd, resign(advert, rnd.cohort.identities[1], config_digest=bytes(32)),
                          ConsistencyViolation)


# ------------------------------------------------------------------ roster
def test_client_refuses_a_roster_with_a_duplicate_key(rnd):
    at(rnd, Stage.SHARE_KEYS)
    roster = wire.decode_frame(rnd.to_clients[1]).message
    e2, e3 = roster.entries[1], roster.entries[2]
    # Client 3 (a colluder) signs an advert reusing client 2's key; the server relays it.
    fake = wire.AdvertiseKeys(3, 1, 7, rnd.config.digest(), e2.c_pk, e3.s_pk).encode(rnd.cohort.identities[3])
    entries = list(roster.entries)
    entries[2] = wire.RosterEntry(3, e2.c_pk, e3.s_pk, fake[-64:])
    forged = wire.Roster(0, 1, 7, tuple(entries)).encode(rnd.cohort.server_identity)
    assert_client_refuses(rnd, 1, forged, DuplicateMessage)


def test_client_refuses_a_roster_entry_with_a_forged_signature(rnd):
    at(rnd, Stage.SHARE_KEYS)
    roster = wire.decode_frame(rnd.to_clients[1]).message
    entries = list(roster.entries)
    entries[3] = wire.RosterEntry(4, entries[3].c_pk, EpochKeys.generate(1).s_pk, entries[3].signature)
    forged = wire.Roster(0, 1, 7, tuple(entries)).encode(rnd.cohort.server_identity)
    assert_client_refuses(rnd, 1, forged, BadSignature)


def test_client_refuses_a_roster_without_its_own_keys(rnd):
    at(rnd, Stage.SHARE_KEYS)
    roster = wire.decode_frame(rnd.to_clients[1]).message
    forged = wire.Roster(0, 1, 7, roster.entries[1:]).encode(rnd.cohort.server_identity)
    assert_client_refuses(rnd, 1, forged, ConsistencyViolation)


def test_client_refuses_a_low_order_key_in_the_roster(rnd):
    at(rnd, Stage.SHARE_KEYS)
    roster = wire.decode_frame(rnd.to_clients[1]).message
    # Client 4 (colluding with the server) signs an advert whose c_pk is a low-order point (0):
    # key agreement with it would give an all-zero key that anyone can compute.
    low = bytes(32)
    fake = wire.AdvertiseKeys(4, 1, 7, rnd.config.digest(), low, roster.entries[3].s_pk)
    entries = list(roster.entries)
    entries[3] = wire.RosterEntry(4, low, roster.entries[3].s_pk, fake.encode(rnd.cohort.identities[4])[-64:])
    forged = wire.Roster(0, 1, 7, tuple(entries)).encode(rnd.cohort.server_identity)
    assert_client_refuses(rnd, 1, forged, KeyAgreementError)


# ------------------------------------------------------------------ shares
def test_server_refuses_shares_sent_to_non_neighbours(rnd):
    at(rnd, Stage.SHARE_KEYS)
    reply = rnd.clients[1].receive(rnd.to_clients[1])
    msg = wire.decode_frame(reply).message
    assert_server_refuses(rnd, wire.ShareKeys(1, 1, 7, msg.shares[:-1]).encode(rnd.cohort.identities[1]),
                          ConsistencyViolation)
    rnd.server.receive(reply)
    assert_server_refuses(rnd, reply, DuplicateMessage)


def test_client_refuses_a_tampered_encrypted_share(rnd):
    at(rnd, Stage.MASKED_INPUT_COLLECTION)
    relay = wire.decode_frame(rnd.to_clients[2]).message
    first = relay.shares[0]
    ct = bytearray(first.ciphertext)
    ct[40] ^= 1
    shares = (wire.EncryptedShare(first.peer, bytes(ct)),) + relay.shares[1:]
    forged = wire.SharesRelay(0, 1, 7, shares).encode(rnd.cohort.server_identity)
    assert_client_refuses(rnd, 2, forged, DecryptionFailed)
    # A share moved to another sender's slot fails too: the associated data names the sender.
    swapped = (wire.EncryptedShare(relay.shares[1].peer, first.ciphertext),
               wire.EncryptedShare(first.peer, relay.shares[1].ciphertext))
    swapped = tuple(sorted(swapped, key=lambda s: s.peer)) + relay.shares[2:]
    forged = wire.SharesRelay(0, 1, 7, swapped).encode(rnd.cohort.server_identity)
    assert_client_refuses(rnd, 2, forged, DecryptionFailed)
    assert rnd.clients[2].receive(rnd.to_clients[2]) is not None


def test_client_refuses_a_relayed_share_from_a_non_neighbour():
    rnd = Round(n=10, threshold=4, dim=3, neighbors=4)
    at(rnd, Stage.MASKED_INPUT_COLLECTION)
    relay = wire.decode_frame(rnd.to_clients[1]).message
    stranger = next(c for c in rnd.ids if c != 1 and c not in rnd.server.neighbours[1])
    shares = tuple(sorted(relay.shares + (wire.EncryptedShare(stranger, relay.shares[0].ciphertext),),
                          key=lambda s: s.peer))
    forged = wire.SharesRelay(0, 1, 7, shares).encode(rnd.cohort.server_identity)
    assert_client_refuses(rnd, 1, forged, ConsistencyViolation)


# ------------------------------------------------------------------ masked input
def test_server_refuses_masked_input_of_the_wrong_shape(rnd):
    at(rnd, Stage.MASKED_INPUT_COLLECTION)
    key = rnd.cohort.identities[1]
    short = wire.MaskedInput(1, 1, 7, 32, np.zeros(rnd.config.words - 1, dtype=np.uint32)).encode(key)
    assert_server_refuses(rnd, short, ConsistencyViolation)
    wide = wire.MaskedInput(1, 1, 7, 64, np.zeros(rnd.config.words, dtype=np.uint64)).encode(key)
    assert_server_refuses(rnd, wide, ConsistencyViolation)
    good = rnd.clients[1].receive(rnd.to_clients[1])
    body_len = struct.unpack_from("<I", good, 16)[0]
    lying = bytearray(good)
    lying[20:24] = struct.pack("<I", rnd.config.words + 1)   # count disagrees with the body
    with pytest.raises(MalformedMessage):
        wire.decode_frame(bytes(lying))
    assert body_len == 8 + 4 * rnd.config.words
    rnd.server.receive(good)
    assert_server_refuses(rnd, good, DuplicateMessage)


def test_server_refuses_masked_input_from_a_client_that_did_not_share(rnd):
    rnd.step()
    rnd.step(drop={5})
    frame = wire.MaskedInput(5, 1, 7, 32, np.zeros(rnd.config.words, dtype=np.uint32))
    assert_server_refuses(rnd, frame.encode(rnd.cohort.identities[5]), UnknownSender)


# ------------------------------------------------------------------ consistency and unmasking
def test_client_refuses_survivor_sets_that_grow_or_exclude_it(rnd):
    at(rnd, Stage.CONSISTENCY_CHECK)
    key = rnd.cohort.server_identity
    grown = wire.ConsistencyRequest(0, 1, 7, (1, 2, 3, 4, 5, 6)).encode(key)
    assert_client_refuses(rnd, 1, grown, ConsistencyViolation)
    without_me = wire.ConsistencyRequest(0, 1, 7, (2, 3, 4, 5)).encode(key)
    assert_client_refuses(rnd, 1, without_me, ConsistencyViolation)


def test_server_refuses_a_consistency_signature_over_another_set(rnd):
    at(rnd, Stage.CONSISTENCY_CHECK)
    statement = wire.survivors_statement(rnd.config.digest(), 1, 7, (1, 2, 3, 4))
    sig = rnd.cohort.identities[1].sign(statement).signature
    frame = wire.ConsistencySignature(1, 1, 7, sig).encode(rnd.cohort.identities[1])
    assert_server_refuses(rnd, frame, BadSignature)


def unmask_stage(drop_after_sharing=(5,)):
    rnd = Round(n=5, threshold=4, dim=6)
    rnd.step()
    rnd.step()
    rnd.step(drop=set(drop_after_sharing))     # these send no masked input
    rnd.step()
    assert rnd.server.stage == Stage.UNMASKING
    return rnd


def test_client_refuses_overlapping_survivor_and_dropped_lists():
    rnd = unmask_stage()
    request = wire.decode_frame(rnd.to_clients[1]).message
    forged = wire.UnmaskRequest(0, 1, 7, request.signatures, (2, 5)).encode(rnd.cohort.server_identity)
    assert_client_refuses(rnd, 1, forged, ConsistencyViolation)
    assert rnd.clients[1].released == {"self_mask": frozenset(), "secret_key": frozenset()}


def test_client_refuses_unmask_requests_with_forged_or_too_few_signatures():
    rnd = unmask_stage()
    request = wire.decode_frame(rnd.to_clients[1]).message
    key = rnd.cohort.server_identity
    sigs = list(request.signatures)
    sigs[1] = (sigs[1][0], sigs[0][1])
    assert_client_refuses(rnd, 1, wire.UnmaskRequest(0, 1, 7, tuple(sigs), request.dropped).encode(key),
                          BadSignature)
    outsider = request.signatures + ((5, request.signatures[0][1]),)
    assert_client_refuses(rnd, 1, wire.UnmaskRequest(0, 1, 7, outsider, request.dropped).encode(key),
                          ConsistencyViolation)
    few = wire.UnmaskRequest(0, 1, 7, request.signatures[:3], request.dropped).encode(key)
    with pytest.raises(RoundAborted):
        rnd.clients[1].receive(few)
    assert rnd.clients[1].stage == Stage.ABORTED
    assert rnd.clients[1].released == {"self_mask": frozenset(), "secret_key": frozenset()}


def test_client_releases_one_share_kind_per_peer():
    rnd = unmask_stage()
    reply = wire.decode_frame(rnd.clients[1].receive(rnd.to_clients[1])).message
    assert [o for o, _ in reply.self_mask_shares] == [1, 2, 3, 4]
    assert [o for o, _ in reply.secret_key_shares] == [5]
    # A second request (even a well-formed one) gets nothing more.
    with pytest.raises(InvalidTransition):
        rnd.clients[1].receive(rnd.to_clients[1])


def test_server_refuses_unmask_shares_with_both_kinds_or_foreign_owners():
    rnd = unmask_stage()
    honest = wire.decode_frame(rnd.clients[1].receive(rnd.to_clients[1])).message
    key = rnd.cohort.identities[1]
    both = wire.UnmaskShares(1, 1, 7, honest.self_mask_shares,
                             ((4, honest.self_mask_shares[3][1]),) + honest.secret_key_shares)
    assert_server_refuses(rnd, both.encode(key), ConsistencyViolation)
    survivor_key = wire.UnmaskShares(1, 1, 7, honest.self_mask_shares, ((2, honest.self_mask_shares[1][1]),))
    assert_server_refuses(rnd, survivor_key.encode(key), ConsistencyViolation)


def test_a_tampered_secret_key_share_is_detected_not_summed():
    rnd = unmask_stage()
    for c in (1, 2, 3, 4):
        reply = rnd.clients[c].receive(rnd.to_clients[c])
        if c == 1:
            msg = wire.decode_frame(reply).message
            owner, y = msg.secret_key_shares[0]
            # (+1 would only move the secret by the Lagrange weight 4: bits X25519 clamps away.)
            bad = shamir.encode_y((shamir.decode_y(y) + 2**100) % shamir.PRIME)
            reply = wire.UnmaskShares(1, 1, 7, msg.self_mask_shares, ((owner, bad),)).encode(rnd.cohort.identities[1])
        rnd.server.receive(reply)
    out = rnd.server.close_stage()
    assert rnd.server.stage == Stage.ABORTED and rnd.server.result is None
    assert wire.decode_frame(out.broadcast).message.reason == wire.ABORT_RECONSTRUCTION_FAILED


def test_a_revealed_mask_key_blocks_self_mask_shares_for_the_rest_of_the_epoch():
    first = unmask_stage(drop_after_sharing=(5,))
    for c in (1, 2, 3, 4):
        first.server.receive(first.clients[c].receive(first.to_clients[c]))
    first.server.close_stage()
    assert first.server.stage == Stage.DONE
    assert first.clients[5].keys.s_pk in first.clients[1].keys.revealed_peer_keys
    # Next round, same epoch: client 5 comes back with the same (now public) mask key and survives.
    second = Round(n=5, threshold=4, dim=6, round_id=8, cohort=first.cohort)
    second.step(); second.step(); second.step(); second.step()
    before = client_snapshot(second.clients[1])
    with pytest.raises(ConsistencyViolation):
        second.clients[1].receive(second.to_clients[1])
    assert client_snapshot(second.clients[1])[2] == before[2]


def test_server_refuses_a_mask_key_revealed_earlier_in_the_epoch():
    revealed: set[bytes] = set()
    first = unmask_stage(drop_after_sharing=(5,))
    first.server.revealed_keys = revealed
    for c in (1, 2, 3, 4):
        first.server.receive(first.clients[c].receive(first.to_clients[c]))
    first.server.close_stage()
    assert revealed == {first.clients[5].keys.s_pk}
    second = Round(n=5, threshold=4, dim=6, round_id=8, cohort=first.cohort)
    second.server.revealed_keys = revealed
    assert_server_refuses(second, second.clients[5].receive(second.to_clients[5]), ConsistencyViolation)
    # After re-keying (a new epoch) the client is welcome again.
    third = Round(n=5, threshold=4, dim=6, epoch=2, round_id=1)
    third.server.revealed_keys = revealed
    third.server.receive(third.clients[5].receive(third.to_clients[5]))
    assert 5 in third.server.adverts


def test_peek_reads_the_routing_header_only(rnd):
    frame = rnd.to_clients[1]
    head = wire.peek(frame)
    assert (head.type, head.sender, head.epoch, head.round_id) == (wire.ROUND_CONFIG, 0, 1, 7)
    with pytest.raises(MalformedMessage):
        wire.peek(frame[:wire.MIN_FRAME - 1])
    with pytest.raises(MalformedMessage):
        wire.peek(frame[:6] + b"\x02\x00" + frame[8:])        # neither signed nor tagged
    with pytest.raises(UnsupportedVersion):
        wire.peek(frame[:2] + b"\x09" + frame[3:])


def test_a_tampered_self_mask_share_is_detected_when_spare_shares_exist():
    rnd = Round(n=7, threshold=5, dim=6)
    rnd.step(); rnd.step(); rnd.step(); rnd.step()
    for c in rnd.ids:
        reply = rnd.clients[c].receive(rnd.to_clients[c])
        if c == 2:
            msg = wire.decode_frame(reply).message
            shares = list(msg.self_mask_shares)
            owner, y = shares[0]
            shares[0] = (owner, shamir.encode_y((shamir.decode_y(y) + 1) % shamir.PRIME))
            reply = wire.UnmaskShares(2, 1, 7, tuple(shares), msg.secret_key_shares).encode(rnd.cohort.identities[2])
        rnd.server.receive(reply)
    out = rnd.server.close_stage()
    assert rnd.server.stage == Stage.ABORTED and rnd.server.result is None
    assert wire.decode_frame(out.broadcast).message.reason == wire.ABORT_RECONSTRUCTION_FAILED


def test_reconstruct_checked_finds_one_bad_share_among_spares():
    secret = bytes(range(32))
    shares = shamir.split(secret, 3, [1, 2, 3, 4, 5])
    assert shamir.reconstruct_checked(shares, 3) == secret
    for i in range(5):
        bad = list(shares)
        bad[i] = shamir.Share(bad[i].x, (bad[i].y + 12345) % shamir.PRIME)
        with pytest.raises(ShamirError):
            shamir.reconstruct_checked(bad, 3)
