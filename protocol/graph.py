"""The public neighbour graph of SecAgg+ (docs/protocol.md, 1.7).

A Harary graph of even degree k over the roster, shuffled by a Fisher-Yates permutation whose
randomness is AES-CTR keyed from the graph seed. The seed hashes the roster with a random
contribution of every roster member, committed to in its signed ADVERTISE_KEYS and revealed
only once the roster is fixed (commit and reveal): when the server chooses the roster it cannot
predict the graph, so it cannot choose rosters (or leave advertisers out) to steer colluders into
a victim's group. A complete graph needs no randomness and no reveal.

In key-reuse rounds the graph is fixed once per key epoch (`FixedGraph`) by the round that
reveals, and later rounds of the epoch keep it: a member missing from a later roster is a
dropout, never a reason to draw a new graph.
"""
from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from ztfl.protocol.config import group_size
from ztfl.protocol.kdf import graph_key
from ztfl.protocol.prg import keystream

COMMIT_CONTEXT = b"ztfl/secagg/v1/graph-commit"
SEED_CONTEXT = b"ztfl/secagg/v1/graph-seed"
REVEAL_BYTES = 32
NO_COMMITMENT = bytes(32)       # the commitment field of a round that reveals nothing


def secagg_plus_degree(n: int) -> int:
    """SecAgg+'s logarithmic degree, 2*ceil(log2 n); n - 1 (complete) when that is not smaller."""
    k = 2 * max(1, math.ceil(math.log2(max(n, 2))))
    return 0 if k >= n - 1 else k


def is_complete(n: int, neighbors: int) -> bool:
    return neighbors == 0 or neighbors >= n - 1


def commitment(client_id: int, epoch: int, round_id: int, reveal: bytes) -> bytes:
    """SHA-256("ztfl/secagg/v1/graph-commit" || u16 id || u32 epoch || u32 round || r): what a
    client signs in ADVERTISE_KEYS before anyone knows r."""
    return hashlib.sha256(COMMIT_CONTEXT + struct.pack("<HII", client_id, epoch, round_id) + bytes(reveal)).digest()


def graph_seed(roster_digest: bytes, reveals: Mapping[int, bytes]) -> bytes:
    """SHA-256("ztfl/secagg/v1/graph-seed" || roster_digest || for each member by ascending id:
    u16 id || r): every member's contribution counts, so one honest reveal makes it unpredictable."""
    h = hashlib.sha256(SEED_CONTEXT + bytes(roster_digest))
    for cid in sorted(reveals):
        h.update(struct.pack("<H", cid) + bytes(reveals[cid]))
    return h.digest()


def permutation(ids: Sequence[int], seed: bytes) -> list[int]:
    order = sorted(ids)
    n = len(order)
    words = struct.unpack(f"<{n}I", keystream(graph_key(seed), 4 * n))
    for step, i in enumerate(range(n - 1, 0, -1)):
        j = words[step] % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def neighbours(ids: Sequence[int], neighbors: int, seed: bytes) -> dict[int, frozenset[int]]:
    """Each id's neighbour set (never containing itself)."""
    ids = sorted(ids)
    if is_complete(len(ids), neighbors):
        everyone = frozenset(ids)
        return {u: everyone - {u} for u in ids}
    order = permutation(ids, seed)
    return {u: _ring_neighbours(order, i, neighbors) for i, u in enumerate(order)}


def neighbours_of(member: int, ids: Sequence[int], neighbors: int, seed: bytes) -> frozenset[int]:
    """One member's neighbour set: `neighbours(...)[member]` without building the other n - 1
    (what a client needs; with 1,000 members that is 20 times cheaper)."""
    ids = sorted(ids)
    if member not in ids:
        raise ValueError(f"{member} is not a member of the graph")
    if is_complete(len(ids), neighbors):
        return frozenset(ids) - {member}
    order = permutation(ids, seed)
    return _ring_neighbours(order, order.index(member), neighbors)


def _ring_neighbours(order: list[int], i: int, neighbors: int) -> frozenset[int]:
    """The Harary graph's edges of position i: the neighbors/2 members on each side in the ring."""
    n, half = len(order), neighbors // 2
    return frozenset(order[(i + d) % n] for d in range(-half, half + 1) if d != 0)


@dataclass(frozen=True)
class FixedGraph:
    """The neighbour graph a key epoch's revealing round fixed over its roster (`members`), kept
    by the server and by each client with its keys for the epoch's later key-reuse rounds."""
    epoch: int
    members: tuple[int, ...]
    neighbors: int
    seed: bytes

    @property
    def group(self) -> int:
        """Members of a sharing group, as the revealing round announced it."""
        return group_size(len(self.members), self.neighbors)

    def neighbours(self, present: Iterable[int]) -> dict[int, frozenset[int]]:
        """Each present member's neighbours among the present ones (the absent are dropouts)."""
        present = frozenset(present)
        full = neighbours(self.members, self.neighbors, self.seed)
        return {u: full[u] & present for u in sorted(present)}

    def neighbours_of(self, member: int, present: Iterable[int]) -> frozenset[int]:
        return neighbours_of(member, self.members, self.neighbors, self.seed) & frozenset(present)
