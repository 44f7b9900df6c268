"""tests/vectors/*.json: the files match the generator, and every value is rechecked here against
independent constructions (cryptography's HKDF, AES-ECB counter blocks as the firmware builds
CTR, RFC 7748/8032 vectors, direct polynomial evaluation)."""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.signing import SigningKey, VerifyKey

from ztfl.protocol import fixedpoint, graph, kdf, prg, shamir, vectors, wire
from ztfl.protocol.client import decrypt_share
from ztfl.protocol.config import RoundConfig

VECTORS = Path(__file__).resolve().parent / "vectors"


def load(name):
    return json.loads((VECTORS / f"{name}.json").read_text())


def h(s):
    return bytes.fromhex(s)


def test_vector_files_are_exactly_what_the_generator_writes():
    built = vectors.build()
    assert sorted(built) == sorted(p.name for p in VECTORS.glob("*.json"))
    for name, text in built.items():
        assert (VECTORS / name).read_text() == text, f"{name} is stale: run python -m ztfl.bench.vectors"


def test_hkdf_matches_the_library_implementation():
    for case in load("kdf")["hkdf_sha256_zero_salt"]:
        ref = HKDF(algorithm=hashes.SHA256(), length=case["length"], salt=None,
                   info=h(case["info"])).derive(h(case["ikm"]))
        assert h(case["okm"]) == ref == kdf.hkdf(h(case["ikm"]), h(case["info"]), case["length"])


def test_x25519_rfc7748_and_vectors():
    # RFC 7748 section 6.1
    a = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    b_pub = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    assert kdf.x25519(a, b_pub).hex() == "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    for case in load("kdf")["x25519"]:
        assert kdf.x25519_public(h(case["sk_a"])) == h(case["pk_a"])
        assert kdf.x25519(h(case["sk_a"]), h(case["pk_b"])) == h(case["shared"]) \
            == kdf.x25519(h(case["sk_b"]), h(case["pk_a"]))


def test_key_derivations_follow_the_documented_info_strings():
    d = load("kdf")["derivation"]
    u, v, epoch, rnd = d["u"], d["v"], d["epoch"], d["round"]
    lo, hi = min(u, v), max(u, v)
    ref = lambda ikm, info, n: HKDF(hashes.SHA256(), n, bytes(32), info).derive(ikm)   # noqa: E731
    shared = kdf.x25519(h(d["s_sk_v"]), h(d["s_pk_u"]))          # computed from the other side
    assert shared == h(d["pairwise_shared"])
    ekey = ref(shared, b"ztfl/secagg/v1/pairwise-epoch" + struct.pack("<HHI", lo, hi, epoch), 32)
    assert ekey == h(d["pairwise_epoch_key"])
    assert ref(ekey, b"ztfl/secagg/v1/pairwise-round" + struct.pack("<I", rnd), 16) == h(d["pairwise_mask_key"])
    assert kdf.pairwise_mask_key(h(d["s_sk_u"]), h(d["s_pk_v"]), u, v, epoch, rnd) == h(d["pairwise_mask_key"])
    assert kdf.pairwise_mask_key(h(d["s_sk_v"]), h(d["s_pk_u"]), v, u, epoch, rnd) == h(d["pairwise_mask_key"])
    assert ref(h(d["self_mask_seed"]), b"ztfl/secagg/v1/self-mask" + struct.pack("<HII", u, epoch, rnd), 16) \
        == h(d["self_mask_key"])
    c_shared = kdf.x25519(h(d["c_sk_u"]), h(d["c_pk_v"]))
    assert ref(c_shared, b"ztfl/secagg/v1/share-enc" + struct.pack("<HHI", lo, hi, epoch), 32) \
        == h(d["share_encryption_key"])


def ctr_from_ecb(key: bytes, nbytes: int) -> bytes:
    """AES-CTR as the firmware builds it: ECB over 128-bit big-endian counters from 0."""
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    blocks = (nbytes + 15) // 16
    return ecb.update(b"".join(i.to_bytes(16, "big") for i in range(blocks)))[:nbytes]


def test_mask_generator_is_aes_ctr_from_ecb_counter_blocks_little_endian_words():
    for case in load("prg")["aes128_ctr_masks"]:
        key, n, bits = h(case["key"]), case["nwords"], case["mask_bits"]
        stream = ctr_from_ecb(key, n * bits // 8)
        assert stream == h(case["keystream"])
        words = [int.from_bytes(stream[i:i + bits // 8], "little") for i in range(0, len(stream), bits // 8)]
        assert words == case["words"] == [int(w) for w in prg.mask(key, n, bits)]


def test_shamir_vectors_by_direct_polynomial_evaluation():
    data = load("shamir")
    p = int(data["prime"])
    assert p == 2**256 + 297 == shamir.PRIME
    for case in data["sharing"]:
        poly = [int.from_bytes(h(case["secret"]), "little")] + \
               [int.from_bytes(h(c), "little") for c in case["coefficients"]]
        for share in case["shares"]:
            x = share["x"]
            assert int.from_bytes(h(share["y"]), "little") == sum(c * x**i for i, c in enumerate(poly)) % p
        chosen = [shamir.Share(s["x"], int.from_bytes(h(s["y"]), "little"))
                  for s in case["shares"] if s["x"] in case["reconstruct_from"]]
        assert shamir.reconstruct(chosen, case["threshold"]) == h(case["reconstructed"]) == h(case["secret"])


def test_fixed_point_vectors():
    for case in load("fixedpoint")["encode"]:
        words = fixedpoint.encode(np.array(case["values"]), case["weight"], case["frac_bits"],
                                  case["clip_q"], case["mask_bits"])
        assert [int(w) for w in words] == case["words"]
        m = 2 ** case["mask_bits"]
        for value, q, word in zip(case["values"], case["quantized"], case["words"]):
            assert q == max(-case["clip_q"], min(case["clip_q"], round(value * 2 ** case["frac_bits"])))
            assert word == (case["weight"] * q) % m
        assert case["words"][-1] == case["weight"]


def test_masking_vector_masks_cancel_to_the_encoded_sum():
    data = load("masking")
    config = RoundConfig.decode(h(data["config"]))
    m = 2**config.mask_bits
    total = [0] * config.words
    for client in data["clients"]:
        encoded = fixedpoint.encode(np.array(client["input"]), client["weight"], config.frac_bits,
                                    config.clip_q, config.mask_bits)
        assert [int(w) for w in encoded] == client["encoded"]
        total = [(a + b) % m for a, b in zip(total, client["masked"])]
    for client in data["clients"]:
        key = kdf.self_mask_key(h(client["self_mask_seed"]), client["id"], data["epoch"], data["round"])
        total = [(a - b) % m for a, b in zip(total, prg.mask(key, config.words, config.mask_bits).tolist())]
    assert total == data["sum_unmasked"]
    plain = [sum(c["encoded"][i] for c in data["clients"]) % m for i in range(config.words)]
    assert total == plain


def test_graph_vectors():
    data = load("graph")
    for case in data["harary"]:
        nb = graph.neighbours(case["ids"], case["neighbors"], h(case["roster_digest"]))
        assert {str(u): sorted(v) for u, v in nb.items()} == case["neighbours"]
        for u, vs in nb.items():
            assert all(u in nb[v] for v in vs)                 # symmetric
            if case["neighbors"]:
                assert len(vs) == case["neighbors"]
    assert data["secagg_plus_degree"]["100"] == 14


def test_wire_frames_decode_verify_and_reencode_byte_for_byte():
    data = load("wire")
    keys = {int(c): VerifyKey(h(k)) for c, k in data["identity_public"].items()}
    for c, seed in data["identity_seeds"].items():
        assert SigningKey(h(seed)).verify_key.encode() == keys[int(c)].encode()
    seen = set()
    for entry in data["frames"]:
        frame = h(entry["frame"])
        decoded = wire.decode_frame(frame)
        msg = decoded.verify(keys[entry["sender"]])
        assert msg.TYPE == entry["type"] and msg.sender == entry["sender"]
        assert decoded.signed == h(entry["signed"])
        assert decoded.signed == frame[:20] + hashlib.sha256(h(entry["body"])).digest()
        assert msg.body() == h(entry["body"])
        # Ed25519 is deterministic: re-encoding with the seed gives the same bytes.
        seed = h(data["identity_seeds"][str(entry["sender"])])
        assert msg.encode(SigningKey(seed)) == frame
        seen.add(msg.TYPE)
    # The key-reuse messages have their frames in epochs.json (0x0C) and session.json (0x0D, 0x0E).
    assert seen == set(wire.MESSAGE_TYPES) - {wire.UNMASK_ROUND_KEYS, wire.CONSISTENCY_TAGS,
                                              wire.UNMASK_REQUEST_TAGS}


def test_share_encryption_vectors():
    for case in load("wire")["share_encryption"]:
        ct = h(case["ciphertext"])
        assert ct[:24] == h(case["nonce"]) and len(ct) == wire.CIPHERTEXT_BYTES
        assert decrypt_share(h(case["key"]), ct, h(case["aad"])) == h(case["plaintext"])
        assert h(case["aad"]) == wire.share_aad(1, 9, case["from"], case["to"])


def test_ed25519_rfc8032_test_1():
    key = SigningKey(h("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    assert key.verify_key.encode().hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert key.sign(b"").signature.hex().startswith("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155")


@pytest.mark.parametrize("name", ["kdf", "prg", "shamir", "fixedpoint", "masking", "graph", "wire"])
def test_vector_files_declare_the_protocol_version(name):
    assert load(name)["version"] == wire.VERSION


def test_graph_commit_and_reveal_vectors_by_the_documented_hashes():
    """docs/protocol.md 1.7: commitment = SHA-256(context || u16 id || u32 epoch || u32 round || r),
    seed = SHA-256(context || roster_digest || (u16 id || r) by ascending id), then Fisher-Yates
    with the AES-CTR words of HKDF(seed, "ztfl/secagg/v1/graph", 16)."""
    case = load("graph")["commit_reveal"]
    reveals = {int(c): h(r) for c, r in case["reveals"].items()}
    for c, r in reveals.items():
        ref = hashlib.sha256(b"ztfl/secagg/v1/graph-commit" + struct.pack("<HII", c, case["epoch"], case["round"])
                             + r).digest()
        assert ref == h(case["commitments"][str(c)]) == graph.commitment(c, case["epoch"], case["round"], r)
    seed = hashlib.sha256(b"ztfl/secagg/v1/graph-seed" + h(case["roster_digest"]) + b"".join(
        struct.pack("<H", c) + reveals[c] for c in sorted(reveals))).digest()
    assert seed == h(case["seed"]) == graph.graph_seed(h(case["roster_digest"]), reveals)
    key = HKDF(hashes.SHA256(), 16, bytes(32), b"ztfl/secagg/v1/graph").derive(seed)
    n = len(case["ids"])
    words = struct.unpack(f"<{n}I", ctr_from_ecb(key, 4 * n))
    order = sorted(case["ids"])
    for step, i in enumerate(range(n - 1, 0, -1)):
        j = words[step] % (i + 1)
        order[i], order[j] = order[j], order[i]
    assert order == case["permutation"]
    half = case["neighbors"] // 2
    for i, u in enumerate(order):
        ring = {order[(i + d) % n] for d in range(-half, half + 1) if d}
        assert sorted(ring) == case["neighbours"][str(u)]


def test_wire_vectors_reveal_what_the_adverts_committed_to():
    data = load("wire")
    frames = {f["name"]: wire.decode_frame(h(f["frame"])).message for f in data["frames"]}
    roster = frames["roster"]
    reveals = {int(c): h(r) for c, r in data["graph_reveals"].items()}
    assert frames["advertise_keys"].commitment == roster.entries[0].commitment
    for entry in roster.entries:
        assert entry.commitment == graph.commitment(entry.client_id, data["epoch"], data["round"], reveals[entry.client_id])
    assert frames["graph_reveal"].reveal == reveals[1]
    assert dict(frames["graph_seeds"].reveals) == reveals
    assert h(data["graph_seed"]) == graph.graph_seed(hashlib.sha256(roster.body()).digest(), reveals)
    assert len(roster.body()) == 4 + 162 * len(roster.entries) and len(frames["advertise_keys"].body()) == 128
