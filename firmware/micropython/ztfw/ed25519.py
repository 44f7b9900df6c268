"""Ed25519 (RFC 8032 §5.1) in plain MicroPython: key derivation, sign, verify.

The device signs its protocol messages with its provisioned Ed25519 key. Points are
kept in extended coordinates (X, Y, Z, T); inversion uses Fermat (pow(a, -1, m) is 0
on MicroPython).
"""
from ztfw.sha512 import sha512

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
_D = (-121665 * pow(121666, P - 2, P)) % P
_SQRT_M1 = pow(2, (P - 1) // 4, P)


class SignatureError(ValueError):
    """A signature, key or point that does not verify or decode."""


def _sha512_int(*parts):
    h = sha512()
    for p in parts:
        h.update(p)
    return int.from_bytes(h.digest(), "little")


def _add(p, q):
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * _D % P
    d = 2 * z1 * z2 % P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p):
    x1, y1, z1, _ = p
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1) % P
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


_IDENTITY = (0, 1, 1, 0)


def _mul(s, p):
    q = _IDENTITY
    while s > 0:
        if s & 1:
            q = _add(q, p)
        p = _double(p)
        s >>= 1
    return q


def _recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * _SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


_BY = 4 * pow(5, P - 2, P) % P
_BX = _recover_x(_BY, 0)
_B = (_BX, _BY, 1, _BX * _BY % P)


def _encode(p):
    x, y, z, _ = p
    zi = pow(z, P - 2, P)
    x = x * zi % P
    y = y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _decode(s):
    if len(s) != 32:
        raise SignatureError("point must be 32 bytes")
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        raise SignatureError("not a valid curve point")
    return (x, y, 1, x * y % P)


decode_point = _decode


def has_small_order(p):
    """[8]P is the neutral element (x = 0): P is one of the 8 points of small order."""
    for _ in range(3):
        p = _double(p)
    return p[0] % P == 0


def _expand(seed):
    if len(seed) != 32:
        raise SignatureError("private key seed must be 32 bytes")
    h = sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def public_key(seed):
    a, _ = _expand(seed)
    return _encode(_mul(a, _B))


def sign(seed, message, public=None):
    a, prefix = _expand(seed)
    if public is None:
        public = _encode(_mul(a, _B))
    r = _sha512_int(prefix, message) % L
    r_enc = _encode(_mul(r, _B))
    k = _sha512_int(r_enc, public, message) % L
    s = (r + k * a) % L
    return r_enc + s.to_bytes(32, "little")


def verify(public, message, signature):
    """Raises SignatureError unless `signature` is a valid signature of `message`."""
    if len(signature) != 64:
        raise SignatureError("signature must be 64 bytes, got %d" % len(signature))
    a_point = _decode(public)
    r_enc = signature[:32]
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        raise SignatureError("signature scalar out of range")
    k = _sha512_int(r_enc, public, message) % L
    sb = _mul(s, _B)
    rka = _add(_decode(r_enc), _mul(k, a_point))
    if _encode(sb) != _encode(rka):
        raise SignatureError("signature does not verify")
