"""AES encryption (FIPS 197), ECB over whole blocks, in plain MicroPython: the mask
generator's fallback on ports built without `cryptolib`. Table-driven (T-tables built at
import); only encryption is needed for CTR mode."""
import struct


def _xtime(a):
    a <<= 1
    return (a ^ 0x11B) if a & 0x100 else a


def _tables():
    sbox = bytearray(256)
    p = q = 1
    # Generate the S-box from the multiplicative inverse and the affine map.
    while True:
        p = p ^ _xtime(p) & 0xFF
        q ^= q << 1
        q ^= q << 2
        q ^= q << 4
        q &= 0xFF
        if q & 0x80:
            q ^= 0x09
        x = q ^ ((q << 1) | (q >> 7)) ^ ((q << 2) | (q >> 6)) ^ ((q << 3) | (q >> 5)) ^ ((q << 4) | (q >> 4))
        sbox[p] = (x ^ 0x63) & 0xFF
        if p == 1:
            break
    sbox[0] = 0x63
    te = [0] * 256
    for i in range(256):
        s = sbox[i]
        s2 = _xtime(s) & 0xFF
        s3 = s2 ^ s
        te[i] = (s2 << 24) | (s << 16) | (s << 8) | s3
    return bytes(sbox), te


_SBOX, _TE0 = _tables()
_TE1 = [((t >> 8) | (t << 24)) & 0xFFFFFFFF for t in _TE0]
_TE2 = [((t >> 16) | (t << 16)) & 0xFFFFFFFF for t in _TE0]
_TE3 = [((t >> 24) | (t << 8)) & 0xFFFFFFFF for t in _TE0]
_RCON = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1B, 0x36)


def _expand(key):
    nk = len(key) // 4
    rounds = nk + 6
    w = list(struct.unpack(">%dI" % nk, key))
    s = _SBOX
    for i in range(nk, 4 * (rounds + 1)):
        t = w[i - 1]
        if i % nk == 0:
            t = ((s[(t >> 16) & 0xFF] << 24) | (s[(t >> 8) & 0xFF] << 16) | (s[t & 0xFF] << 8)
                 | s[t >> 24]) ^ (_RCON[i // nk - 1] << 24)
        elif nk > 6 and i % nk == 4:
            t = (s[t >> 24] << 24) | (s[(t >> 16) & 0xFF] << 16) | (s[(t >> 8) & 0xFF] << 8) | s[t & 0xFF]
        w.append(w[i - nk] ^ t)
    return w, rounds


class AesEcb:
    def __init__(self, key):
        if len(key) not in (16, 32):
            raise ValueError("AES key must be 16 or 32 bytes")
        self._w, self._rounds = _expand(bytes(key))

    def _block(self, src, off, dst):
        w = self._w
        t0, t1, t2, t3 = _TE0, _TE1, _TE2, _TE3
        s = _SBOX
        a, b, c, d = struct.unpack_from(">4I", src, off)
        a ^= w[0]
        b ^= w[1]
        c ^= w[2]
        d ^= w[3]
        k = 4
        for _ in range(self._rounds - 1):
            a, b, c, d = (
                t0[a >> 24] ^ t1[(b >> 16) & 0xFF] ^ t2[(c >> 8) & 0xFF] ^ t3[d & 0xFF] ^ w[k],
                t0[b >> 24] ^ t1[(c >> 16) & 0xFF] ^ t2[(d >> 8) & 0xFF] ^ t3[a & 0xFF] ^ w[k + 1],
                t0[c >> 24] ^ t1[(d >> 16) & 0xFF] ^ t2[(a >> 8) & 0xFF] ^ t3[b & 0xFF] ^ w[k + 2],
                t0[d >> 24] ^ t1[(a >> 16) & 0xFF] ^ t2[(b >> 8) & 0xFF] ^ t3[c & 0xFF] ^ w[k + 3])
            k += 4
        out = (
            ((s[a >> 24] << 24) | (s[(b >> 16) & 0xFF] << 16) | (s[(c >> 8) & 0xFF] << 8) | s[d & 0xFF]) ^ w[k],
            ((s[b >> 24] << 24) | (s[(c >> 16) & 0xFF] << 16) | (s[(d >> 8) & 0xFF] << 8) | s[a & 0xFF]) ^ w[k + 1],
            ((s[c >> 24] << 24) | (s[(d >> 16) & 0xFF] << 16) | (s[(a >> 8) & 0xFF] << 8) | s[b & 0xFF]) ^ w[k + 2],
            ((s[d >> 24] << 24) | (s[(a >> 16) & 0xFF] << 16) | (s[(b >> 8) & 0xFF] << 8) | s[c & 0xFF]) ^ w[k + 3])
        struct.pack_into(">4I", dst, off, *out)

    def encrypt(self, src, dst):
        """ECB-encrypt `src` (a multiple of 16 bytes) into `dst`, like cryptolib.aes(key, 1)."""
        if len(src) % 16 or len(dst) < len(src):
            raise ValueError("ECB input must be whole 16-byte blocks")
        for off in range(0, len(src), 16):
            self._block(src, off, dst)
