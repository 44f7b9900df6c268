"""Key derivation of the secure-aggregation protocol (docs/protocol.md 1.2, 1.7)."""
import struct

from ztfw import session_auth, x25519
from ztfw.hmac256 import hkdf as _hkdf
from ztfw.secagg_errors import KeyAgreementError

ZERO_SALT = bytes(32)
INFO_PAIRWISE_EPOCH = b"ztfl/secagg/v1/pairwise-epoch"
INFO_PAIRWISE_ROUND = b"ztfl/secagg/v1/pairwise-round"
INFO_SELF_MASK = b"ztfl/secagg/v1/self-mask"
INFO_SHARE_ENC = b"ztfl/secagg/v1/share-enc"
INFO_GRAPH = b"ztfl/secagg/v1/graph"


def hkdf(ikm, info, length):
    return _hkdf(ikm, ZERO_SALT, info, length)


def _pair(u, v):
    return struct.pack("<HH", min(u, v), max(u, v))


def agree(secret_key, public_key):
    """X25519; the all-zero secret of a low-order public key is refused."""
    try:
        return x25519.shared_secret(secret_key, public_key)
    except x25519.X25519Error as e:
        raise KeyAgreementError("X25519 failed: %s" % e)


class EpochKeys:
    """The two X25519 key pairs of one key epoch (docs/protocol.md 1.2, 2.7).

    Within an epoch the peers' public keys do not change, so each agreement runs once and its
    HKDF output is kept (per own id, peer id and peer key: a peer that re-keyed gets a fresh
    one); a later round of the epoch costs no X25519 at all. `revealed_peer_keys`: s public keys
    of peers whose secret this client helped reveal (it never releases a self-mask share for
    those). `uses`: rounds these keys were handed out for. `agreements`: X25519 operations run.

    Kept with the keys and dropped with them (docs/protocol.md 1.8): the session key with the
    server, and the roster entries already verified under the peers' identity keys, so a later
    key-reuse round neither agrees nor verifies again.
    """

    def __init__(self, epoch, c_sk, s_sk, revealed_peer_keys=None):
        self.epoch = epoch
        self.c_sk = bytes(c_sk)
        self.s_sk = bytes(s_sk)
        self.c_pk = x25519.public_key(self.c_sk)
        self.s_pk = x25519.public_key(self.s_sk)
        self.agreements = 2
        self.uses = 0
        self.revealed_peer_keys = revealed_peer_keys if revealed_peer_keys is not None else set()
        self._pairwise = {}
        self._share_enc = {}
        self._session = {}
        self.verified_entries = set()    # (id, identity key, c_pk, s_pk) whose signature verified
        # (neighbors, group, own neighbours) of the key epoch's graph, fixed by the round that revealed it.
        self.graph = None

    @classmethod
    def generate(cls, epoch, randbytes, revealed_peer_keys=None):
        c_sk = randbytes(32)
        return cls(epoch, c_sk, randbytes(32), revealed_peer_keys)

    def pairwise_epoch_key(self, me, peer, peer_s_pk):
        slot = (me, peer, bytes(peer_s_pk))
        key = self._pairwise.get(slot)
        if key is None:
            shared = agree(self.s_sk, peer_s_pk)
            self.agreements += 1
            key = self._pairwise[slot] = pairwise_epoch_key(shared, me, peer, self.epoch)
        return key

    def pairwise_mask_key(self, me, peer, peer_s_pk, round_id):
        return pairwise_round_key(self.pairwise_epoch_key(me, peer, peer_s_pk), round_id)

    def share_encryption_key(self, me, peer, peer_c_pk):
        slot = (me, peer, bytes(peer_c_pk))
        key = self._share_enc.get(slot)
        if key is None:
            key = self._share_enc[slot] = share_encryption_key(self.c_sk, peer_c_pk, me, peer, self.epoch)
            self.agreements += 1
        return key

    def session_key(self, me, server_public):
        """akey of this client with the server (docs/protocol.md 1.8): one X25519 per key set."""
        slot = (me, bytes(server_public))
        key = self._session.get(slot)
        if key is None:
            key = session_auth.session_key(self.c_sk, self.c_pk, server_public, me, self.epoch)
            self._session[slot] = key
            self.agreements += 1
        return key

    def consistency_key(self, me, peer, peer_s_pk, round_id):
        """vkey of the pair (me, peer) for this round: HKDF of the cached epoch key."""
        return session_auth.consistency_key(self.pairwise_epoch_key(me, peer, peer_s_pk), round_id)


def pairwise_epoch_key(shared, u, v, epoch):
    return hkdf(shared, INFO_PAIRWISE_EPOCH + _pair(u, v) + struct.pack("<I", epoch), 32)


def pairwise_round_key(epoch_key, round_id):
    return hkdf(epoch_key, INFO_PAIRWISE_ROUND + struct.pack("<I", round_id), 16)


def pairwise_mask_key(s_sk, peer_s_pk, me, peer, epoch, round_id):
    shared = agree(s_sk, peer_s_pk)
    return pairwise_round_key(pairwise_epoch_key(shared, me, peer, epoch), round_id)


def self_mask_key(seed, client_id, epoch, round_id):
    return hkdf(seed, INFO_SELF_MASK + struct.pack("<HII", client_id, epoch, round_id), 16)


def share_encryption_key(c_sk, peer_c_pk, me, peer, epoch):
    shared = agree(c_sk, peer_c_pk)
    return hkdf(shared, INFO_SHARE_ENC + _pair(me, peer) + struct.pack("<I", epoch), 32)


def graph_key(roster_digest):
    return hkdf(roster_digest, INFO_GRAPH, 16)
