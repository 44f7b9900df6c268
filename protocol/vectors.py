"""Writes tests/vectors/*.json from this reference implementation.

    python -m protocol.vectors [OUTDIR]      (default: tests/vectors)

Every input is derived from fixed labels, so the files are reproducible byte for byte (the AEAD
nonces and Shamir coefficients are fixed here too). The MicroPython firmware and the Python tests
both check themselves against these files. Byte strings are hex; integers are decimal.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from nacl.signing import SigningKey

from protocol import fixedpoint, graph, kdf, prg, shamir, wire
from protocol.client import encrypt_share
from protocol.config import ACTIVE, RoundConfig

OUT = Path(__file__).resolve().parents[1] / "tests" / "vectors"


def fixed(label: str, n: int = 32) -> bytes:
    """Deterministic test bytes: SHA-256 chained from a label."""
    out, block = b"", label.encode()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return out[:n]


def hx(b: bytes) -> str:
    return bytes(b).hex()


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
    config = RoundConfig(dim=4, threshold=3, max_clients=4, mask_bits=32, frac_bits=16,
                         clip_q=8 << 16, max_weight=10, neighbors=0, security=ACTIVE)
    ids = [1, 2, 3, 4]
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
    # The neighbour graph of a key-reuse round is seeded by the epoch graph digest (1.7).
    g_ids = list(range(2, 22, 2))
    g_entries = [wire.RosterEntry(c, kdf.x25519_public(fixed(f"g-c-{c}")), kdf.x25519_public(fixed(f"g-s-{c}")),
                                  bytes(64)) for c in g_ids]
    g_digest = graph.epoch_graph_digest(epoch, g_entries)
    out["epoch_graph"] = {"epoch": epoch, "neighbors": 4,
                          "entries": [{"id": e.client_id, "c_pk": hx(e.c_pk), "s_pk": hx(e.s_pk)} for e in g_entries],
                          "digest": hx(g_digest),
                          "neighbours": {str(c): sorted(n) for c, n in graph.neighbours(g_ids, 4, g_digest).items()}}
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
    return {"harary": cases, "secagg_plus_degree": {str(n): graph.secagg_plus_degree(n)
                                                    for n in (5, 10, 17, 100, 1000)}}


def wire_vectors() -> dict:
    config, ids, identities, server_identity, c_sk, s_sk, seeds = _round_fixture()
    epoch, round_id = 1, 9
    digest = config.digest()
    frames = []

    def add(name, msg, key):
        frame = msg.encode(key)
        body = msg.body()
        frames.append({"name": name, "type": msg.TYPE, "sender": msg.sender, "frame": hx(frame),
                       "body": hx(body), "signed": hx(frame[:wire.HEADER_BYTES] + hashlib.sha256(body).digest())})

    add("round_config", wire.RoundConfigMessage(0, epoch, round_id, config), server_identity)
    adverts = {}
    for c in ids:
        msg = wire.AdvertiseKeys(c, epoch, round_id, digest, kdf.x25519_public(c_sk[c]), kdf.x25519_public(s_sk[c]))
        adverts[c] = msg.encode(identities[c])
        if c == 1:
            add("advertise_keys", msg, identities[c])
    entries = tuple(wire.RosterEntry(c, kdf.x25519_public(c_sk[c]), kdf.x25519_public(s_sk[c]),
                                     adverts[c][-64:]) for c in ids)
    add("roster", wire.Roster(0, epoch, round_id, entries), server_identity)
    # Client 1 shares with 2, 3, 4 (complete graph) with fixed coefficients and nonces.
    group = ids
    b_coeffs = [int.from_bytes(fixed(f"b1-c{i}", 40), "little") % shamir.PRIME for i in range(2)]
    s_coeffs = [int.from_bytes(fixed(f"s1-c{i}", 40), "little") % shamir.PRIME for i in range(2)]
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
        "share_encryption": enc_cases,
        "frames": frames,
    }


GENERATORS = {"kdf": kdf_vectors, "prg": prg_vectors, "shamir": shamir_vectors,
              "fixedpoint": fixedpoint_vectors, "masking": masking_vectors, "graph": graph_vectors,
              "wire": wire_vectors, "epochs": epochs_vectors}


def build() -> dict[str, str]:
    """File name -> JSON text."""
    return {f"{name}.json": json.dumps({"version": wire.VERSION, **gen()}, indent=1, sort_keys=True) + "\n"
            for name, gen in GENERATORS.items()}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else OUT
    out.mkdir(parents=True, exist_ok=True)
    for name, text in build().items():
        (out / name).write_text(text)
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
