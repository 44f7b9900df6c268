"""What a quote binds: the qualifying data H(nonce || round || protocol public keys).

    qualifying_data = SHA-256( nonce              (NONCE_BYTES = 32 bytes, issued by the gateway)
                             || u64_be(round_id)
                             || public_keys )     (the agent's protocol public keys for this
                                                   round, exactly the bytes it advertises)

The nonce and the round have fixed sizes, so the public keys need no length prefix: the
three parts cannot be shifted against each other. The same 32 bytes are the TPM quote's
extraData and, for software-rooted devices, what the Ed25519 device key signs (after the
domain label SOFTWARE_QUOTE_LABEL).
"""
from __future__ import annotations

import hashlib
import struct

NONCE_BYTES = 32
MIN_NONCE_BYTES = 16          # at least 128 bits
SOFTWARE_QUOTE_LABEL = b"ztfl/software-quote/v1\x00"


def qualifying_data(nonce: bytes, round_id: int, public_keys: bytes) -> bytes:
    if not MIN_NONCE_BYTES <= len(nonce) <= 64:
        raise ValueError(f"nonce must be {MIN_NONCE_BYTES}..64 bytes, got {len(nonce)}")
    if not 0 <= round_id < 2**64:
        raise ValueError(f"round id {round_id} outside 0..2^64-1")
    return hashlib.sha256(bytes(nonce) + struct.pack(">Q", round_id) + bytes(public_keys)).digest()


def software_quote_message(nonce: bytes, round_id: int, public_keys: bytes) -> bytes:
    """The bytes an Ed25519 device key signs in place of a TPM quote."""
    return SOFTWARE_QUOTE_LABEL + qualifying_data(nonce, round_id, public_keys)
