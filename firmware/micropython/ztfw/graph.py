"""The SecAgg+ neighbour graph (docs/protocol.md 1.7): a Harary graph over the roster,
shuffled by Fisher-Yates with AES-CTR words keyed from the graph seed. The seed hashes the
roster digest with every member's revealed contribution, each committed to in its signed
advert before the roster was fixed, so the server can neither choose nor predict the graph."""
import hashlib
import struct

from ztfw.aes_ctr import AesCtr
from ztfw.secagg_keys import graph_key

COMMIT_CONTEXT = b"ztfl/secagg/v1/graph-commit"
SEED_CONTEXT = b"ztfl/secagg/v1/graph-seed"


def commitment(client_id, epoch, round_id, reveal):
    """SHA-256 of the context, u16 id, u32 epoch, u32 round and the reveal r."""
    return hashlib.sha256(COMMIT_CONTEXT + struct.pack("<HII", client_id, epoch, round_id) + bytes(reveal)).digest()


def graph_seed(roster_digest, reveals):
    """reveals: [(id, r)] in any order; hashed by ascending id after the roster digest."""
    h = hashlib.sha256(SEED_CONTEXT + bytes(roster_digest))
    for cid, reveal in sorted(reveals, key=lambda e: e[0]):
        h.update(struct.pack("<H", cid))
        h.update(bytes(reveal))
    return h.digest()


def is_complete(n, neighbors):
    return neighbors == 0 or neighbors >= n - 1


def permutation(ids, seed):
    order = sorted(ids)
    n = len(order)
    words = struct.unpack("<%dI" % n, AesCtr(graph_key(seed), bytes(16)).read(4 * n))
    step = 0
    for i in range(n - 1, 0, -1):
        j = words[step] % (i + 1)
        order[i], order[j] = order[j], order[i]
        step += 1
    return order


def neighbours_of(me, ids, neighbors, seed):
    """The neighbour ids of `me` (ascending, never containing `me`)."""
    ids = sorted(ids)
    n = len(ids)
    if is_complete(n, neighbors):
        return [u for u in ids if u != me]
    order = permutation(ids, seed)
    i = order.index(me)
    half = neighbors // 2
    out = set()
    for d in range(1, half + 1):
        out.add(order[(i + d) % n])
        out.add(order[(i - d) % n])
    out.discard(me)
    return sorted(out)
