"""Key agreement and key derivation (docs/protocol.md, 1.1-1.2).

HKDF-SHA256 with a 32-byte zero salt everywhere; the info strings and their layouts are part of
the wire specification, so the firmware derives the same keys bit for bit.
"""
from __future__ import annotations

import struct

import hashlib
import hmac
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base

from ztfl.protocol.errors import KeyAgreementError

ZERO_SALT = bytes(32)
INFO_PAIRWISE_EPOCH = b"ztfl/secagg/v1/pairwise-epoch"
INFO_PAIRWISE_ROUND = b"ztfl/secagg/v1/pairwise-round"
INFO_SELF_MASK = b"ztfl/secagg/v1/self-mask"
INFO_SHARE_ENC = b"ztfl/secagg/v1/share-enc"
INFO_GRAPH = b"ztfl/secagg/v1/graph"


def hkdf(ikm: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-SHA256 with the zero salt (written out: it is called per peer per round,
    and the firmware implements exactly these lines)."""
    if not 1 <= length <= 255 * 32:
        raise ValueError("HKDF-SHA256 output length must be 1..8160 bytes")
    prk = hmac.digest(ZERO_SALT, ikm, hashlib.sha256)
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes((counter,)), hashlib.sha256)
        out += block
        counter += 1
    return out[:length]


def x25519(secret_key: bytes, public_key: bytes) -> bytes:
    """X25519 shared secret; the all-zero result (a low-order public key) is refused."""
    if len(secret_key) != 32 or len(public_key) != 32:
        raise KeyAgreementError("X25519 keys are 32 bytes")
    try:
        shared = crypto_scalarmult(secret_key, public_key)
    except RuntimeError as exc:  # libsodium refuses an all-zero result with nacl's RuntimeError
        raise KeyAgreementError(f"X25519 failed: {exc}") from exc
    if shared == bytes(32):
        raise KeyAgreementError("X25519 shared secret is zero (low-order public key)")
    return shared


def x25519_public(secret_key: bytes) -> bytes:
    return crypto_scalarmult_base(secret_key)


def _pair(u: int, v: int) -> bytes:
    return struct.pack("<HH", min(u, v), max(u, v))


def pairwise_epoch_key(shared: bytes, u: int, v: int, epoch: int) -> bytes:
    return hkdf(shared, INFO_PAIRWISE_EPOCH + _pair(u, v) + struct.pack("<I", epoch), 32)


def pairwise_round_key(epoch_key: bytes, round_id: int) -> bytes:
    return hkdf(epoch_key, INFO_PAIRWISE_ROUND + struct.pack("<I", round_id), 16)


def pairwise_mask_key(s_sk: bytes, peer_s_pk: bytes, me: int, peer: int, epoch: int,
                      round_id: int) -> bytes:
    """The AES-128 key of the pairwise mask between `me` and `peer` for one round."""
    shared = x25519(s_sk, peer_s_pk)
    return pairwise_round_key(pairwise_epoch_key(shared, me, peer, epoch), round_id)


def self_mask_key(seed: bytes, client_id: int, epoch: int, round_id: int) -> bytes:
    return hkdf(seed, INFO_SELF_MASK + struct.pack("<HII", client_id, epoch, round_id), 16)


def share_encryption_key(c_sk: bytes, peer_c_pk: bytes, me: int, peer: int, epoch: int) -> bytes:
    shared = x25519(c_sk, peer_c_pk)
    return hkdf(shared, INFO_SHARE_ENC + _pair(me, peer) + struct.pack("<I", epoch), 32)


def graph_key(roster_digest: bytes) -> bytes:
    return hkdf(roster_digest, INFO_GRAPH, 16)
