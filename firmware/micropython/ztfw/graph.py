"""The SecAgg+ neighbour graph (docs/protocol.md 1.7): a Harary graph over the roster,
shuffled by Fisher-Yates with AES-CTR words keyed from the roster digest."""
import struct

from ztfw.aes_ctr import AesCtr
from ztfw.secagg_keys import graph_key


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
