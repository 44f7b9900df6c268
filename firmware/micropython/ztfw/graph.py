"""The SecAgg+ neighbour graph (docs/protocol.md 1.7): a Harary graph over the roster,
shuffled by Fisher-Yates with AES-CTR words keyed from the roster digest (classic round) or
the epoch graph digest (key-reuse round)."""
import hashlib
import struct

from ztfw.aes_ctr import AesCtr
from ztfw.secagg_keys import graph_key


EPOCH_GRAPH_CONTEXT = b"ztfl/secagg/v1/epoch-graph"


def epoch_graph_digest(epoch, entries):
    """The graph seed of a key-reuse round: the epoch, the ids and their public keys, not the
    round's signatures, so the same roster keeps its neighbours (and agreements) all epoch.
    entries: [(id, c_pk, s_pk)] in any order."""
    h = hashlib.sha256(EPOCH_GRAPH_CONTEXT + struct.pack("<I", epoch))
    for cid, c_pk, s_pk in sorted(entries, key=lambda e: e[0]):
        h.update(struct.pack("<H", cid))
        h.update(bytes(c_pk))
        h.update(bytes(s_pk))
    return h.digest()


def is_complete(n, neighbors):
    return neighbors == 0 or neighbors >= n - 1


def permutation(ids, roster_digest):
    order = sorted(ids)
    n = len(order)
    words = struct.unpack("<%dI" % n, AesCtr(graph_key(roster_digest), bytes(16)).read(4 * n))
    step = 0
    for i in range(n - 1, 0, -1):
        j = words[step] % (i + 1)
        order[i], order[j] = order[j], order[i]
        step += 1
    return order


def neighbours_of(me, ids, neighbors, roster_digest):
    """The neighbour ids of `me` (ascending, never containing `me`)."""
    ids = sorted(ids)
    n = len(ids)
    if is_complete(n, neighbors):
        return [u for u in ids if u != me]
    order = permutation(ids, roster_digest)
    i = order.index(me)
    half = neighbors // 2
    out = set()
    for d in range(1, half + 1):
        out.add(order[(i + d) % n])
        out.add(order[(i - d) % n])
    out.discard(me)
    return sorted(out)
