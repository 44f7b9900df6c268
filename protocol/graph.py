"""The public neighbour graph of SecAgg+ (docs/protocol.md, 1.7).

A Harary graph of even degree k over the roster, shuffled by a Fisher-Yates permutation whose
randomness is AES-CTR keyed from the roster digest: every member computes the same graph and
no single party chooses it.
"""
from __future__ import annotations

import math
import struct
from typing import Sequence

import hashlib

from ztfl.protocol.kdf import graph_key

EPOCH_GRAPH_CONTEXT = b"ztfl/secagg/v1/epoch-graph"
from ztfl.protocol.prg import keystream


def secagg_plus_degree(n: int) -> int:
    """SecAgg+'s logarithmic degree, 2*ceil(log2 n); n - 1 (complete) when that is not smaller."""
    k = 2 * max(1, math.ceil(math.log2(max(n, 2))))
    return 0 if k >= n - 1 else k


def is_complete(n: int, neighbors: int) -> bool:
    return neighbors == 0 or neighbors >= n - 1


def permutation(ids: Sequence[int], roster_digest: bytes) -> list[int]:
    order = sorted(ids)
    n = len(order)
    words = struct.unpack(f"<{n}I", keystream(graph_key(roster_digest), 4 * n))
    for step, i in enumerate(range(n - 1, 0, -1)):
        j = words[step] % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def neighbours(ids: Sequence[int], neighbors: int, roster_digest: bytes) -> dict[int, frozenset[int]]:
    """Each id's neighbour set (never containing itself)."""
    ids = sorted(ids)
    if is_complete(len(ids), neighbors):
        everyone = frozenset(ids)
        return {u: everyone - {u} for u in ids}
    order = permutation(ids, roster_digest)
    return {u: _ring_neighbours(order, i, neighbors) for i, u in enumerate(order)}


def neighbours_of(member: int, ids: Sequence[int], neighbors: int, roster_digest: bytes) -> frozenset[int]:
    """One member's neighbour set: `neighbours(...)[member]` without building the other n - 1
    (what a client needs; with 1,000 members that is 20 times cheaper)."""
    ids = sorted(ids)
    if member not in ids:
        raise ValueError(f"{member} is not a member of the graph")
    if is_complete(len(ids), neighbors):
        return frozenset(ids) - {member}
    order = permutation(ids, roster_digest)
    return _ring_neighbours(order, order.index(member), neighbors)


def _ring_neighbours(order: list[int], i: int, neighbors: int) -> frozenset[int]:
    """The Harary graph's edges of position i: the neighbors/2 members on each side in the ring."""
    n, half = len(order), neighbors // 2
    return frozenset(order[(i + d) % n] for d in range(-half, half + 1) if d != 0)


def epoch_graph_digest(epoch: int, entries) -> bytes:
    """The graph seed of a key-reuse round (docs/protocol.md 1.7): it depends on the epoch, the
    ids and their public keys only, not on the round's signatures, so the same roster gives the
    same neighbours in every round of the epoch and the agreements made once are reused."""
    h = hashlib.sha256(EPOCH_GRAPH_CONTEXT + struct.pack("<I", epoch))
    for e in sorted(entries, key=lambda e: e.client_id):
        h.update(struct.pack("<H", e.client_id) + e.c_pk + e.s_pk)
    return h.digest()


def graph_digest(roster, key_reuse: bool) -> bytes:
    """The digest that seeds the neighbour graph of a round: the roster digest in a classic round,
    the epoch graph digest in a key-reuse round."""
    return epoch_graph_digest(roster.epoch, roster.entries) if key_reuse else roster.digest()
