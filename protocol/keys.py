"""Key material of one client: the long-lived identity and the per-epoch X25519 pairs.

The expensive part of a round for a small device is X25519. Within one key epoch the peers'
public keys do not change, so each agreement is done once and its HKDF output (the pairwise
epoch key, the share-encryption key) is kept here; every later round of the epoch only runs
HKDF over it with the round id (docs/protocol.md, 1.2).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from nacl.signing import SigningKey, VerifyKey

from ztfl.protocol import kdf, session
from ztfl.protocol.graph import FixedGraph


@dataclass
class EpochKeys:
    """The two X25519 key pairs of one key epoch (docs/protocol.md, 1.2).

    `revealed_peer_keys` holds the s public keys of peers whose s secret this client helped
    reconstruct: it will never release a self-mask share for such a key, since together they
    would unmask that peer's input. A keyring passes the same set to every EpochKeys it makes,
    so the memory outlives this client's own re-keying.

    `agreements` counts the X25519 operations these keys performed (public keys and shared
    secrets), which is what key reuse saves.

    Kept with the keys for key-reuse rounds (docs/protocol.md 1.8, 2.7) and gone with them: the
    session key with the server (one X25519 per set of keys), and `verified_entries`, the roster
    entries (id, identity key, c_pk, s_pk) whose signature this client already checked, so a
    neighbour presenting the same keys again is not verified again.
    """
    epoch: int
    c_sk: bytes
    s_sk: bytes
    revealed_peer_keys: set[bytes] = field(default_factory=set)
    agreements: int = 0
    uses: int = 0          # rounds these keys were handed out for (set by the keyring)
    _c_pk: bytes = field(default=b"", repr=False)
    _s_pk: bytes = field(default=b"", repr=False)
    # (peer id, peer public key) -> derived 32-byte key; bound to the peer's key so a peer that
    # re-keyed gets a fresh agreement.
    _pairwise: dict[tuple[int, bytes], bytes] = field(default_factory=dict, repr=False)
    _share_enc: dict[tuple[int, bytes], bytes] = field(default_factory=dict, repr=False)
    # (own id, server identity key) -> akey
    _session: dict[tuple[int, bytes], bytes] = field(default_factory=dict, repr=False)
    verified_entries: set[tuple[int, bytes, bytes, bytes]] = field(default_factory=set, repr=False)
    # The neighbour graph of these keys' key-reuse rounds, fixed by the round that revealed it
    # (docs/protocol.md 1.7); gone with the keys.
    graph: FixedGraph | None = field(default=None, repr=False)

    @property
    def c_pk(self) -> bytes:
        if not self._c_pk:
            self._c_pk = kdf.x25519_public(self.c_sk)
            self.agreements += 1
        return self._c_pk

    @property
    def s_pk(self) -> bytes:
        if not self._s_pk:
            self._s_pk = kdf.x25519_public(self.s_sk)
            self.agreements += 1
        return self._s_pk

    def pairwise_epoch_key(self, me: int, peer: int, peer_s_pk: bytes) -> bytes:
        """ekey of the pair (me, peer) for this epoch: one X25519 per peer key per epoch."""
        slot = (peer, bytes(peer_s_pk))
        key = self._pairwise.get(slot)
        if key is None:
            shared = kdf.x25519(self.s_sk, peer_s_pk)
            self.agreements += 1
            key = self._pairwise[slot] = kdf.pairwise_epoch_key(shared, me, peer, self.epoch)
        return key

    def pairwise_mask_key(self, me: int, peer: int, peer_s_pk: bytes, round_id: int) -> bytes:
        """The round's AES-128 pairwise mask key: HKDF of the cached epoch key and the round id."""
        return kdf.pairwise_round_key(self.pairwise_epoch_key(me, peer, peer_s_pk), round_id)

    def share_encryption_key(self, me: int, peer: int, peer_c_pk: bytes) -> bytes:
        slot = (peer, bytes(peer_c_pk))
        key = self._share_enc.get(slot)
        if key is None:
            key = self._share_enc[slot] = kdf.share_encryption_key(self.c_sk, peer_c_pk, me, peer, self.epoch)
            self.agreements += 1
        return key

    def session_key(self, me: int, server_key: VerifyKey) -> bytes:
        """akey of this client with the server (docs/protocol.md 1.8): one X25519 per set of keys."""
        slot = (me, server_key.encode())
        key = self._session.get(slot)
        if key is None:
            key = self._session[slot] = session.client_session_key(self.c_sk, self.c_pk, server_key, me, self.epoch)
            self.agreements += 1
        return key

    @classmethod
    def generate(cls, epoch: int, randbytes=os.urandom,
                 revealed_peer_keys: set[bytes] | None = None) -> "EpochKeys":
        return cls(epoch=epoch, c_sk=randbytes(32), s_sk=randbytes(32),
                   revealed_peer_keys=revealed_peer_keys if revealed_peer_keys is not None else set())


def new_identity() -> SigningKey:
    return SigningKey.generate()
