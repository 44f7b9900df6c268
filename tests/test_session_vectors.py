"""tests/vectors/session.json rechecked with independent constructions (the birational map written
out, SHA-512 clamping, `cryptography`'s X25519 and HKDF, the standard library's HMAC), and the
complete key-reuse round replayed byte for byte by fresh client and server sessions."""
from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.signing import SigningKey

from ztfl.protocol import errors, fixedpoint, wire
from ztfl.protocol.config import RoundConfig
from ztfl.protocol.server import ServerSession
from ztfl.protocol.stages import Stage
from ztfl.protocol.vectors import replay_client

VECTORS = json.loads((Path(__file__).resolve().parent / "vectors" / "session.json").read_text())
P = 2**255 - 19


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def hkdf(ikm: bytes, info: bytes, n: int) -> bytes:
    return HKDF(hashes.SHA256(), n, bytes(32), info).derive(ikm)


def x25519(sk: bytes, pk: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(sk).exchange(X25519PublicKey.from_public_bytes(pk))


def x25519_base(sk: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes_raw()


def tag16(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:16]


def test_server_identity_keys_map_to_curve25519_by_the_birational_map():
    for case in VECTORS["curve25519_conversion"]:
        seed, pk = h(case["ed25519_seed"]), h(case["ed25519_pk"])
        assert SigningKey(seed).verify_key.encode() == pk
        y = int.from_bytes(pk, "little") & ((1 << 255) - 1)
        u = (1 + y) * pow(1 - y, P - 2, P) % P
        assert u.to_bytes(32, "little") == h(case["curve25519_pk"])
        clamped = bytearray(hashlib.sha512(seed).digest()[:32])
        clamped[0] &= 248
        clamped[31] = (clamped[31] & 127) | 64
        assert bytes(clamped) == h(case["curve25519_sk"])
        assert x25519_base(bytes(clamped)) == h(case["curve25519_pk"])
    from ztfl.protocol.session import server_curve_public
    for case in VECTORS["curve25519_refused"]:
        with pytest.raises(getattr(errors, case["error"])):
            server_curve_public(h(case["ed25519_pk"]))


def test_session_key_is_hkdf_of_the_agreement_with_the_servers_curve_key():
    s = VECTORS["session_key"]
    server = VECTORS["curve25519_conversion"][0]
    assert x25519_base(h(s["c_sk"])) == h(s["c_pk"])
    shared = x25519(h(s["c_sk"]), h(server["curve25519_pk"]))
    assert shared == h(s["shared"]) == x25519(h(server["curve25519_sk"]), h(s["c_pk"]))
    info = b"ztfl/secagg/v1/session" + struct.pack("<HI", s["client"], s["epoch"]) + h(s["c_pk"])
    assert info == h(s["info"])
    assert hkdf(shared, info, 32) == h(s["akey"])


def test_client_tag_and_server_recipient_trailer():
    c = VECTORS["client_tag"]
    frame, head, body = h(c["frame"]), h(c["header"]), h(c["body"])
    assert frame == head + body + h(c["tag"]) and len(frame) == 20 + len(body) + 16
    assert struct.unpack_from("<H", head, 6)[0] == 1                       # auth = session tags
    assert h(c["signed"]) == head + hashlib.sha256(body).digest()
    assert tag16(h(c["akey"]), h(c["signed"])) == h(c["tag"])
    s = VECTORS["server_tags"]
    frame, head, body = h(s["frame"]), h(s["header"]), h(s["body"])
    ids = [r["id"] for r in s["recipients"]]
    trailer = struct.pack("<H", len(ids)) + b"".join(struct.pack("<H", r["id"]) + h(r["tag"]) for r in s["recipients"])
    assert frame == head + body + trailer and h(s["trailer"]) == trailer
    assert len(frame) == 20 + len(body) + 2 + 18 * len(ids) and ids == sorted(ids)
    for r in s["recipients"]:
        assert tag16(h(r["akey"]), head + hashlib.sha256(body).digest()) == h(r["tag"])
    decoded = wire.decode_frame(frame)
    for r in s["recipients"]:
        decoded.verify_recipient(r["id"], h(r["akey"]))


def test_pairwise_consistency_key_and_tags():
    p = VECTORS["pairwise_consistency"]
    shared = x25519(h(p["s_sk_u"]), h(p["s_pk_v"]))
    ekey = hkdf(shared, b"ztfl/secagg/v1/pairwise-epoch" + struct.pack("<HHI", p["u"], p["v"], p["epoch"]), 32)
    assert ekey == h(p["epoch_key"])
    info = b"ztfl/secagg/v1/pairwise-consistency" + struct.pack("<I", p["round"])
    vkey = hkdf(ekey, info, 32)
    assert info == h(p["info"]) and vkey == h(p["vkey"])
    assert tag16(vkey, struct.pack("<H", p["u"]) + h(p["statement"])) == h(p["tag_u_to_v"])
    assert tag16(vkey, struct.pack("<H", p["v"]) + h(p["statement"])) == h(p["tag_v_to_u"])
    assert p["tag_u_to_v"] != p["tag_v_to_u"]


def test_consistency_tags_and_unmask_request_tags_layouts():
    akey = h(VECTORS["session_key"]["akey"])
    for m in VECTORS["messages"]:
        body, frame = h(m["body"]), h(m["frame"])
        decoded = wire.decode_frame(frame)
        assert decoded.message.TYPE == m["type"] and decoded.message.body() == body
        if m["sender"] == 0:
            decoded.verify_recipient(m["to"], akey)
            n_tags, n_dropped = struct.unpack_from("<HH", body)
            assert len(body) == 4 + 18 * n_tags + 2 * n_dropped
        else:
            decoded.verify_tag(akey)
            count, reserved = struct.unpack_from("<HH", body)
            assert reserved == 0 and len(body) == 4 + 18 * count


ROUND = VECTORS["round"]


@pytest.mark.parametrize("client", [c["id"] for c in ROUND["clients"]])
def test_every_client_of_the_round_replays_byte_for_byte(client):
    entry = next(c for c in ROUND["clients"] if c["id"] == client)
    session = replay_client(ROUND, client, 0)
    for frame, reply in zip(entry["received"], entry["replies"]):
        out = session.receive(h(frame))
        assert (out.hex() if out is not None else None) == reply
    assert session.stage.value == entry["final_stage"]
    # Authenticated as the round kind demands: the advert signed, everything after it tagged.
    auths = [struct.unpack_from("<H", h(r), 6)[0] for r in entry["replies"]]
    assert auths == [0] + [1] * (len(auths) - 1)


def test_the_server_replays_the_round_and_sums_exactly():
    config = RoundConfig.decode(h(ROUND["config"]))
    assert config.key_reuse
    server_key = SigningKey(h(ROUND["server_identity_seed"]))
    directory = {c["id"]: SigningKey(h(c["identity_seed"])).verify_key for c in ROUND["clients"]}
    server = ServerSession(config, server_key, directory, ROUND["epoch"], ROUND["round"], workers=1)
    clients = ROUND["clients"]
    assert server.round_config().hex() == clients[0]["received"][0]
    for stage in range(len(Stage.order(config.reveals_graph)) - 1):
        for c in clients:
            if stage < len(c["replies"]):
                server.receive(h(c["replies"][stage]))
        out = server.close_stage()
        for c in clients:
            if stage + 1 < len(c["received"]):
                assert out.frame_for(c["id"]).hex() == c["received"][stage + 1]
    result = server.result
    assert list(result.survivors) == ROUND["survivors"] and list(result.dropped) == ROUND["dropped"]
    assert [int(w) for w in result.total] == ROUND["total"]
    plain = sum(fixedpoint.encode(np.array(c["input"]), c["weight"], config.frac_bits, config.clip_q, 32)
                .astype(np.uint64) for c in clients if c["id"] in ROUND["survivors"]) % (1 << 32)
    assert [int(w) for w in plain] == ROUND["total"]
    assert ROUND["total_weight"] == sum(c["weight"] for c in clients if c["id"] in ROUND["survivors"])


@pytest.mark.parametrize("case", VECTORS["refusals"], ids=lambda c: c["name"])
def test_each_hostile_frame_is_refused_with_its_error_and_changes_nothing(case):
    client = replay_client(ROUND, case["client"], case["after"])
    with pytest.raises(getattr(errors, case["error"])):
        client.receive(h(case["frame"]))
    entry = next(c for c in ROUND["clients"] if c["id"] == case["client"])
    if issubclass(getattr(errors, case["error"]), errors.RoundAborted):
        assert client.stage.value == "Aborted" and client.released["self_mask"] == frozenset()
        if case["error"].startswith("Reveal"):
            # Refused before any share was dealt, and no graph kept for the epoch.
            assert client.stage.value == "Aborted" and client._state.seed == b"" and client.keys.graph is None
        return
    # Unchanged: the honest frame of that point still gives the recorded reply.
    reply = client.receive(h(entry["received"][case["after"]]))
    assert reply.hex() == entry["replies"][case["after"]]


def test_the_refusals_cover_the_attacks_of_the_specification():
    names = " ".join(c["name"] for c in VECTORS["refusals"])
    for attack in ("signed_instead_of_tagged", "without_a_tag", "flipped_tag_bit", "reflecting",
                   "earlier_rounds_tags", "0x09", "semi_honest", "threshold_override", "threshold_below_the_floor",
                   "group_below_the_floor", "neighbours_below_the_floor", "missing_a_reveal", "wrong_reveal"):
        assert attack in names
