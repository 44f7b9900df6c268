"""The firmware's cryptography, run in the real MicroPython unix port, against published
vectors (RFC 7748, RFC 8032, RFC 4231, RFC 5869, FIPS 180-4) and against CPython's
`cryptography` / PyNaCl on random inputs generated here."""
from __future__ import annotations

import hashlib
import hmac
import os

import nacl.bindings
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ztfl.firmware_tools.micropython_host import run_json

# One MicroPython process evaluates a list of (name, args) calls and returns hex results,
# so the interpreter starts once per test, not once per vector.
_EVAL = r"""
import sys, json
from binascii import hexlify, unhexlify
from ztfw import sha512, x25519, ed25519, hmac256, aes_ctr, xchacha, shamir

def u(s):
    return unhexlify(s)

def h(b):
    return hexlify(b).decode()

def call(name, a):
    if name == "sha512":
        return h(sha512.digest(u(a[0])))
    if name == "sha512_viper":
        sha512.use_viper(a[0])
        return sha512._compress_viper is not None
    if name == "sha512_parts":
        s = sha512.sha512()
        for part in a:
            s.update(u(part))
        return h(s.digest())
    if name == "x25519":
        return h(x25519.scalarmult(u(a[0]), u(a[1])))
    if name == "x25519_public":
        return h(x25519.public_key(u(a[0])))
    if name == "x25519_shared":
        try:
            return h(x25519.shared_secret(u(a[0]), u(a[1])))
        except x25519.X25519Error as e:
            return "X25519Error"
    if name == "ed25519_public":
        return h(ed25519.public_key(u(a[0])))
    if name == "ed25519_sign":
        return h(ed25519.sign(u(a[0]), u(a[1])))
    if name == "ed25519_verify":
        try:
            ed25519.verify(u(a[0]), u(a[1]), u(a[2]))
            return "ok"
        except ed25519.SignatureError as e:
            return "SignatureError"
    if name == "ed25519_small_order":
        return ed25519.has_small_order(ed25519.decode_point(u(a[0])))
    if name == "hmac":
        return h(hmac256.hmac_sha256(u(a[0]), u(a[1])))
    if name == "hkdf":
        return h(hmac256.hkdf(u(a[0]), u(a[1]), u(a[2]), a[3]))
    if name == "aes_ctr_viper":
        aes_ctr.use_viper(a[0])
        return aes_ctr._ctr_fill is not None
    if name == "aes_ctr":
        c = aes_ctr.AesCtr(u(a[0]), u(a[1]))
        out = b""
        for n in a[2]:
            out += c.read(n)
        return h(out)
    if name == "xchacha_encrypt":
        return h(xchacha.encrypt(u(a[0]), u(a[1]), u(a[2]), u(a[3])))
    if name == "xchacha_decrypt":
        try:
            return h(xchacha.decrypt(u(a[0]), u(a[1]), u(a[2]), u(a[3])))
        except xchacha.AeadError:
            return "AeadError"
    raise ValueError(name)

calls = json.loads(sys.stdin.read())
print(json.dumps([call(n, a) for n, a in calls]))
"""


def mp_eval(calls):
    return run_json(_EVAL, calls)


@pytest.mark.parametrize("viper", [True, False])
def test_sha512_matches_fips_and_hashlib(viper):
    # Both compression paths: viper (32-bit halves, what the board runs) and plain Python.
    msgs = [b"", b"abc", b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
            b"klmnopqrlmnopqrsmnopqrstnopqrstu", bytes(111), bytes(112), bytes(127), bytes(128),
            b"\xff" * 256, os.urandom(1000)]
    out = mp_eval([["sha512_viper", [viper]]] + [["sha512", [m.hex()]] for m in msgs]
                  + [["sha512_parts", ["61", "", "6263"]]])
    assert out[0] is True          # the unix port has the viper emitter, as the ESP32 port does
    out = out[1:]
    assert out[1] == ("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                      "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
    assert out[:-1] == [hashlib.sha512(m).hexdigest() for m in msgs]
    assert out[-1] == hashlib.sha512(b"abc").hexdigest()


RFC7748_ALICE_SK = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
RFC7748_ALICE_PK = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
RFC7748_BOB_SK = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
RFC7748_BOB_PK = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
RFC7748_SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


def test_x25519_rfc7748_vectors_and_cryptography():
    sk, peer = os.urandom(32), os.urandom(32)
    expected = X25519PrivateKey.from_private_bytes(sk).exchange(X25519PublicKey.from_public_bytes(peer)).hex()
    out = mp_eval([
        # RFC 7748 §5.2, both scalar-multiplication vectors.
        ["x25519", ["a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
                    "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"]],
        ["x25519", ["4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
                    "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493"]],
        # RFC 7748 §5.2 iteration: one step of k = X25519(k, u) from k = u = 9.
        ["x25519", ["09" + "00" * 31, "09" + "00" * 31]],
        # RFC 7748 §6.1 Diffie-Hellman.
        ["x25519_public", [RFC7748_ALICE_SK]],
        ["x25519_public", [RFC7748_BOB_SK]],
        ["x25519_shared", [RFC7748_ALICE_SK, RFC7748_BOB_PK]],
        ["x25519_shared", [RFC7748_BOB_SK, RFC7748_ALICE_PK]],
        ["x25519_shared", [sk.hex(), peer.hex()]],
        # A small-order point (u = 0) gives the all-zero secret, which must be refused.
        ["x25519_shared", [sk.hex(), "00" * 32]],
    ])
    assert out[0] == "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
    assert out[1] == "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"
    assert out[2] == "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"
    assert out[3:7] == [RFC7748_ALICE_PK, RFC7748_BOB_PK, RFC7748_SHARED, RFC7748_SHARED]
    assert out[7] == expected
    assert out[8] == "X25519Error"


RFC8032 = [  # §7.1 TEST 1, 2, 3: secret key, public key, message, signature
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
     "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
     "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
     "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
]


def test_ed25519_rfc8032_sign_and_verify():
    calls = []
    for sk, pk, msg, sig in RFC8032:
        calls += [["ed25519_public", [sk]], ["ed25519_sign", [sk, msg]], ["ed25519_verify", [pk, msg, sig]]]
    out = mp_eval(calls)
    for i, (_, pk, _, sig) in enumerate(RFC8032):
        assert out[3 * i:3 * i + 3] == [pk, sig, "ok"]


def test_ed25519_interoperates_with_pynacl_and_rejects_forgeries():
    seed = os.urandom(32)
    key = nacl.signing.SigningKey(seed)
    msg = os.urandom(52)
    sig = key.sign(msg).signature
    pk = key.verify_key.encode()
    flipped = bytearray(sig)
    flipped[5] ^= 1
    big_s = sig[:32] + (int.from_bytes(sig[32:], "little") + 2 ** 252 + 27742317777372353535851937790883648493
                        ).to_bytes(32, "little")
    out = mp_eval([
        ["ed25519_sign", [seed.hex(), msg.hex()]],
        ["ed25519_verify", [pk.hex(), msg.hex(), sig.hex()]],
        ["ed25519_verify", [pk.hex(), msg.hex(), bytes(flipped).hex()]],
        ["ed25519_verify", [pk.hex(), (msg + b"x").hex(), sig.hex()]],
        ["ed25519_verify", [pk.hex(), msg.hex(), big_s.hex()]],   # S + L: malleated, must fail
        ["ed25519_verify", [pk.hex(), msg.hex(), sig[:63].hex()]],
    ])
    assert out[0] == sig.hex()
    assert out[1:] == ["ok", "SignatureError", "SignatureError", "SignatureError", "SignatureError"]


P25519 = 2 ** 255 - 19
L25519 = 2 ** 252 + 27742317777372353535851937790883648493
Y_ORDER8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
SMALL_ORDER_Y = [0, 1, P25519 - 1, Y_ORDER8, P25519 - Y_ORDER8]


def _y_encoding(y, sign=0):
    return (y | sign << 255).to_bytes(32, "little")


def _base_mul(scalar):
    return nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(scalar.to_bytes(32, "little"))


def _challenge(r_enc, public, msg):
    return int.from_bytes(hashlib.sha512(r_enc + public + msg).digest(), "little") % L25519


def _pynacl_verifies(public, msg, signature):
    try:
        nacl.bindings.crypto_sign_open(signature + msg, public)
        return True
    except Exception:
        return False


def _edge_vectors():
    """(name, public key, message, signature) that a cofactorless verifier without the strict
    checks accepts, so the test shows what the checks stop, not only that they refuse."""
    msg = os.urandom(40)
    s = int.from_bytes(os.urandom(32), "little") % L25519
    forged_any_message = _base_mul(s) + s.to_bytes(32, "little")      # R = [s]B, A = neutral
    a = int.from_bytes(os.urandom(32), "little") % L25519
    pk = _base_mul(a)
    vectors = [
        ("identity A", _y_encoding(1), msg, forged_any_message),
        ("identity A, sign bit set", _y_encoding(1, 1), msg, forged_any_message),
        ("identity A encoded as y = p + 1", _y_encoding(P25519 + 1), msg, forged_any_message),
        ("order-2 A", _y_encoding(P25519 - 1), msg, forged_any_message),
    ]
    # An order-8 A: [k]A is the neutral element whenever 8 divides k; grind the message for it.
    a8 = _y_encoding(Y_ORDER8)
    m8 = next(m for m in (os.urandom(16) for _ in range(1000))
              if _challenge(_base_mul(s), a8, m) % 8 == 0)
    vectors.append(("order-8 A", a8, m8, forged_any_message))
    # A small-order R from the key's owner: R = neutral, S = k a, one of many valid-looking forms.
    for name, r_enc in [("identity R", _y_encoding(1)), ("identity R encoded as y = p + 1",
                                                          _y_encoding(P25519 + 1))]:
        k = _challenge(r_enc, pk, msg)
        vectors.append((name, pk, msg, r_enc + (k * a % L25519).to_bytes(32, "little")))
    # A non-canonical A of a point of large order (y = p + 2 .. p + 18 on the curve).
    y = next(y for y in range(2, 19) if _on_curve_y(y))
    vectors.append(("non-canonical A (y >= p)", _y_encoding(P25519 + y), msg, forged_any_message))
    return pk, vectors


def _on_curve_y(y):
    d = -121665 * pow(121666, P25519 - 2, P25519) % P25519
    x2 = (y * y - 1) * pow(d * y * y + 1, P25519 - 2, P25519) % P25519
    return x2 != 0 and pow(x2, (P25519 - 1) // 2, P25519) == 1


def test_ed25519_refuses_small_order_and_non_canonical_like_libsodium():
    pk, vectors = _edge_vectors()
    # S >= L on an honest signature, and an honest signature that must still pass.
    key = nacl.signing.SigningKey(os.urandom(32))
    msg = os.urandom(33)
    sig = key.sign(msg).signature
    honest_pk = key.verify_key.encode()
    for extra in (0, 1):
        big_s = int.from_bytes(sig[32:], "little") + L25519 + extra * (2 ** 255 - L25519 - 1)
        vectors.append(("S >= L (%d)" % extra, honest_pk, msg, sig[:32] + big_s.to_bytes(32, "little")))
    calls = [["ed25519_verify", [p.hex(), m.hex(), g.hex()]] for _, p, m, g in vectors]
    calls.append(["ed25519_verify", [honest_pk.hex(), msg.hex(), sig.hex()]])
    out = mp_eval(calls)
    for (name, p, m, g), got in zip(vectors, out):
        assert not _pynacl_verifies(p, m, g), name
        assert got == "SignatureError", name
    assert out[-1] == "ok" and _pynacl_verifies(honest_pk, msg, sig)


def test_ed25519_small_order_table_is_exactly_the_small_order_points():
    encodings = [_y_encoding(y, sign) for y in SMALL_ORDER_Y for sign in (0, 1)
                 if not (sign and y in (1, P25519 - 1))]     # x = 0 has no negative encoding
    out = mp_eval([["ed25519_small_order", [e.hex()]] for e in encodings]
                  + [["ed25519_small_order", [_base_mul(7).hex()]]])
    assert out == [True] * len(encodings) + [False]


def test_hmac_sha256_rfc4231_and_hkdf_rfc5869():
    long_key = "aa" * 131
    rnd_key, rnd_msg = os.urandom(70), os.urandom(200)
    out = mp_eval([
        ["hmac", ["0b" * 20, b"Hi There".hex()]],                                   # RFC 4231 case 1
        ["hmac", [b"Jefe".hex(), b"what do ya want for nothing?".hex()]],           # case 2
        ["hmac", [long_key, b"Test Using Larger Than Block-Size Key - Hash Key First".hex()]],  # case 6
        ["hkdf", ["0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9", 42]],  # RFC 5869 case 1
        ["hkdf", ["0b" * 22, "", "", 42]],                                           # case 3
        ["hkdf", ["11" * 32, "", "61626364", 100]],
        ["hmac", [rnd_key.hex(), rnd_msg.hex()]],
    ])
    assert out[0] == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    assert out[1] == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert out[2] == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    assert out[3] == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                      "34007208d5b887185865")
    assert out[4] == ("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
                      "9d201395faa4b61a96c8")
    expected = HKDF(SHA256(), 100, salt=None, info=b"abcd").derive(bytes([0x11]) * 32).hex()
    assert out[5] == expected
    assert out[6] == hmac.new(rnd_key, rnd_msg, "sha256").hexdigest()


@pytest.mark.parametrize("key_len, viper", [(16, True), (32, True), (16, False)])
def test_aes_ctr_over_ecb_matches_cryptography(key_len, viper):
    key = os.urandom(key_len)
    # A counter close to 2^32 and one close to 2^128 exercise the carry paths; counter blocks
    # written in viper (what the board runs) and in Python.
    starts = [bytes(16), bytes(12) + b"\xff\xff\xff\xf0", b"\xff" * 15 + b"\xf8",
              os.urandom(12) + b"\x7f\xff\xff\x00"]
    reads = [1, 15, 16, 17, 500, 1000, 3]
    calls = [["aes_ctr_viper", [viper]]] + [["aes_ctr", [key.hex(), s.hex(), reads]] for s in starts]
    out = mp_eval(calls)
    assert out[0] is True
    for s, got in zip(starts, out[1:]):
        enc = Cipher(algorithms.AES(key), modes.CTR(s)).encryptor()
        assert got == enc.update(bytes(sum(reads))).hex()


def test_xchacha20_poly1305_matches_libsodium_and_rejects_tampering():
    key, nonce = os.urandom(32), os.urandom(24)
    pt, aad = os.urandom(66), b"ztfl/secagg/v1/share" + os.urandom(12)
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(pt, aad, nonce, key)
    bad = bytearray(ct)
    bad[-1] ^= 0x80
    long_pt = os.urandom(200)
    out = mp_eval([
        ["xchacha_encrypt", [key.hex(), nonce.hex(), pt.hex(), aad.hex()]],
        ["xchacha_decrypt", [key.hex(), nonce.hex(), ct.hex(), aad.hex()]],
        ["xchacha_decrypt", [key.hex(), nonce.hex(), bytes(bad).hex(), aad.hex()]],
        ["xchacha_decrypt", [key.hex(), nonce.hex(), ct.hex(), (aad + b"x").hex()]],
        ["xchacha_decrypt", [key.hex(), nonce.hex(), ct[:10].hex(), aad.hex()]],
        ["xchacha_encrypt", [key.hex(), nonce.hex(), long_pt.hex(), ""]],
    ])
    assert out[0] == ct.hex()
    assert out[1] == pt.hex()
    assert out[2:5] == ["AeadError"] * 3
    assert out[5] == nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(long_pt, b"", nonce, key).hex()


_PURE_AES = r"""
import sys, json
from binascii import hexlify, unhexlify
from ztfw import aes_ctr
from ztfw.aes_pure import AesEcb
d = json.loads(sys.stdin.read())
out = {"fips": [], "ctr": []}
for key, pt in d["fips"]:
    buf = bytearray(16)
    AesEcb(unhexlify(key)).encrypt(unhexlify(pt), buf)
    out["fips"].append(hexlify(buf).decode())
aes_ctr.use_cryptolib(False)
for key, start, n in d["ctr"]:
    out["ctr"].append(hexlify(aes_ctr.AesCtr(unhexlify(key), unhexlify(start)).read(n)).decode())
print(json.dumps(out))
"""


def test_pure_aes_fallback_matches_fips197_and_cryptography():
    pt = "00112233445566778899aabbccddeeff"
    fips = [["000102030405060708090a0b0c0d0e0f", pt],                                   # FIPS-197 C.1
            ["000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", pt]]   # C.3
    cases = [(os.urandom(16), bytes(16), 1000), (os.urandom(32), bytes(12) + b"\xff\xff\xff\xfe", 100)]
    out = run_json(_PURE_AES, {"fips": fips, "ctr": [[k.hex(), s.hex(), n] for k, s, n in cases]})
    assert out["fips"] == ["69c4e0d86a7b0430d8cdb78070b4c55a", "8ea2b7ca516745bfeafc49904b496089"]
    for (key, start, n), got in zip(cases, out["ctr"]):
        assert got == Cipher(algorithms.AES(key), modes.CTR(start)).encryptor().update(bytes(n)).hex()
