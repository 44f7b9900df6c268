"""Session authentication of key-reuse rounds (docs/protocol.md 1.8 and 2.7).

In a key-reuse round most frames carry HMAC tags instead of Ed25519 signatures:

* a session key `akey_u` per client u and set of epoch keys, agreed once between u's epoch key
  `c` and the server's identity key mapped to Curve25519, authenticates the frames between u and
  the server;
* a pairwise consistency key `vkey_uv` per round, derived from the pairwise epoch key of u and v
  (which the server never holds), lets a client check that its neighbours saw the same survivor
  set, where classic rounds exchange survivor signatures.

Everything here is a pure function of its inputs; the sessions keep the keys.
"""
from __future__ import annotations

import hashlib
import hmac
import struct

from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519, crypto_sign_ed25519_sk_to_curve25519
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from ztfl.protocol import kdf
from ztfl.protocol.errors import KeyAgreementError

TAG_BYTES = 16
INFO_SESSION = b"ztfl/secagg/v1/session"
INFO_PAIRWISE_CONSISTENCY = b"ztfl/secagg/v1/pairwise-consistency"


def server_curve_public(server_key: VerifyKey | bytes) -> bytes:
    """G_pk: the server's Ed25519 public key mapped to Curve25519, u = (1 + y) / (1 - y) mod p
    (RFC 7748 birational map; libsodium crypto_sign_ed25519_pk_to_curve25519)."""
    raw = server_key.encode() if isinstance(server_key, VerifyKey) else bytes(server_key)
    try:
        return crypto_sign_ed25519_pk_to_curve25519(raw)
    except (CryptoError, ValueError) as exc:   # libsodium refuses a non-canonical or small-order point
        raise KeyAgreementError(f"the server identity key has no Curve25519 form: {exc}") from exc


def server_curve_secret(identity: SigningKey) -> bytes:
    """G_sk: the first half of SHA-512 of the server's Ed25519 seed, clamped
    (libsodium crypto_sign_ed25519_sk_to_curve25519)."""
    return crypto_sign_ed25519_sk_to_curve25519(identity._signing_key)


def session_key(shared: bytes, client_id: int, epoch: int, c_pk: bytes) -> bytes:
    """akey_u = HKDF(X25519(c_sk_u, G_pk), "ztfl/secagg/v1/session" || u16 u || u32 epoch || c_pk_u, 32)."""
    return kdf.hkdf(shared, INFO_SESSION + struct.pack("<HI", client_id, epoch) + bytes(c_pk), 32)


def client_session_key(c_sk: bytes, c_pk: bytes, server_key: VerifyKey | bytes, client_id: int,
                       epoch: int) -> bytes:
    """The client's side: one X25519 of its epoch key c with G_pk."""
    return session_key(kdf.x25519(c_sk, server_curve_public(server_key)), client_id, epoch, c_pk)


def server_session_key(g_sk: bytes, c_pk: bytes, client_id: int, epoch: int) -> bytes:
    """The server's side: X25519(G_sk, c_pk_u) with the c_pk of u's signed ADVERTISE_KEYS."""
    return session_key(kdf.x25519(g_sk, c_pk), client_id, epoch, c_pk)


def frame_tag(akey: bytes, signed: bytes) -> bytes:
    """First 16 bytes of HMAC-SHA256(akey, header || SHA-256(body))."""
    return hmac.digest(akey, signed, hashlib.sha256)[:TAG_BYTES]


def consistency_key(epoch_key: bytes, round_id: int) -> bytes:
    """vkey_uv = HKDF(ekey_uv, "ztfl/secagg/v1/pairwise-consistency" || u32 round, 32)."""
    return kdf.hkdf(epoch_key, INFO_PAIRWISE_CONSISTENCY + struct.pack("<I", round_id), 32)


def consistency_tag(vkey: bytes, signer: int, statement: bytes) -> bytes:
    """tag_u->v: first 16 bytes of HMAC-SHA256(vkey_uv, u16 u || survivor statement). The signer's
    id in the MAC input makes u's tag for v differ from v's tag for u, so the server cannot hand a
    client its own tag back as its neighbour's."""
    return hmac.digest(vkey, struct.pack("<H", signer) + statement, hashlib.sha256)[:TAG_BYTES]


def tags_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
