"""Session-authenticated frames in the firmware (docs/protocol.md 1.8), in real MicroPython,
against constructions made here with PyNaCl, `cryptography` and the standard library: the
server key's Curve25519 form, the session key, frame tags, multi-recipient trailers, pairwise
consistency tags; and every malformed or forged trailer refused with its error class."""
from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
import pytest
from nacl.bindings import (crypto_core_ed25519_add, crypto_scalarmult, crypto_scalarmult_base,
                           crypto_sign_ed25519_pk_to_curve25519)
from nacl.signing import SigningKey

from ztfl.firmware_tools.micropython_host import run_json

P = 2 ** 255 - 19

_EVAL = r"""
import sys, json
from binascii import hexlify, unhexlify
from ztfw import session_auth, secagg_keys
from ztfw import secagg_wire as wire
from ztfw.secagg_errors import ProtocolError

def u(s):
    return unhexlify(s)

def h(b):
    return hexlify(b).decode()

d = json.loads(sys.stdin.read())
out = {"curve": [], "frames": []}
for pk in d["server_keys"]:
    try:
        out["curve"].append(h(session_auth.ed25519_pk_to_x25519(u(pk))))
    except ProtocolError as e:
        out["curve"].append(type(e).__name__)
s = d["session"]
keys = secagg_keys.EpochKeys(s["epoch"], u(s["c_sk"]), bytes(range(32)))
akey = keys.session_key(s["client_id"], u(s["server_pk"]))
again = keys.session_key(s["client_id"], u(s["server_pk"]))
out["akey"] = h(akey)
out["agreements"] = keys.agreements          # 2 key pairs + 1 session agreement, cached after
out["client_frame"] = h(wire.encode_tagged_frame(s["mtype"], s["client_id"], s["epoch"], s["round"],
                                                 u(s["body"]), akey))
out["vkey"] = h(session_auth.consistency_key(u(s["ekey"]), s["round"]))
out["ctag"] = h(session_auth.consistency_tag(u(out["vkey"]), s["signer"], u(s["statement"])))
for f in d["frames"]:
    try:
        fr = wire.decode_frame(u(f["frame"]), 1 << 16, f["max_recipients"])
        if f["check"] == "tag":
            fr.check_tag(u(f["akey"]), f["holder"])
        else:
            fr.verify(u(f["public"]))
        out["frames"].append("ok")
    except ProtocolError as e:
        out["frames"].append(type(e).__name__ + ": " + str(e))
print(json.dumps(out))
"""


def _hkdf(ikm: bytes, info: bytes, n: int) -> bytes:
    return HKDF(SHA256(), n, bytes(32), info).derive(ikm)


def _tag(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:16]


def _header(mtype: int, sender: int, auth: int, epoch: int, rnd: int, body_len: int) -> bytes:
    return struct.pack("<2sBBHHIII", b"ZS", 1, mtype, sender, auth, epoch, rnd, body_len)


def _server_frame(mtype, body, keys: dict[int, bytes], epoch=9, rnd=4, ids=None, count=None) -> bytes:
    head = _header(mtype, 0, 1, epoch, rnd, len(body))
    signed = head + hashlib.sha256(body).digest()
    ids = sorted(keys) if ids is None else ids
    trailer = struct.pack("<H", len(ids) if count is None else count)
    trailer += b"".join(struct.pack("<H", i) + _tag(keys[i], signed) for i in ids)
    return head + body + trailer


def test_session_keys_tags_and_trailers_match_an_independent_construction():
    server = SigningKey(bytes(range(100, 132)))
    mixed = crypto_core_ed25519_add(bytes(server.verify_key), (P - 1).to_bytes(32, "little"))
    others = [SigningKey.generate() for _ in range(4)]
    c_sk = os.urandom(32)
    c_pk = crypto_scalarmult_base(c_sk)
    client_id, epoch, rnd = 3, 9, 4
    # The server's side of the agreement: X25519(G_sk, c_pk).
    shared = crypto_scalarmult(bytes(server.to_curve25519_private_key()), c_pk)
    akey = _hkdf(shared, b"ztfl/secagg/v1/session" + struct.pack("<HI", client_id, epoch) + c_pk, 32)
    body = os.urandom(37)
    ekey, statement = os.urandom(32), os.urandom(50)
    vkey = _hkdf(ekey, b"ztfl/secagg/v1/pairwise-consistency" + struct.pack("<I", rnd), 32)

    keys = {1: os.urandom(32), client_id: akey, 7: os.urandom(32)}
    roster_body = bytes(20)
    good = _server_frame(0x03, roster_body, keys)
    one = _server_frame(0x05, b"\x00" * 4, {client_id: akey})
    flipped = bytearray(good)
    flipped[-5] ^= 0x01            # the last recipient's tag: not ours, still accepted
    ours_flipped = bytearray(good)
    ours_flipped[-18 - 5] ^= 0x01  # this client's tag
    body_flipped = bytearray(good)
    body_flipped[21] ^= 0x01
    head0 = _header(0x03, 0, 0, epoch, rnd, 4)
    signed = head0 + bytes(4) + server.sign(head0 + hashlib.sha256(bytes(4)).digest()).signature
    frames = [
        (good, "tag", "ok"),
        (one, "tag", "ok"),
        (bytes(flipped), "tag", "ok"),
        (bytes(ours_flipped), "tag", "BadSignature: frame type 0x03 from 0: session tag does not verify"),
        (bytes(body_flipped), "tag", "BadSignature: frame type 0x03 from 0: session tag does not verify"),
        (_server_frame(0x03, roster_body, {1: keys[1], 7: keys[7]}), "tag",
         "BadSignature: frame type 0x03 from 0 carries no session tag for 3"),
        # The server reflecting a tag made for another client under this client's id.
        (_server_frame(0x03, roster_body, {client_id: keys[1]}), "tag",
         "BadSignature: frame type 0x03 from 0: session tag does not verify"),
        (signed, "tag", "BadSignature: frame type 0x03 from 0: wrong authentication mode (a signature, "
                        "session tags expected)"),
        (good, "signature", "BadSignature: frame type 0x03 from 0: wrong authentication mode (session tags, "
                            "a signature expected)"),
        (signed, "signature", "ok"),
        (_server_frame(0x03, roster_body, keys, count=0, ids=[]), "tag",
         "MalformedMessage: 0 session tags, expected 1..3"),
        (_server_frame(0x03, roster_body, {**keys, 9: os.urandom(32)}), "tag",
         "MalformedMessage: 4 session tags, expected 1..3"),
        (_server_frame(0x03, roster_body, keys, ids=[3, 1, 7]), "tag", "MalformedMessage: session tags: ids "
                                                                          "must be strictly ascending (duplicate or unsorted 1)"),
        (_server_frame(0x03, roster_body, keys, count=2), "tag", "MalformedMessage: frame is 96 bytes, header "
                                                                 "and tag count announce 78"),
        (_server_frame(0x03, roster_body, keys, count=4), "tag", "MalformedMessage: 4 session tags, expected 1..3"),
        (good[:-1], "tag", "MalformedMessage: frame is 95 bytes, header and tag count announce 96"),
        (good[:41], "tag", "MalformedMessage: frame is 41 bytes, too short for its tag count"),
        (good[:35], "tag", "MalformedMessage: frame of 35 bytes is shorter than header and authenticator"),
        (good[:6] + b"\x02\x00" + good[8:], "tag", "MalformedMessage: unknown authentication mode 2"),
    ]
    payload = {
        "server_keys": [bytes(server.verify_key).hex()] + [bytes(k.verify_key).hex() for k in others]
        + [bytes(32).hex(), (b"\x01" + bytes(31)).hex(), mixed.hex(), (P + 3).to_bytes(32, "little").hex()],
        "session": {"epoch": epoch, "c_sk": c_sk.hex(), "client_id": client_id, "server_pk": bytes(server.verify_key).hex(),
                    "mtype": 0x06, "round": rnd, "body": body.hex(), "ekey": ekey.hex(), "signer": 5,
                    "statement": statement.hex()},
        "frames": [{"frame": f.hex(), "check": check, "akey": akey.hex(), "holder": client_id, "max_recipients": 3,
                    "public": bytes(server.verify_key).hex()} for f, check, _ in frames],
    }
    out = run_json(_EVAL, payload)
    expected_curve = [bytes(k.verify_key.to_curve25519_public_key()).hex() for k in [server] + others]
    assert out["curve"][:5] == expected_curve
    # y = 0 is a point of order 4, y = 1 the neutral element; a key plus the point of order 2 is
    # outside the prime-order subgroup; y = p + 3 is a non-canonical encoding: all refused, as
    # libsodium refuses them.
    assert out["curve"][5:] == ["KeyAgreementError"] * 4
    for bad in (bytes(32), b"\x01" + bytes(31), mixed):
        with pytest.raises(RuntimeError):
            crypto_sign_ed25519_pk_to_curve25519(bad)
    assert out["akey"] == akey.hex()
    assert out["agreements"] == 3
    head = _header(0x06, client_id, 1, epoch, rnd, len(body))
    assert out["client_frame"] == (head + body + _tag(akey, head + hashlib.sha256(body).digest())).hex()
    assert out["vkey"] == vkey.hex()
    assert out["ctag"] == _tag(vkey, struct.pack("<H", 5) + statement).hex()
    assert out["frames"] == [want for _, _, want in frames]
