"""What a malicious gateway does in these tests: it signs whatever it likes with the server's
identity key, shows each agent its own view of the round, runs colluding agents whose secrets it
holds, and keeps everything it was sent. `unmask` is the attack's last step: with a victim's
self-mask seed and mask secret it strips the victim's masks from the masked input it received."""
from __future__ import annotations

import numpy as np

from ztfl.protocol import kdf, shamir, wire
from ztfl.protocol.config import RoundConfig
from ztfl.protocol.errors import ShamirError
from ztfl.protocol.prg import apply_masks


def signed(key, epoch: int, round_id: int, cls, **fields) -> bytes:
    """A server frame of any content, signed with the server's identity key."""
    return cls(wire.SERVER_ID, epoch, round_id, **fields).encode(key)


def config_frame(key, epoch: int, round_id: int, **fields) -> bytes:
    """A signed ROUND_CONFIG with whatever thresholds the gateway likes: RoundConfig refuses only
    what cannot be expressed, so semi-honest rounds, the override flag and low thresholds encode."""
    fields = {"dim": 8, "max_clients": 5, "max_weight": 1, **fields}
    return signed(key, epoch, round_id, wire.RoundConfigMessage, config=RoundConfig(**fields))


def secret(shares: list[shamir.Share], threshold: int) -> bytes | None:
    """The secret the attacker reconstructs from the shares it gathered, or None with too few."""
    try:
        return shamir.reconstruct(shares, threshold)
    except ShamirError:
        return None


def unmask(masked: np.ndarray, seed: bytes, s_sk: bytes, victim: int, peers: dict[int, bytes], epoch: int,
           round_id: int, mask_bits: int) -> np.ndarray:
    """The victim's encoded input: its masked vector minus its self mask and every pairwise mask
    it applied (it added the mask with a larger id, subtracted the one with a smaller id)."""
    words = np.array(masked, copy=True)
    adds, subtracts = [], [kdf.self_mask_key(seed, victim, epoch, round_id)]
    for peer, s_pk in peers.items():
        key = kdf.pairwise_mask_key(s_sk, s_pk, victim, peer, epoch, round_id)
        (subtracts if victim < peer else adds).append(key)
    apply_masks(words, adds, subtracts, mask_bits)
    return words
