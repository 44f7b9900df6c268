"""UNMASK_ROUND_KEYS and the key-reuse flag on the wire: exact sizes, ordering, typed refusals."""
from __future__ import annotations

import struct
from dataclasses import replace

import pytest
from nacl.signing import SigningKey

from ztfl.protocol import wire
from ztfl.protocol.config import RoundConfig
from ztfl.protocol.errors import ConfigurationError, MalformedMessage

KEY = SigningKey(bytes(range(32)))
SHARE = (5).to_bytes(33, "little")


def body_of(n_b, n_k, shares=(), keys=()):
    return struct.pack("<HH", n_b, n_k) + b"".join(struct.pack("<H", o) + y for o, y in shares) + \
        b"".join(struct.pack("<H", d) + k for d, k in keys)


def test_round_trip_and_exact_layout():
    msg = wire.UnmaskRoundKeys(3, 1, 2, ((1, SHARE), (3, SHARE)), ((4, b"k" * 16), (9, b"j" * 16)))
    frame = msg.encode(KEY)
    back = wire.decode_frame(frame).verify(KEY.verify_key)
    assert back == msg and len(msg.body()) == 4 + 2 * 35 + 2 * 18


@pytest.mark.parametrize("body", [
    body_of(1, 0),                                                      # count without entry
    body_of(0, 1, keys=((4, b"k" * 15),)),                              # short key
    body_of(0, 1, keys=((4, b"k" * 16),)) + b"x",                       # trailing byte
    body_of(0, 2, keys=((9, b"k" * 16), (4, b"k" * 16))),               # not ascending
    body_of(0, 2, keys=((4, b"k" * 16), (4, b"k" * 16))),               # duplicate
    body_of(1, 0, shares=((1, (2**256 + 297).to_bytes(33, "little")),)),  # outside the field
    body_of(0, 1, keys=((0, b"k" * 16),)),                              # the server's id
    body_of(0xFFFF, 0xFFFF),                                            # huge counts, no bytes
])
def test_malformed_bodies_are_refused(body):
    with pytest.raises(MalformedMessage):
        wire.UnmaskRoundKeys.parse(1, 1, 1, body)


def test_key_reuse_flag_round_trips_and_changes_the_digest():
    plain = RoundConfig.for_range(dim=10, max_clients=5, threshold=4)
    reuse = replace(plain, key_reuse=True)
    assert RoundConfig.decode(reuse.encode()) == reuse
    assert reuse.digest() != plain.digest()
    graph_round = replace(reuse, neighbors=4, new_graph=True)
    assert RoundConfig.decode(graph_round.encode()) == graph_round and graph_round.encode()[7] == 0x06
    unknown = bytearray(reuse.encode())
    unknown[7] |= 0x10
    with pytest.raises(MalformedMessage):
        RoundConfig.decode(bytes(unknown))
    # The new-graph flag means nothing without key reuse and a sparse graph: refused alone (a
    # ROUND_CONFIG frame carrying it is malformed).
    alone = bytearray(reuse.encode())
    alone[7] = 0x04
    with pytest.raises(ConfigurationError):
        RoundConfig.decode(bytes(alone))
    with pytest.raises(MalformedMessage):
        wire.RoundConfigMessage.parse(0, 1, 1, bytes(alone))
