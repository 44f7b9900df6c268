"""Session-authenticated frames and pairwise consistency tags of key-reuse rounds
(docs/protocol.md 1.8).

An Ed25519 verification costs a board tens of milliseconds; an HMAC a few microseconds. In a
key-reuse round the client and the server share a session key per set of epoch keys,

    G_pk   = the server's Ed25519 identity key mapped to Curve25519 (RFC 7748 birational map)
    akey_u = HKDF(X25519(c_sk_u, G_pk), "ztfl/secagg/v1/session" || u16 u || u32 epoch || c_pk_u, 32)

and most frames carry `HMAC-SHA256(akey_u, header || SHA-256(body))[:16]` instead of a
signature. Survivors prove the survivor set to each other with pairwise tags under a key
derived from their epoch key, which the server never holds.
"""
import struct

from ztfw import ed25519, x25519
from ztfw.hmac256 import hkdf as _hkdf, hmac_sha256
from ztfw.secagg_errors import KeyAgreementError

P = 2 ** 255 - 19
TAG_BYTES = 16
INFO_SESSION = b"ztfl/secagg/v1/session"
INFO_CONSISTENCY = b"ztfl/secagg/v1/pairwise-consistency"
ZERO_SALT = bytes(32)


def hkdf(ikm, info, length):
    return _hkdf(ikm, ZERO_SALT, info, length)


def ed25519_pk_to_x25519(public):
    """u = (1 + y) / (1 - y) mod p of an Ed25519 public key, refusing what libsodium's
    crypto_sign_ed25519_pk_to_curve25519 refuses: a non-canonical encoding or a point off the
    curve, a point of small order (the neutral element among them), a point outside the
    prime-order subgroup."""
    try:
        point = ed25519.decode_point(public)
    except ed25519.SignatureError as e:
        raise KeyAgreementError("server identity key: %s" % e)
    if ed25519.has_small_order(point):
        raise KeyAgreementError("server identity key is a point of small order")
    if not ed25519.in_prime_order_subgroup(point):
        raise KeyAgreementError("server identity key is outside the prime-order subgroup")
    y = point[1]
    one_minus_y = (1 - y) % P
    # pow(a, -1, m) is 0 on MicroPython: Fermat inverse.
    u = (1 + y) * pow(one_minus_y, P - 2, P) % P
    return u.to_bytes(32, "little")


def session_key(c_sk, c_pk, server_public, client_id, epoch):
    """akey_u: one X25519 with the server's mapped identity key, then HKDF."""
    try:
        shared = x25519.shared_secret(c_sk, ed25519_pk_to_x25519(server_public))
    except x25519.X25519Error as e:
        raise KeyAgreementError("session key agreement failed: %s" % e)
    return hkdf(shared, INFO_SESSION + struct.pack("<HI", client_id, epoch) + bytes(c_pk), 32)


def frame_tag(akey, head, body_digest):
    """The session tag of a frame: HMAC over header || SHA-256(body), first 16 bytes."""
    return hmac_sha256(akey, bytes(head) + bytes(body_digest))[:TAG_BYTES]


def consistency_key(epoch_key, round_id):
    """vkey_uv of one round, from the pair's epoch key (never held by the server)."""
    return hkdf(epoch_key, INFO_CONSISTENCY + struct.pack("<I", round_id), 32)


def consistency_tag(vkey, signer, statement):
    """tag_signer->peer over the survivor statement; the signer's id stops a reflected tag."""
    return hmac_sha256(vkey, struct.pack("<H", signer) + bytes(statement))[:TAG_BYTES]


def same(a, b):
    """Tag comparison whose time does not depend on where the first difference is."""
    if len(a) != len(b):
        return False
    diff = 0
    for x, y in zip(a, b):
        diff |= x ^ y
    return diff == 0
