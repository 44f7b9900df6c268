"""XChaCha20-Poly1305-IETF (libsodium crypto_aead_xchacha20poly1305_ietf) in plain MicroPython.

Used for the encrypted Shamir shares (docs/protocol.md 1.5). Messages are short (66
bytes of plaintext), so plain int arithmetic is fast enough; tags are compared
without early exit.
"""
import struct

_M32 = 0xFFFFFFFF
_SIGMA = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)
_P1305 = (1 << 130) - 5
TAG_BYTES = 16
NONCE_BYTES = 24
KEY_BYTES = 32


class AeadError(ValueError):
    """Authentication failed or an input has the wrong size."""


def _rounds(x):
    for _ in range(10):
        for a, b, c, d in ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
                           (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)):
            xa = (x[a] + x[b]) & _M32
            xd = x[d] ^ xa
            xd = ((xd << 16) | (xd >> 16)) & _M32
            xc = (x[c] + xd) & _M32
            xb = x[b] ^ xc
            xb = ((xb << 12) | (xb >> 20)) & _M32
            xa = (xa + xb) & _M32
            xd ^= xa
            xd = ((xd << 8) | (xd >> 24)) & _M32
            xc = (xc + xd) & _M32
            xb ^= xc
            xb = ((xb << 7) | (xb >> 25)) & _M32
            x[a] = xa
            x[b] = xb
            x[c] = xc
            x[d] = xd


def hchacha20(key, nonce16):
    x = list(_SIGMA) + list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))
    _rounds(x)
    return struct.pack("<8I", x[0], x[1], x[2], x[3], x[12], x[13], x[14], x[15])


def _chacha20_block(key_words, counter, nonce_words):
    init = list(_SIGMA) + key_words + [counter & _M32] + nonce_words
    x = list(init)
    _rounds(x)
    return struct.pack("<16I", *[(x[i] + init[i]) & _M32 for i in range(16)])


def _chacha20_xor(key, counter, nonce12, data):
    kw = list(struct.unpack("<8I", key))
    nw = list(struct.unpack("<3I", nonce12))
    out = bytearray(len(data))
    for off in range(0, len(data), 64):
        block = _chacha20_block(kw, counter, nw)
        counter += 1
        for i in range(min(64, len(data) - off)):
            out[off + i] = data[off + i] ^ block[i]
    return bytes(out)


def poly1305(key32, msg):
    r = int.from_bytes(key32[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(key32[16:], "little")
    acc = 0
    for off in range(0, len(msg), 16):
        block = msg[off:off + 16]
        n = int.from_bytes(bytes(block) + b"\x01", "little")
        acc = (acc + n) * r % _P1305
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def _pad16(n):
    return bytes((16 - n % 16) % 16)


def _mac_data(aad, ct):
    return aad + _pad16(len(aad)) + ct + _pad16(len(ct)) + struct.pack("<QQ", len(aad), len(ct))


def _subkey(key, nonce):
    if len(key) != KEY_BYTES:
        raise AeadError("key must be 32 bytes")
    if len(nonce) != NONCE_BYTES:
        raise AeadError("nonce must be 24 bytes")
    return hchacha20(key, nonce[:16]), bytes(4) + bytes(nonce[16:])


def encrypt(key, nonce, plaintext, aad):
    """Ciphertext || 16-byte tag."""
    subkey, n12 = _subkey(key, nonce)
    poly_key = _chacha20_xor(subkey, 0, n12, bytes(32))
    ct = _chacha20_xor(subkey, 1, n12, plaintext)
    return ct + poly1305(poly_key, _mac_data(aad, ct))


def decrypt(key, nonce, ciphertext, aad):
    if len(ciphertext) < TAG_BYTES:
        raise AeadError("ciphertext shorter than its tag")
    subkey, n12 = _subkey(key, nonce)
    ct = bytes(ciphertext[:-TAG_BYTES])
    poly_key = _chacha20_xor(subkey, 0, n12, bytes(32))
    tag = poly1305(poly_key, _mac_data(aad, ct))
    diff = 0
    for a, b in zip(tag, ciphertext[-TAG_BYTES:]):
        diff |= a ^ b
    if diff:
        raise AeadError("authentication tag does not verify")
    return _chacha20_xor(subkey, 1, n12, ct)
