"""Key material of one client: the long-lived identity and the per-epoch X25519 pairs."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from nacl.signing import SigningKey

from protocol.kdf import x25519_public


@dataclass
class EpochKeys:
    """The two X25519 key pairs of one key epoch (docs/protocol.md, 1.2).

    `revealed_peer_keys` holds the s public keys of peers whose s secret this client helped
    reconstruct in this epoch: it will never release a self-mask share for such a key, since
    together they would unmask that peer's input.
    """
    epoch: int
    c_sk: bytes
    s_sk: bytes
    revealed_peer_keys: set[bytes] = field(default_factory=set)

    @property
    def c_pk(self) -> bytes:
        return x25519_public(self.c_sk)

    @property
    def s_pk(self) -> bytes:
        return x25519_public(self.s_sk)

    @classmethod
    def generate(cls, epoch: int, randbytes=os.urandom) -> "EpochKeys":
        return cls(epoch=epoch, c_sk=randbytes(32), s_sk=randbytes(32))


def new_identity() -> SigningKey:
    return SigningKey.generate()
