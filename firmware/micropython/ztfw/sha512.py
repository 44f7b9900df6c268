"""SHA-512 (FIPS 180-4) for MicroPython.

The port's hashlib has no sha512, and Ed25519 needs it. The compression function runs in
viper where the port has the emitter (`sha512_viper`: 32-bit halves, native code, no heap);
elsewhere on Python ints masked to 64 bits, which works unchanged on 32-bit ports (big ints)
and 64-bit ones. Both give the same digests (tests compare them with hashlib).
"""
import struct
from array import array

try:
    from ztfw.sha512_viper import compress as _compress_viper
except (ImportError, SyntaxError, ValueError):
    _compress_viper = None

_use_viper = _compress_viper is not None


def use_viper(flag):
    """Select the viper (True) or plain-Python (False) compression; tests compare both."""
    global _use_viper
    _use_viper = bool(flag) and _compress_viper is not None

_M = 0xFFFFFFFFFFFFFFFF

_K = (
    0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc,
    0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118,
    0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694,
    0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
    0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5,
    0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70,
    0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df,
    0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
    0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30,
    0xd192e819d6ef5218, 0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8, 0x1e376c085141ab53, 0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373, 0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
    0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b,
    0xca273eceea26619c, 0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178,
    0x06f067aa72176fba, 0x0a637dc5a2c898a6, 0x113f9804bef90dae, 0x1b710b35131c471b,
    0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc, 0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817,
)

_IV = (
    0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
    0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179,
)


def _compress(h, block):
    w = list(struct.unpack(">16Q", block))
    for t in range(16, 80):
        x = w[t - 15]
        s0 = ((x >> 1) | (x << 63)) ^ ((x >> 8) | (x << 56)) ^ (x >> 7)
        x = w[t - 2]
        s1 = ((x >> 19) | (x << 45)) ^ ((x >> 61) | (x << 3)) ^ (x >> 6)
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & _M)
    a, b, c, d, e, f, g, hh = h
    for t in range(80):
        s1 = ((e >> 14) | (e << 50)) ^ ((e >> 18) | (e << 46)) ^ ((e >> 41) | (e << 23))
        ch = (e & f) ^ (~e & g)
        t1 = (hh + (s1 & _M) + ch + _K[t] + w[t]) & _M
        s0 = ((a >> 28) | (a << 36)) ^ ((a >> 34) | (a << 30)) ^ ((a >> 39) | (a << 25))
        maj = (a & b) ^ (a & c) ^ (b & c)
        t2 = ((s0 & _M) + maj) & _M
        hh = g
        g = f
        f = e
        e = (d + t1) & _M
        d = c
        c = b
        b = a
        a = (t1 + t2) & _M
    h[0] = (h[0] + a) & _M
    h[1] = (h[1] + b) & _M
    h[2] = (h[2] + c) & _M
    h[3] = (h[3] + d) & _M
    h[4] = (h[4] + e) & _M
    h[5] = (h[5] + f) & _M
    h[6] = (h[6] + g) & _M
    h[7] = (h[7] + hh) & _M


# The viper path's constants and scratch: 32-bit halves, high first (built once).
_K32 = None
_W32 = None


def _halves(words):
    out = array("I", bytes(8 * len(words)))
    for i, v in enumerate(words):
        out[2 * i] = v >> 32
        out[2 * i + 1] = v & 0xFFFFFFFF
    return out


class _Viper:
    """State as 16 32-bit words, compressed by sha512_viper."""

    def __init__(self, state=None):
        global _K32, _W32
        if _K32 is None:
            _K32 = _halves(_K)
            _W32 = array("I", bytes(4 * 162))
        self.h = state if state is not None else _halves(_IV)

    def compress(self, block):
        _compress_viper(self.h, block, _W32, _K32)

    def copy(self):
        return _Viper(array("I", self.h))

    def digest(self):
        return struct.pack(">16I", *self.h)


class _Python:
    """State as 8 Python ints of 64 bits."""

    def __init__(self, state=None):
        self.h = state if state is not None else list(_IV)

    def compress(self, block):
        _compress(self.h, block)

    def copy(self):
        return _Python(list(self.h))

    def digest(self):
        return struct.pack(">8Q", *self.h)


class sha512:
    """hashlib-style object: update(data), digest()."""

    def __init__(self, data=b""):
        self._state = _Viper() if _use_viper else _Python()
        self._buf = bytearray()
        self._length = 0
        if data:
            self.update(data)

    def update(self, data):
        self._length += len(data)
        buf = self._buf
        buf.extend(data)
        if len(buf) >= 128:
            n = len(buf) - len(buf) % 128
            mv = memoryview(buf)
            for i in range(0, n, 128):
                self._state.compress(bytes(mv[i:i + 128]))
            self._buf = bytearray(mv[n:])

    def digest(self):
        state = self._state.copy()
        tail = bytearray(self._buf)
        tail.append(0x80)
        pad = (112 - len(tail)) % 128
        tail.extend(bytes(pad))
        tail.extend(struct.pack(">QQ", 0, (self._length * 8) & _M))
        for i in range(0, len(tail), 128):
            state.compress(bytes(tail[i:i + 128]))
        return state.digest()


def digest(data):
    return sha512(data).digest()
