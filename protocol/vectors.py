"""The conformance vectors (tests/vectors/*.json) computed by this reference implementation.

`build()` returns file name -> JSON text; `python -m ztfl.bench.vectors [OUTDIR]` writes them.

Every input is derived from fixed labels, so the files are reproducible byte for byte (the AEAD
nonces and Shamir coefficients are fixed here too). The MicroPython firmware and the Python tests
both check themselves against these files. Byte strings are hex; integers are decimal.
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import replace

import numpy as np
from nacl.signing import SigningKey

from ztfl.protocol import fixedpoint, graph, kdf, prg, session, shamir, wire
from ztfl.protocol.client import ClientSession, encrypt_share
from ztfl.protocol.config import ACTIVE, SEMI_HONEST, DpConfig, RoundConfig
from ztfl.protocol.errors import ProtocolError
from ztfl.protocol.keys import EpochKeys
from ztfl.protocol.server import ServerSession
from ztfl.protocol.stages import Stage

def fixed(label: str, n: int = 32) -> bytes:
    """Deterministic test bytes: SHA-256 chained from a label."""
    out, block = b"", label.encode()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return out[:n]


def hx(b: bytes) -> str:
    return bytes(b).hex()


class FixedStream:
    """Random bytes for a replayable round: fixed(label) read front to back, each call taking the
    next n bytes (the SHA-256 chain of `fixed` continued as far as needed)."""

    def __init__(self, label: str):
        self.block = label.encode()
        self.buffer = b""
        self.used = 0

    def __call__(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.block = hashlib.sha256(self.block).digest()
            self.buffer += self.block
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        self.used += n
        return out


def kdf_vectors() -> dict:
    hkdf_cases = []
    for ikm, info, length in ((fixed("hkdf-1"), b"ztfl/secagg/v1/self-mask", 16),
                              (fixed("hkdf-2", 7), b"", 32),
                              (fixed("hkdf-3"), b"x" * 100, 80)):
        hkdf_cases.append({"ikm": hx(ikm), "info": hx(info), "length": length,
                           "okm": hx(kdf.hkdf(ikm, info, length))})
    a_c, a_s, b_c, b_s = (fixed(f"ka-{n}") for n in ("a-c", "a-s", "b-c", "b-s"))
    u, v, epoch, round_id = 7, 3, 5, 42
    shared_s = kdf.x25519(a_s, kdf.x25519_public(b_s))
    epoch_key = kdf.pairwise_epoch_key(shared_s, u, v, epoch)
    seed = fixed("self-seed")
    return {
        "hkdf_sha256_zero_salt": hkdf_cases,
        "x25519": [{"sk_a": hx(a_s), "pk_a": hx(kdf.x25519_public(a_s)), "sk_b": hx(b_s),
                    "pk_b": hx(kdf.x25519_public(b_s)), "shared": hx(shared_s)}],
        "derivation": {
            "u": u, "v": v, "epoch": epoch, "round": round_id,
            "s_sk_u": hx(a_s), "s_pk_v": hx(kdf.x25519_public(b_s)),
            "c_sk_u": hx(a_c), "c_pk_v": hx(kdf.x25519_public(b_c)),
            "s_sk_v": hx(b_s), "s_pk_u": hx(kdf.x25519_public(a_s)),
            "pairwise_shared": hx(shared_s),
            "pairwise_epoch_key": hx(epoch_key),
            "pairwise_mask_key": hx(kdf.pairwise_round_key(epoch_key, round_id)),
            "share_encryption_key": hx(kdf.share_encryption_key(a_c, kdf.x25519_public(b_c), u, v, epoch)),
            "self_mask_seed": hx(seed),
            "self_mask_key": hx(kdf.self_mask_key(seed, u, epoch, round_id)),
        },
    }


def prg_vectors() -> dict:
    cases = []
    for label, nwords, bits in (("prg-32", 12, 32), ("prg-64", 9, 64), ("prg-32-long", 70, 32)):
        key = fixed(label, 16)
        words = prg.mask(key, nwords, bits)
        cases.append({"key": hx(key), "nwords": nwords, "mask_bits": bits,
                      "keystream": hx(prg.keystream(key, nwords * bits // 8)),
                      "words": [int(w) for w in words]})
    return {"aes128_ctr_masks": cases}


def shamir_vectors() -> dict:
    cases = []
    for label, t, xs in (("shamir-a", 3, [1, 2, 3, 4, 5]), ("shamir-b", 5, [3, 9, 17, 250, 1000, 65535])):
        secret = fixed(label)
        coeffs = [int.from_bytes(fixed(f"{label}-c{i}", 40), "little") % shamir.PRIME for i in range(t - 1)]
        shares = shamir.split_with_coefficients(secret, coeffs, xs)
        subset = shares[-t:]
        cases.append({
            "secret": hx(secret), "threshold": t,
            "coefficients": [hx(shamir.encode_y(c)) for c in coeffs],
            "shares": [{"x": s.x, "y": hx(s.y_bytes())} for s in shares],
            "reconstruct_from": [s.x for s in subset],
            "reconstructed": hx(shamir.reconstruct(subset, t)),
        })
    return {"prime": str(shamir.PRIME), "prime_hex_le": hx(shamir.PRIME.to_bytes(33, "little")),
            "sharing": cases}


def fixedpoint_vectors() -> dict:
    cases = []
    values = [0.0, 1.0, -1.0, 0.5, -0.5, 2.5, -2.5, 3.0e-6, 1.5 / 65536, 2.5 / 65536, 9.0, -9.0, 8.0, -7.99998]
    for bits, frac_bits, clip, weight in ((32, 16, 8.0, 1), (32, 16, 8.0, 3), (64, 24, 8.0, 7)):
        clip_q = int(clip * 2**frac_bits)
        words = fixedpoint.encode(np.array(values), weight, frac_bits, clip_q, bits)
        cases.append({"values": values, "weight": weight, "frac_bits": frac_bits, "clip_q": clip_q,
                      "mask_bits": bits, "words": [int(w) for w in words],
                      "quantized": [int(q) for q in fixedpoint.quantize(np.array(values), frac_bits, clip_q)]})
    return {"encode": cases}


def _round_fixture():
    config = RoundConfig(dim=4, threshold=4, max_clients=5, mask_bits=32, frac_bits=16,
                         clip_q=8 << 16, max_weight=10, neighbors=0, security=ACTIVE)
    ids = [1, 2, 3, 4, 5]
    identities = {c: SigningKey(fixed(f"identity-{c}")) for c in ids}
    server_identity = SigningKey(fixed("identity-server"))
    c_sk = {c: fixed(f"c-sk-{c}") for c in ids}
    s_sk = {c: fixed(f"s-sk-{c}") for c in ids}
    seeds = {c: fixed(f"b-{c}") for c in ids}
    return config, ids, identities, server_identity, c_sk, s_sk, seeds


def masking_vectors() -> dict:
    config, ids, _, _, _, s_sk, seeds = _round_fixture()
    epoch, round_id = 1, 9
    inputs = {1: [0.25, -1.0, 3.5, 0.0], 2: [1.0, 1.0, -8.5, 0.125], 3: [-0.75, 2.0, 0.5, 7.0],
              4: [0.0, -0.5, 0.25, -3.0]}
    weights = {1: 1, 2: 2, 3: 3, 4: 4}
    participants = [1, 2, 3]   # client 4 is in U2 of nobody here: a three-client round
    out = {"config": hx(config.encode()), "epoch": epoch, "round": round_id, "clients": []}
    total = np.zeros(config.words, dtype=np.uint32)
    for u in participants:
        encoded = fixedpoint.encode(np.array(inputs[u]), weights[u], config.frac_bits, config.clip_q, 32)
        masked = encoded.copy()
        gen = prg.MaskGenerator(config.words, 32)
        gen.add(masked, kdf.self_mask_key(seeds[u], u, epoch, round_id))
        for v in participants:
            if v == u:
                continue
            key = kdf.pairwise_mask_key(s_sk[u], kdf.x25519_public(s_sk[v]), u, v, epoch, round_id)
            (gen.add if u < v else gen.subtract)(masked, key)
        total += masked
        out["clients"].append({"id": u, "s_sk": hx(s_sk[u]), "s_pk": hx(kdf.x25519_public(s_sk[u])),
                               "self_mask_seed": hx(seeds[u]), "input": inputs[u], "weight": weights[u],
                               "encoded": [int(w) for w in encoded], "masked": [int(w) for w in masked]})
    for u in participants:
        gen = prg.MaskGenerator(config.words, 32)
        gen.subtract(total, kdf.self_mask_key(seeds[u], u, epoch, round_id))
    out["sum_unmasked"] = [int(w) for w in total]
    return out


def epochs_vectors() -> dict:
    """Key reuse over one epoch (docs/protocol.md 1.2, 2.7): a key-reuse configuration (flags bit
    1), three clients, rounds 7, 8 and 10 of epoch 3 with the same X25519 keys and a fresh
    self-mask seed each round. In round 8 client 3 drops after ShareKeys (it is in everyone's N2,
    its masked input never arrives): the survivors give their round-8 keys with 3
    (UNMASK_ROUND_KEYS, client 1's frame is included) and the server removes those masks. In
    round 10 client 3 takes part with new keys (`s_sk_rekeyed`, e.g. after its own lifetime
    ended) while 1 and 2 keep theirs."""
    config, ids, identities, server_identity, _, s_sk, _ = _round_fixture()
    config = replace(config, key_reuse=True)
    epoch = 3
    inputs = {1: [0.5, -0.25, 1.0, 2.0], 2: [-1.5, 0.75, 0.0, 0.125], 3: [4.0, -4.0, 0.5, -0.5]}
    keys = {u: dict(s_sk) for u in (7, 8)}
    keys[10] = {**s_sk, 3: fixed("s-sk-3-rekeyed")}
    plan = {7: ([1, 2, 3], [1, 2, 3]), 8: ([1, 2, 3], [1, 2]), 10: ([1, 2, 3], [1, 2, 3])}
    config_frame = wire.RoundConfigMessage(0, epoch, 7, config).encode(server_identity)
    out = {"config": hx(config.encode()), "epoch": epoch, "rounds": [],
           "round_config_frame": hx(config_frame), "server_identity_seed": hx(fixed("identity-server"))}
    # The neighbour graph of a key epoch is fixed by its revealing round (1.7) and kept: a later
    # round's neighbours are the fixed ones still present (client 8 is missing here).
    members = list(range(2, 22, 2))
    seed = graph.graph_seed(fixed("epoch-graph-roster"), {c: fixed(f"epoch-graph-reveal-{c}") for c in members})
    fixed_graph = graph.FixedGraph(epoch, tuple(members), 4, seed)
    present = [c for c in members if c != 8]
    out["epoch_graph"] = {"epoch": epoch, "neighbors": 4, "members": members, "seed": hx(seed),
                          "neighbours": {str(c): sorted(n) for c, n in fixed_graph.neighbours(members).items()},
                          "present": present,
                          "present_neighbours": {str(c): sorted(n) for c, n in fixed_graph.neighbours(present).items()}}
    for round_id, (n2, survivors) in plan.items():
        sk = keys[round_id]
        seeds = {u: fixed(f"b-{u}-round-{round_id}") for u in n2}
        pairs = []
        for u in n2:
            for v in n2:
                if u < v:
                    shared = kdf.x25519(sk[u], kdf.x25519_public(sk[v]))
                    ekey = kdf.pairwise_epoch_key(shared, u, v, epoch)
                    pairs.append({"u": u, "v": v, "epoch_key": hx(ekey),
                                  "round_key": hx(kdf.pairwise_round_key(ekey, round_id))})
        clients, total = [], np.zeros(config.words, dtype=np.uint32)
        for u in survivors:
            encoded = fixedpoint.encode(np.array(inputs[u]), 1, config.frac_bits, config.clip_q, 32)
            masked = encoded.copy()
            gen = prg.MaskGenerator(config.words, 32)
            skey = kdf.self_mask_key(seeds[u], u, epoch, round_id)
            gen.add(masked, skey)
            for v in n2:
                if v != u:
                    key = kdf.pairwise_mask_key(sk[u], kdf.x25519_public(sk[v]), u, v, epoch, round_id)
                    (gen.add if u < v else gen.subtract)(masked, key)
            total += masked
            clients.append({"id": u, "s_sk": hx(sk[u]), "s_pk": hx(kdf.x25519_public(sk[u])),
                            "self_mask_seed": hx(seeds[u]), "self_mask_key": hx(skey),
                            "input": inputs[u], "encoded": [int(w) for w in encoded],
                            "masked": [int(w) for w in masked]})
        gen = prg.MaskGenerator(config.words, 32)
        for u in survivors:
            gen.subtract(total, kdf.self_mask_key(seeds[u], u, epoch, round_id))
        dropped = [d for d in n2 if d not in survivors]
        for d in dropped:
            for v in survivors:
                key = kdf.pairwise_mask_key(sk[d], kdf.x25519_public(sk[v]), d, v, epoch, round_id)
                (gen.subtract if v < d else gen.add)(total, key)
        if dropped:
            # Client 1's unmasking message of this round: self-mask shares (fixed values here)
            # and its round key with each dropped client.
            shares = tuple((u, shamir.encode_y(int.from_bytes(fixed(f"share-{u}-{round_id}"), "little")))
                           for u in survivors)
            keys_given = tuple((d, kdf.pairwise_mask_key(sk[1], kdf.x25519_public(sk[d]), 1, d, epoch, round_id))
                               for d in dropped)
            msg = wire.UnmaskRoundKeys(1, epoch, round_id, shares, keys_given)
            frame = msg.encode(identities[1])
            out["unmask_round_keys"] = {"round": round_id, "sender": 1, "type": msg.TYPE, "body": hx(msg.body()),
                                        "frame": hx(frame), "identity_seed": hx(fixed("identity-1"))}
        out["rounds"].append({"round": round_id, "n2": n2, "survivors": survivors, "dropped": dropped,
                              "s_sk_rekeyed": {str(u): hx(sk[u]) for u in n2 if sk[u] != s_sk[u]},
                              "pairs": pairs, "clients": clients,
                              "sum_unmasked": [int(w) for w in total]})
    return out


def graph_vectors() -> dict:
    cases = []
    for n, k in ((10, 4), (16, 6), (7, 0)):
        ids = list(range(3, 3 + 2 * n, 2))
        digest = fixed(f"roster-{n}")
        nb = graph.neighbours(ids, k, digest)
        cases.append({"ids": ids, "neighbors": k, "roster_digest": hx(digest),
                      "permutation": graph.permutation(ids, digest) if not graph.is_complete(n, k) else None,
                      "neighbours": {str(u): sorted(nb[u]) for u in ids}})
    # Commit and reveal (1.7): the commitments signed in the adverts, the reveals, and the seed.
    epoch, round_id, ids, k = 6, 11, [2, 5, 7, 9, 12, 14, 20], 4
    reveals = {c: fixed(f"reveal-{c}") for c in ids}
    roster_digest = fixed("commit-reveal-roster")
    seed = graph.graph_seed(roster_digest, reveals)
    commit_reveal = {"epoch": epoch, "round": round_id, "ids": ids, "neighbors": k,
                     "reveals": {str(c): hx(r) for c, r in reveals.items()},
                     "commitments": {str(c): hx(graph.commitment(c, epoch, round_id, r)) for c, r in reveals.items()},
                     "roster_digest": hx(roster_digest), "seed": hx(seed),
                     "permutation": graph.permutation(ids, seed),
                     "neighbours": {str(u): sorted(n) for u, n in graph.neighbours(ids, k, seed).items()}}
    return {"harary": cases, "commit_reveal": commit_reveal,
            "secagg_plus_degree": {str(n): graph.secagg_plus_degree(n) for n in (5, 10, 17, 100, 1000)}}


def wire_vectors() -> dict:
    config, ids, identities, server_identity, c_sk, s_sk, seeds = _round_fixture()
    config = replace(config, neighbors=4)          # a sparse configuration: the round reveals its graph
    epoch, round_id = 1, 9
    digest = config.digest()
    reveals = {c: fixed(f"graph-reveal-{c}") for c in ids}
    commitments = {c: graph.commitment(c, epoch, round_id, reveals[c]) for c in ids}
    frames = []

    def add(name, msg, key):
        frame = msg.encode(key)
        body = msg.body()
        frames.append({"name": name, "type": msg.TYPE, "sender": msg.sender, "frame": hx(frame),
                       "body": hx(body), "signed": hx(frame[:wire.HEADER_BYTES] + hashlib.sha256(body).digest())})

    add("round_config", wire.RoundConfigMessage(0, epoch, round_id, config), server_identity)
    adverts = {}
    for c in ids:
        msg = wire.AdvertiseKeys(c, epoch, round_id, digest, kdf.x25519_public(c_sk[c]), kdf.x25519_public(s_sk[c]),
                                 commitments[c])
        adverts[c] = msg.encode(identities[c])
        if c == 1:
            add("advertise_keys", msg, identities[c])
    entries = tuple(wire.RosterEntry(c, kdf.x25519_public(c_sk[c]), kdf.x25519_public(s_sk[c]),
                                     adverts[c][-64:], commitments[c]) for c in ids)
    roster = wire.Roster(0, epoch, round_id, entries)
    add("roster", roster, server_identity)
    add("graph_reveal", wire.GraphReveal(1, epoch, round_id, reveals[1]), identities[1])
    add("graph_seeds", wire.GraphSeeds(0, epoch, round_id, tuple(sorted(reveals.items()))), server_identity)
    # Client 1 shares with its whole group (4 neighbours of 5: the complete graph) with fixed
    # coefficients and nonces.
    group = ids
    b_coeffs = [int.from_bytes(fixed(f"b1-c{i}", 40), "little") % shamir.PRIME for i in range(config.threshold - 1)]
    s_coeffs = [int.from_bytes(fixed(f"s1-c{i}", 40), "little") % shamir.PRIME for i in range(config.threshold - 1)]
    b_sh = shamir.split_with_coefficients(seeds[1], b_coeffs, group)
    s_sh = shamir.split_with_coefficients(s_sk[1], s_coeffs, group)
    enc_cases, shares = [], []
    for b, s in zip(b_sh, s_sh):
        if b.x == 1:
            continue
        key = kdf.share_encryption_key(c_sk[1], kdf.x25519_public(c_sk[b.x]), 1, b.x, epoch)
        nonce = fixed(f"nonce-1-{b.x}", 24)
        plaintext = b.y_bytes() + s.y_bytes()
        aad = wire.share_aad(epoch, round_id, 1, b.x)
        ct = encrypt_share(key, nonce, plaintext, aad)
        enc_cases.append({"from": 1, "to": b.x, "key": hx(key), "nonce": hx(nonce), "plaintext": hx(plaintext),
                          "aad": hx(aad), "ciphertext": hx(ct)})
        shares.append(wire.EncryptedShare(b.x, ct))
    add("share_keys", wire.ShareKeys(1, epoch, round_id, tuple(shares)), identities[1])
    add("shares_relay", wire.SharesRelay(0, epoch, round_id, (wire.EncryptedShare(1, shares[0].ciphertext),)),
        server_identity)
    words = np.array([1, 2, 0xFFFFFFFF, 0x80000000, 5], dtype=np.uint32)
    add("masked_input", wire.MaskedInput(1, epoch, round_id, 32, words), identities[1])
    add("masked_input_64", wire.MaskedInput(2, epoch, round_id, 64,
                                            np.array([1, 2**64 - 1, 3], dtype=np.uint64)), identities[2])
    survivors = (1, 2, 3)
    add("consistency_request", wire.ConsistencyRequest(0, epoch, round_id, survivors), server_identity)
    statement = wire.survivors_statement(digest, epoch, round_id, survivors)
    sigs = tuple((c, identities[c].sign(statement).signature) for c in survivors)
    add("consistency_signature", wire.ConsistencySignature(1, epoch, round_id, sigs[0][1]), identities[1])
    add("unmask_request", wire.UnmaskRequest(0, epoch, round_id, sigs, (4,)), server_identity)
    add("unmask_shares", wire.UnmaskShares(1, epoch, round_id,
                                           tuple((o, shamir.encode_y(o * 1000)) for o in survivors),
                                           ((4, shamir.encode_y(shamir.PRIME - 1)),)), identities[1])
    add("abort", wire.Abort(0, epoch, round_id, wire.ABORT_TOO_FEW_CLIENTS), server_identity)
    return {
        "config_digest": hx(digest), "epoch": epoch, "round": round_id,
        "identity_seeds": {str(c): hx(fixed(f"identity-{c}")) for c in ids} | {"0": hx(fixed("identity-server"))},
        "identity_public": {str(c): hx(identities[c].verify_key.encode()) for c in ids}
        | {"0": hx(server_identity.verify_key.encode())},
        "survivor_statement": hx(statement),
        "graph_reveals": {str(c): hx(r) for c, r in reveals.items()},
        "graph_seed": hx(graph.graph_seed(roster.digest(), reveals)),
        "share_encryption": enc_cases,
        "frames": frames,
    }


SESSION_EPOCH, SESSION_ROUND = 3, 8


def _session_round():
    """The first key-reuse round of an epoch, 5 clients with 4 neighbours each (a graph round: the
    clients reveal their graph seed contributions), run by the real sessions with fixed
    randomness: client 4 drops after ShareKeys. Returns (config, server identity, identities,
    keys, server, clients, received, replies) with every frame each client received and answered,
    in order."""
    config, ids, identities, server_identity, c_sk, s_sk, _ = _round_fixture()
    config = replace(config, key_reuse=True, neighbors=4, new_graph=True)
    directory = {c: identities[c].verify_key for c in ids} | {0: server_identity.verify_key}
    keys = {c: EpochKeys(SESSION_EPOCH, c_sk[c], s_sk[c]) for c in ids}
    server = ServerSession(config, server_identity, directory, SESSION_EPOCH, SESSION_ROUND, workers=1)
    clients = {c: ClientSession(c, identities[c], directory, keys[c], SESSION_ROUND,
                                randbytes=FixedStream(f"session-round-random-{c}"))
               for c in ids}
    inputs = {1: [0.5, -0.25, 1.0, 2.0], 2: [-1.5, 0.75, 0.0, 0.125], 3: [4.0, -4.0, 0.5, -0.5],
              4: [1.0, 1.0, 1.0, 1.0], 5: [-0.5, 2.25, -3.0, 0.0]}
    weights = {1: 2, 2: 1, 3: 3, 4: 1, 5: 2}
    for c in ids:
        clients[c].set_input(inputs[c], weights[c])
    gone_from = {4: Stage.MASKED_INPUT_COLLECTION}
    received = {c: [] for c in ids}
    replies = {c: [] for c in ids}
    pending = {c: server.round_config() for c in ids}
    order = Stage.order(config.reveals_graph)
    while not server.stage.terminal:
        for c in ids:
            stop = gone_from.get(c)
            frame = pending.get(c)
            if frame is None or (stop is not None and order.index(server.stage) >= order.index(stop)):
                continue
            reply = clients[c].receive(frame)
            received[c].append(frame)
            replies[c].append(reply)
            if reply is not None:
                server.receive(reply)
        out = server.close_stage()
        pending = {c: out.frame_for(c) for c in ids}
    return (config, server_identity, identities, keys, server, clients, received, replies,
            inputs, weights)


def session_vectors() -> dict:
    """Session-authenticated frames and pairwise consistency tags of key-reuse rounds
    (docs/protocol.md 1.8, 2.7): the Curve25519 form of server identity keys, a session key, a
    client tag and a server multi-recipient trailer, vkey and tags of a pair, CONSISTENCY_TAGS and
    UNMASK_REQUEST_TAGS, a complete round with every frame, and frames a client must refuse."""
    (config, server_identity, identities, keys, server, clients, received, replies,
     inputs, weights) = _session_round()
    epoch, round_id = SESSION_EPOCH, SESSION_ROUND
    ids = sorted(clients)

    # Curve25519 form of Ed25519 identity keys (the server's, and RFC 8032 test 1), and refusals.
    rfc8032 = SigningKey(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    conversion = [{"ed25519_seed": hx(k.encode()), "ed25519_pk": hx(k.verify_key.encode()),
                   "curve25519_pk": hx(session.server_curve_public(k.verify_key)),
                   "curve25519_sk": hx(session.server_curve_secret(k))}
                  for k in (server_identity, rfc8032)]
    refused_keys = [{"ed25519_pk": hx(pk), "error": "KeyAgreementError"}
                    for pk in (bytes(32), b"\x01" + bytes(31))]

    # The session key of client 1 from both sides.
    g_pk = session.server_curve_public(server_identity.verify_key)
    g_sk = session.server_curve_secret(server_identity)
    k1 = keys[1]
    shared = kdf.x25519(k1.c_sk, g_pk)
    akeys = {c: keys[c].session_key(c, server_identity.verify_key) for c in ids}
    if session.server_session_key(g_sk, k1.c_pk, 1, epoch) != akeys[1]:
        raise AssertionError("client and server derive different session keys")
    session_key = {"client": 1, "epoch": epoch, "c_sk": hx(k1.c_sk), "c_pk": hx(k1.c_pk),
                   "server_curve25519_pk": hx(g_pk), "shared": hx(shared),
                   "info": hx(session.INFO_SESSION + struct.pack("<HI", 1, epoch) + k1.c_pk),
                   "akey": hx(akeys[1])}

    # A client frame with its tag, and a server frame with one tag per recipient.
    masked = wire.MaskedInput(1, epoch, round_id, 32, np.array([1, 2, 0xFFFFFFFF, 7, 3], dtype=np.uint32))
    c_frame = masked.encode_tagged(akeys[1])
    c_body = masked.body()
    client_tag = {"client": 1, "akey": hx(akeys[1]), "type": masked.TYPE, "header": hx(c_frame[:20]),
                  "body": hx(c_body), "signed": hx(wire.signed_bytes(c_frame[:20], c_body)),
                  "tag": hx(c_frame[-16:]), "frame": hx(c_frame)}
    request = wire.ConsistencyRequest(0, epoch, round_id, (1, 2, 3))
    s_frame = request.encode_for(akeys)
    s_body = request.body()
    s_signed = wire.signed_bytes(s_frame[:20], s_body)
    server_tags = {"type": request.TYPE, "header": hx(s_frame[:20]), "body": hx(s_body), "signed": hx(s_signed),
                   "recipients": [{"id": c, "c_pk": hx(keys[c].c_pk), "akey": hx(akeys[c]),
                                   "tag": hx(session.frame_tag(akeys[c], s_signed))} for c in ids],
                   "trailer": hx(s_frame[20 + len(s_body):]), "frame": hx(s_frame)}

    # Pairwise consistency key and tags of the pair (1, 2) over this round's survivor statement.
    statement = wire.survivors_statement(config.digest(), epoch, round_id, server.survivors)
    ekey = keys[1].pairwise_epoch_key(1, 2, keys[2].s_pk)
    vkey = session.consistency_key(ekey, round_id)
    pairwise = {"u": 1, "v": 2, "epoch": epoch, "round": round_id, "s_sk_u": hx(keys[1].s_sk),
                "s_pk_v": hx(keys[2].s_pk), "epoch_key": hx(ekey),
                "info": hx(session.INFO_PAIRWISE_CONSISTENCY + struct.pack("<I", round_id)),
                "vkey": hx(vkey), "statement": hx(statement),
                "tag_u_to_v": hx(session.consistency_tag(vkey, 1, statement)),
                "tag_v_to_u": hx(session.consistency_tag(vkey, 2, statement))}

    # CONSISTENCY_TAGS and UNMASK_REQUEST_TAGS with fixed tags.
    fixed_tags = ((2, fixed("tag-1-2", 16)), (3, fixed("tag-1-3", 16)))
    tags_msg = wire.ConsistencyTags(1, epoch, round_id, fixed_tags)
    request_msg = wire.UnmaskRequestTags(0, epoch, round_id, ((2, fixed("tag-2-1", 16)), (3, fixed("tag-3-1", 16))),
                                         (4,))
    messages = [{"name": "consistency_tags", "type": tags_msg.TYPE, "sender": 1, "body": hx(tags_msg.body()),
                 "frame": hx(tags_msg.encode_tagged(akeys[1]))},
                {"name": "unmask_request_tags", "type": request_msg.TYPE, "sender": 0, "to": 1,
                 "body": hx(request_msg.body()), "frame": hx(request_msg.encode_for({1: akeys[1]}))}]

    # The round: every frame each client received and sent, in order.
    result = server.result
    round_vector = {
        "config": hx(config.encode()), "epoch": epoch, "round": round_id,
        "server_identity_seed": hx(server_identity.encode()),
        "drops": {"4": Stage.MASKED_INPUT_COLLECTION.value},
        "survivors": list(result.survivors), "dropped": list(result.dropped),
        "total": [int(w) for w in result.total], "total_weight": result.total_weight,
        "clients": [{"id": c, "identity_seed": hx(identities[c].encode()), "c_sk": hx(keys[c].c_sk),
                     "s_sk": hx(keys[c].s_sk), "random_label": f"session-round-random-{c}",
                     "random_bytes_used": clients[c].randbytes.used,
                     "self_mask_seed": hx(clients[c]._state.seed),
                     "input": inputs[c], "weight": weights[c], "akey": hx(akeys[c]),
                     "neighbours": sorted(clients[c]._state.neighbours),
                     "final_stage": clients[c].stage.value,
                     "received": [hx(f) for f in received[c]],
                     "replies": [hx(r) if r is not None else None for r in replies[c]]}
                    for c in ids],
    }

    # Frames client 1 must refuse, each after `after` honest frames of the round: ROUND_CONFIG,
    # ROSTER, GRAPH_SEEDS, SHARES_RELAY, CONSISTENCY_REQUEST, UNMASK_REQUEST_TAGS.
    c1 = received[1]
    honest_roster = wire.decode_frame(c1[1]).message
    honest_seeds = wire.decode_frame(c1[2]).message
    honest_request = wire.decode_frame(c1[5]).message
    flipped = bytearray(c1[1])
    tag_pos = len(flipped) - 5 * wire.RECIPIENT_TAG_ENTRY + 2 + 2     # client 1's tag (first of 5)
    flipped[tag_pos] ^= 0x01
    bad_auth = bytearray(c1[1])
    bad_auth[6] = 2

    def request_with(tags) -> bytes:
        return wire.UnmaskRequestTags(0, epoch, round_id, tuple(tags), honest_request.dropped).encode_for(
            {1: akeys[1]})

    def tag_of(signer, peer, rnd) -> bytes:
        ek = keys[signer].pairwise_epoch_key(signer, peer, keys[peer].s_pk)
        st = wire.survivors_statement(config.digest(), epoch, rnd, server.survivors)
        return session.consistency_tag(session.consistency_key(ek, rnd), signer, st)

    def signed_config(**changes) -> bytes:
        return wire.RoundConfigMessage(0, epoch, round_id, replace(config, **changes)).encode(server_identity)

    def seeds_with(reveals) -> bytes:
        return wire.GraphSeeds(0, epoch, round_id, tuple(reveals)).encode_for(akeys)

    old_round = SESSION_ROUND - 1
    wrong_reveal = [(c, fixed("not-the-reveal") if c == 3 else r) for c, r in honest_seeds.reveals]
    negatives = [
        # The security floor (2.2, 2.4): what no server can make an agent accept.
        ("round_config_semi_honest", 0, signed_config(security=SEMI_HONEST), "SemiHonestRefused"),
        ("round_config_threshold_override", 0, signed_config(threshold_override=True, threshold=1),
         "ThresholdOverrideRefused"),
        ("round_config_threshold_below_the_floor", 0, signed_config(threshold=3), "ThresholdBelowFloor"),
        ("round_config_neighbours_below_the_floor", 0, signed_config(neighbors=2, threshold=3),
         "NeighborsBelowFloor"),
        ("round_config_group_below_the_floor", 0, signed_config(max_clients=4, threshold=3), "GroupBelowFloor"),
        ("round_config_keeping_an_epoch_graph_these_keys_lack", 0, signed_config(new_graph=False), "NoEpochGraph"),
        ("roster_of_four_below_the_floor", 1,
         wire.Roster(0, epoch, round_id, honest_roster.entries[:4]).encode_for({c: akeys[c] for c in (1, 2, 3, 4)}),
         "GroupBelowFloor"),
        # Commit and reveal (1.7): every member's reveal, each the one it committed to.
        ("graph_seeds_missing_a_reveal", 2, seeds_with(honest_seeds.reveals[:4]), "RevealMissing"),
        ("graph_seeds_with_a_wrong_reveal", 2, seeds_with(wrong_reveal), "RevealMismatch"),
        ("graph_seeds_with_a_reveal_from_outside_the_roster", 2,
         seeds_with(honest_seeds.reveals + ((9, fixed("stranger")),)), "ConsistencyViolation"),
        ("round_config_with_session_tags", 0,
         wire.RoundConfigMessage(0, epoch, round_id, config).encode_for({1: akeys[1]}), "BadSignature"),
        ("roster_signed_instead_of_tagged", 1, honest_roster.encode(server_identity), "BadSignature"),
        ("roster_without_a_tag_for_this_client", 1,
         honest_roster.encode_for({c: akeys[c] for c in (2, 3, 4, 5)}), "BadSignature"),
        ("roster_with_a_flipped_tag_bit", 1, bytes(flipped), "BadSignature"),
        ("roster_with_auth_field_2", 1, bytes(bad_auth), "MalformedMessage"),
        ("consistency_request_of_an_earlier_round", 4,
         wire.ConsistencyRequest(0, epoch, old_round, server.survivors).encode_for(akeys), "WrongRound"),
        ("unmask_request_tags_forged_by_the_server", 5,
         request_with([(2, session.frame_tag(akeys[1], b"forged")), honest_request.tags[1]]), "BadSignature"),
        ("unmask_request_tags_reflecting_the_clients_own_tag", 5,
         request_with([(2, tag_of(1, 2, round_id)), honest_request.tags[1]]), "BadSignature"),
        ("unmask_request_tags_replaying_an_earlier_rounds_tags", 5,
         request_with([(2, tag_of(2, 1, old_round)), (3, tag_of(3, 1, old_round))]), "BadSignature"),
        ("unmask_request_tags_from_a_dropped_client", 5,
         request_with(sorted(honest_request.tags + ((4, tag_of(4, 1, round_id)),))), "ConsistencyViolation"),
        ("unmask_request_tags_below_the_threshold", 5, request_with(honest_request.tags[:1]), "RoundAborted"),
        ("unmask_request_0x09_tagged_in_a_key_reuse_round", 5,
         wire.UnmaskRequest(0, epoch, round_id, (), honest_request.dropped).encode_for({1: akeys[1]}),
         "InvalidTransition"),
        ("unmask_request_0x09_signed_in_a_key_reuse_round", 5,
         wire.UnmaskRequest(0, epoch, round_id, (), honest_request.dropped).encode(server_identity),
         "BadSignature"),
    ]
    refusals = []
    for name, after, frame, error in negatives:
        refusals.append({"name": name, "client": 1, "after": after, "frame": hx(frame), "error": error})
    _check_refusals(round_vector, refusals)
    return {"curve25519_conversion": conversion, "curve25519_refused": refused_keys,
            "session_key": session_key, "client_tag": client_tag, "server_tags": server_tags,
            "pairwise_consistency": pairwise, "messages": messages, "round": round_vector,
            "refusals": refusals}


def replay_client(round_vector: dict, client_id: int, frames: int) -> ClientSession:
    """A fresh session of `client_id` fed the first `frames` frames it received in the round."""
    entry = next(c for c in round_vector["clients"] if c["id"] == client_id)
    server = SigningKey(bytes.fromhex(round_vector["server_identity_seed"]))
    directory = {c["id"]: SigningKey(bytes.fromhex(c["identity_seed"])).verify_key
                 for c in round_vector["clients"]} | {0: server.verify_key}
    keys = EpochKeys(round_vector["epoch"], bytes.fromhex(entry["c_sk"]), bytes.fromhex(entry["s_sk"]))
    client = ClientSession(client_id, SigningKey(bytes.fromhex(entry["identity_seed"])), directory, keys,
                           round_vector["round"], randbytes=FixedStream(entry["random_label"]))
    client.set_input(entry["input"], entry["weight"])
    for frame in entry["received"][:frames]:
        client.receive(bytes.fromhex(frame))
    return client


def _check_refusals(round_vector: dict, refusals: list[dict]) -> None:
    """Every refusal written is refused with the error it names (the generator checks itself)."""
    for case in refusals:
        client = replay_client(round_vector, case["client"], case["after"])
        try:
            client.receive(bytes.fromhex(case["frame"]))
        except ProtocolError as exc:
            if type(exc).__name__ != case["error"]:
                raise AssertionError(f"{case['name']}: {type(exc).__name__} ({exc}), expected {case['error']}")
        else:
            raise AssertionError(f"{case['name']}: accepted")


def certs_vectors() -> dict:
    """Identity certificates and revocation lists (protocol.certs): encodings, and the reason
    each bad one is refused with, at a fixed `now`."""
    from ztfl.protocol import certs
    root, intermediate, other = (SigningKey(fixed(f"cert-{n}")) for n in ("root", "intermediate", "other-root"))
    now, fed = 1_800_000_000, "plant"

    def issue(key, device_id, role, serial, not_before=now - 300, not_after=now + 86400, federation=fed):
        return certs.issue(key, federation=federation, device_id=device_id, role=role,
                           public_key=bytes(SigningKey(fixed(f"cert-key-{device_id}")).verify_key),
                           not_before=not_before, not_after=not_after, serial=serial)

    agent, gateway = issue(root, "pi-01", "agent", 7), issue(root, "fog1", "gateway", 8)
    inter = certs.issue(root, federation=fed, device_id="fog1", role="intermediate",
                        public_key=bytes(intermediate.verify_key), not_before=now - 300, not_after=now + 86400,
                        serial=9)
    listed = certs.SignedRevocations(inter, certs.sign_revocations(intermediate, number=3, issued_at=now - 60,
                                                                   next_update=now + 3600, revoked=[5, 11]))
    good = agent.encode()
    malformed = {"truncated": good[:-1], "trailing_byte": good + b"\0", "bad_magic": b"ZTC2" + good[4:],
                 "role_code_5": good[:5] + b"\x05" + good[6:], "name_not_ascii_id": good[:63] + b"/" + good[64:],
                 "format_version_2": good[:4] + b"\x02" + good[5:]}
    checks = [("valid", agent, "agent", "pi-01", now, ""),
              ("other_federation", issue(root, "pi-01", "agent", 7, federation="other"), "agent", "pi-01", now,
               "certificate_federation"),
              ("gateway_key_as_agent", gateway, "agent", "fog1", now, "certificate_role"),
              ("agent_key_as_gateway", agent, "gateway", "pi-01", now, "certificate_role"),
              ("other_device_id", agent, "agent", "pi-02", now, "certificate_identity"),
              ("expired", agent, "agent", "pi-01", now + 86401, "certificate_expired"),
              ("not_yet_valid", agent, "agent", "pi-01", now - 301, "certificate_not_yet_valid"),
              ("revoked", issue(root, "pi-05", "agent", 11), "agent", "pi-05", now, "certificate_revoked"),
              ("other_root", issue(other, "pi-01", "agent", 7), "agent", "pi-01", now, "certificate_issuer"),
              ("forged_signature", replace(agent, signature=other.sign(agent.signed_bytes()).signature), "agent",
               "pi-01", now, "certificate_signature")]
    return {
        "now": now, "federation": fed, "root_public": hx(root.verify_key.encode()),
        "root_key_id": hx(certs.key_id(bytes(root.verify_key))),
        "certificates": [{"role": c.role, "device_id": c.device_id, "serial": c.serial, "not_before": c.not_before,
                          "not_after": c.not_after, "public_key": hx(c.public_key), "encoded": hx(c.encode())}
                         for c in (agent, gateway, inter)],
        "revocations": {"number": 3, "issued_at": now - 60, "next_update": now + 3600, "revoked": [5, 11],
                        "encoded": hx(listed.revocations.encode()), "signed": hx(listed.encode())},
        "malformed": [{"name": n, "bytes": hx(b), "error": "certificate_malformed"} for n, b in malformed.items()],
        "checks": [{"name": n, "certificate": hx(c.encode()), "role": role, "device_id": dev, "now": t, "error": err}
                   for n, c, role, dev, t, err in checks],
    }


def dp_vectors() -> dict:
    """ROUND_CONFIG with the signed DP record (docs/protocol.md 1.6): the same round without and with
    DP, its signed frame, and bodies every decoder refuses, with the error class."""
    plain = RoundConfig(dim=1000, threshold=4, max_clients=5, mask_bits=32, frac_bits=16, clip_q=8 << 16,
                        max_weight=100, security=ACTIVE, key_reuse=True)
    record = DpConfig(min_survivors=4, l2_clip_q=1 << 16, poisson_mean=2_250_000_000)
    signed = replace(plain, dp=record)
    body = signed.encode()
    frame = wire.RoundConfigMessage(0, 3, 8, signed).encode(SigningKey(fixed("identity-server")))

    def patched(offset: int, value: bytes) -> str:
        return hx(body[:offset] + value + body[offset + len(value):])

    refused = [
        {"case": "flag without record", "body": hx(body[:28]), "error": "MalformedMessage"},
        {"case": "record without flag", "body": hx(plain.encode() + body[28:]), "error": "MalformedMessage"},
        {"case": "reserved byte", "body": patched(29, b"\x01"), "error": "MalformedMessage"},
        {"case": "unknown mechanism", "body": patched(28, b"\x02"), "error": "ConfigurationError"},
        {"case": "poisson mean 0", "body": patched(40, bytes(8)), "error": "ConfigurationError"},
        {"case": "poisson mean above 2^52", "body": patched(40, struct.pack("<Q", (1 << 52) + 1)),
         "error": "ConfigurationError"},
        {"case": "clip 0", "body": patched(32, bytes(8)), "error": "ConfigurationError"},
        {"case": "threshold below min_survivors", "body": patched(30, struct.pack("<H", 5)),
         "error": "ConfigurationError"},
        {"case": "truncated record", "body": hx(body[:-1]), "error": "MalformedMessage"},
    ]
    return {"plain_body": hx(plain.encode()), "plain_digest": hx(plain.digest()),
            "dp_body": hx(body), "dp_digest": hx(signed.digest()),
            "dp_record": {"mechanism": record.mechanism, "min_survivors": record.min_survivors,
                          "l2_clip_q": record.l2_clip_q, "poisson_mean": record.poisson_mean},
            "frame": hx(frame), "server_public": hx(SigningKey(fixed("identity-server")).verify_key.encode()),
            "refused": refused}


GENERATORS = {"kdf": kdf_vectors, "prg": prg_vectors, "shamir": shamir_vectors,
              "fixedpoint": fixedpoint_vectors, "masking": masking_vectors, "graph": graph_vectors,
              "wire": wire_vectors, "epochs": epochs_vectors, "session": session_vectors, "certs": certs_vectors,
              "dp": dp_vectors}


def build() -> dict[str, str]:
    """File name -> JSON text."""
    return {f"{name}.json": json.dumps({"version": wire.VERSION, **gen()}, indent=1, sort_keys=True) + "\n"
            for name, gen in GENERATORS.items()}
