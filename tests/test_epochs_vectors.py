"""tests/vectors/epochs.json rechecked with independent constructions: cryptography's HKDF and
X25519, AES-ECB over big-endian counters (as the firmware builds CTR), plain integer sums."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VECTORS = json.loads((Path(__file__).resolve().parent / "vectors" / "epochs.json").read_text())
M = 1 << 32


def hkdf(ikm: bytes, info: bytes, n: int) -> bytes:
    return HKDF(hashes.SHA256(), n, bytes(32), info).derive(ikm)


def prg_words(key: bytes, nwords: int) -> np.ndarray:
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    nblocks = (4 * nwords + 15) // 16
    stream = b"".join(ecb.update(j.to_bytes(16, "big")) for j in range(nblocks))
    return np.array(struct.unpack(f"<{nwords}I", stream[:4 * nwords]), dtype=np.int64)


def pk(sk_hex: str) -> bytes:
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(sk_hex)).public_key().public_bytes_raw()


def test_epoch_keys_are_reused_across_rounds_until_a_client_rekeys():
    rounds = {r["round"]: r for r in VECTORS["rounds"]}
    assert sorted(rounds) == [7, 8, 10]
    ekeys = {r: {(p["u"], p["v"]): p["epoch_key"] for p in rounds[r]["pairs"]} for r in rounds}
    assert ekeys[7] == ekeys[8]                       # same keys, same epoch keys
    assert ekeys[10][(1, 2)] == ekeys[7][(1, 2)]      # 1 and 2 kept theirs
    assert ekeys[10][(1, 3)] != ekeys[7][(1, 3)] and ekeys[10][(2, 3)] != ekeys[7][(2, 3)]
    assert set(rounds[10]["s_sk_rekeyed"]) == {"3"} and rounds[8]["dropped"] == [3]


def test_every_derived_key_matches_an_independent_derivation():
    epoch = VECTORS["epoch"]
    first = {c["id"]: c["s_sk"] for c in VECTORS["rounds"][0]["clients"]}   # everyone's epoch keys
    for rnd in VECTORS["rounds"]:
        secrets = {**first, **{c["id"]: c["s_sk"] for c in rnd["clients"]}}
        secrets.update({int(k): v for k, v in rnd["s_sk_rekeyed"].items()})
        for pair in rnd["pairs"]:
            u, v = pair["u"], pair["v"]
            shared = X25519PrivateKey.from_private_bytes(bytes.fromhex(secrets[u])).exchange(
                X25519PublicKey.from_public_bytes(pk(secrets[v])))
            info = b"ztfl/secagg/v1/pairwise-epoch" + struct.pack("<HHI", u, v, epoch)
            assert hkdf(shared, info, 32).hex() == pair["epoch_key"]
            round_info = b"ztfl/secagg/v1/pairwise-round" + struct.pack("<I", rnd["round"])
            assert hkdf(bytes.fromhex(pair["epoch_key"]), round_info, 16).hex() == pair["round_key"]
        for c in rnd["clients"]:
            info = b"ztfl/secagg/v1/self-mask" + struct.pack("<HII", c["id"], epoch, rnd["round"])
            assert hkdf(bytes.fromhex(c["self_mask_seed"]), info, 16).hex() == c["self_mask_key"]
            assert pk(c["s_sk"]).hex() == c["s_pk"]


def test_self_mask_seeds_are_fresh_every_round():
    seeds = [(c["id"], c["self_mask_seed"]) for r in VECTORS["rounds"] for c in r["clients"]]
    assert len({s for _, s in seeds}) == len(seeds)


def test_masked_words_and_the_unmasked_sum_follow_from_the_keys():
    for rnd in VECTORS["rounds"]:
        round_keys = {(p["u"], p["v"]): bytes.fromhex(p["round_key"]) for p in rnd["pairs"]}
        total = np.zeros(len(rnd["sum_unmasked"]), dtype=np.int64)
        for c in rnd["clients"]:
            u, n = c["id"], len(c["encoded"])
            masked = np.array(c["encoded"], dtype=np.int64) + prg_words(bytes.fromhex(c["self_mask_key"]), n)
            for v in rnd["n2"]:
                if v == u:
                    continue
                words = prg_words(round_keys[(min(u, v), max(u, v))], n)
                masked += words if u < v else -words
            assert [int(w) for w in masked % M] == c["masked"]
            total += np.array(c["encoded"], dtype=np.int64)
        assert [int(w) for w in total % M] == rnd["sum_unmasked"]
        assert rnd["sum_unmasked"][-1] == len(rnd["survivors"])


def test_key_reuse_frames_decode_verify_and_reencode():
    from nacl.signing import SigningKey

    from ztfl.protocol import wire
    from ztfl.protocol.config import FLAG_KEY_REUSE, RoundConfig

    config = RoundConfig.decode(bytes.fromhex(VECTORS["config"]))
    assert config.key_reuse and bytes.fromhex(VECTORS["config"])[7] & FLAG_KEY_REUSE
    server = SigningKey(bytes.fromhex(VECTORS["server_identity_seed"]))
    frame = bytes.fromhex(VECTORS["round_config_frame"])
    msg = wire.decode_frame(frame).verify(server.verify_key)
    assert msg.config == config and msg.epoch == VECTORS["epoch"]
    entry = VECTORS["unmask_round_keys"]
    client = SigningKey(bytes.fromhex(entry["identity_seed"]))
    frame = bytes.fromhex(entry["frame"])
    msg = wire.decode_frame(frame).verify(client.verify_key)
    assert msg.TYPE == entry["type"] == wire.UNMASK_ROUND_KEYS == 0x0C
    assert msg.body() == bytes.fromhex(entry["body"]) and msg.encode(client) == frame
    body = bytes.fromhex(entry["body"])
    n_b, n_k = struct.unpack("<HH", body[:4])
    assert len(body) == 4 + 35 * n_b + 18 * n_k
    rnd = {r["round"]: r for r in VECTORS["rounds"]}[entry["round"]]
    pairs = {(p["u"], p["v"]): p["round_key"] for p in rnd["pairs"]}
    assert [(d, k.hex()) for d, k in msg.round_keys] == [(d, pairs[(1, d)]) for d in rnd["dropped"]]


def test_the_epoch_graph_is_fixed_once_and_later_rosters_only_lose_members():
    from ztfl.protocol import graph

    g = VECTORS["epoch_graph"]
    seed = bytes.fromhex(g["seed"])
    full = graph.neighbours(g["members"], g["neighbors"], seed)
    assert {str(c): sorted(n) for c, n in full.items()} == g["neighbours"]
    # A later round of the epoch: the same graph, the absent member a dropout of its neighbours.
    assert {str(c): sorted(full[c] & set(g["present"])) for c in g["present"]} == g["present_neighbours"]
    fixed = graph.FixedGraph(g["epoch"], tuple(g["members"]), g["neighbors"], seed)
    assert {str(c): sorted(n) for c, n in fixed.neighbours(g["present"]).items()} == g["present_neighbours"]
