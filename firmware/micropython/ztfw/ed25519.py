"""Ed25519 (RFC 8032 §5.1) in plain MicroPython: key derivation, sign, verify.

The device signs its protocol messages with its provisioned Ed25519 key. Points are kept in
extended coordinates (X, Y, Z, T); inversion uses Fermat (pow(a, -1, m) is 0 on MicroPython).

Where the time goes (unix port): big-integer multiplications modulo p, about 8 per point
doubling and 7-8 per addition. So:

* signing ([r]B, B fixed) uses a 4-tooth comb over a 15-point table: 64 doublings and at
  most 64 additions instead of 253 doublings and ~126 additions;
* verifying computes [s]B - [k]A in one pass with signed radix-16 digits for both scalars
  (252 shared doublings, at most 128 additions), and compares the encoding of the result with
  R's bytes, so R is never decoded;
* decoding A takes one exponentiation (square root and inversion together).

Verification is strict, as libsodium's crypto_sign_verify_detached: S must be below L, A and R
canonical (y < p) and neither of small order. Without that, A = the neutral element makes one
signature (R = [S]B) verify for every message, and a small-order R lets a key owner produce
signatures that other verifiers judge differently. The small-order check is a lookup of y:
the 8 points of small order have y in {0, 1, p - 1, +-y8}, so it costs nothing next to the
scalar multiplications.

The tables hold fixed multiples of the base point: public values, built on first use.
"""
from ztfw.sha512 import sha512

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
_D = (-121665 * pow(121666, P - 2, P)) % P
_D2 = 2 * _D % P
_SQRT_M1 = pow(2, (P - 1) // 4, P)


class SignatureError(ValueError):
    """A signature, key or point that does not verify or decode."""


def _sha512_int(*parts):
    h = sha512()
    for p in parts:
        h.update(p)
    return int.from_bytes(h.digest(), "little")


# -- point arithmetic ---------------------------------------------------------------------
# A "cached" point is (Y + X, Y - X, Z, 2dT): what an addition needs of its second operand.

def _cached(p):
    x, y, z, t = p
    return ((y + x) % P, (y - x) % P, z, t * _D2 % P)


def _add_cached(p, c, sign=1):
    """p + c (sign 1) or p - c (sign -1); p extended, c cached (add-2008-hwcd-3)."""
    x1, y1, z1, t1 = p
    ypx, ymx, z2, t2d = c
    if sign < 0:
        ypx, ymx = ymx, ypx
    a = (y1 - x1) * ymx % P
    b = (y1 + x1) * ypx % P
    c2 = t1 * t2d % P
    d = 2 * z1 * z2 % P
    if sign < 0:
        c2 = -c2
    e = b - a
    f = d - c2
    g = d + c2
    h = b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _add(p, q):
    return _add_cached(p, _cached(q))


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
    """[s]P by double-and-add (rare uses: the tables, small-order checks)."""
    q = _IDENTITY
    while s > 0:
        if s & 1:
            q = _add(q, p)
        p = _double(p)
        s >>= 1
    return q


def _recover_x(y, sign):
    """x of the curve point with this y and x parity, or None: one exponentiation,
    x = u v^3 (u v^7)^((p-5)/8) with u = y^2 - 1, v = d y^2 + 1 (RFC 8032 §5.1.3)."""
    if y >= P:
        return None
    yy = y * y % P
    u = (yy - 1) % P
    v = (_D * yy + 1) % P
    v3 = v * v % P * v % P
    x = u * v3 % P * pow(u * v3 % P * v3 % P * v % P, (P - 5) // 8, P) % P
    vxx = v * x % P * x % P
    if vxx != u:
        if vxx != (P - u) % P:
            return None
        x = x * _SQRT_M1 % P
    if x == 0 and sign:
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
    y = int.from_bytes(bytes(s), "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        raise SignatureError("not a valid curve point")
    return (x, y, 1, x * y % P)


decode_point = _decode

# y of the 8 points of small order: 1 (neutral), p - 1 (order 2), 0 (order 4), +-y8 (order 8).
_Y8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
_SMALL_ORDER_Y = (0, 1, P - 1, _Y8, P - _Y8)


def _check_strict_encoding(s, what):
    """Refuse a non-canonical (y >= p) or small-order encoding, whatever its sign bit."""
    y = int.from_bytes(bytes(s), "little") & ((1 << 255) - 1)
    if y >= P:
        raise SignatureError("%s is not canonically encoded" % what)
    if y in _SMALL_ORDER_Y:
        raise SignatureError("%s is a point of small order" % what)


def has_small_order(p):
    """[8]P is the neutral element (x = 0): P is one of the 8 points of small order."""
    for _ in range(3):
        p = _double(p)
    return p[0] % P == 0


def in_prime_order_subgroup(p):
    """[L]P is the neutral element (x = 0, y = z): P has no small-order component."""
    q = _mul(L, p)
    return q[0] % P == 0 and (q[1] - q[2]) % P == 0


# -- fixed-base tables ----------------------------------------------------------------------
_tables = {}


def _affine_cached(p):
    """Cached form of p with Z = 1 (table points: one inversion each, once)."""
    x, y, z, _ = p
    zi = pow(z, P - 2, P)
    x = x * zi % P
    y = y * zi % P
    return _cached((x, y, 1, x * y % P))


def _comb_table():
    """T[j] = sum of 2^(64 b) B over the bits b of j (j = 1..15), for signing."""
    t = _tables.get("comb")
    if t is None:
        rows = [_B]
        for _ in range(3):
            p = rows[-1]
            for _ in range(64):
                p = _double(p)
            rows.append(p)
        points = [None] * 16
        for j in range(1, 16):
            acc = None
            for b in range(4):
                if j >> b & 1:
                    acc = rows[b] if acc is None else _add(acc, rows[b])
            points[j] = _affine_cached(acc)
        t = _tables["comb"] = points
    return t


def _multiples_table(p, affine):
    """[1..8]P in cached form (index 0 unused)."""
    out = [None, p]
    p2 = _double(p)
    out.append(p2)
    for _ in range(6):
        out.append(_add(out[-1], p))
    if affine:
        return [None] + [_affine_cached(q) for q in out[1:]]
    return [None] + [_cached(q) for q in out[1:]]


def _base_multiples():
    t = _tables.get("radix16")
    if t is None:
        t = _tables["radix16"] = _multiples_table(_B, True)
    return t


def _radix16(scalar_bytes):
    """64 signed digits in [-8, 8), least significant first (scalar < 2^255)."""
    e = []
    for byte in scalar_bytes:
        e.append(byte & 15)
        e.append(byte >> 4)
    carry = 0
    for i in range(63):
        e[i] += carry
        carry = (e[i] + 8) >> 4
        e[i] -= carry << 4
    e[63] += carry
    return e


def _mul_base(scalar):
    """[scalar]B with the comb (scalar < 2^256)."""
    table = _comb_table()
    sb = scalar.to_bytes(32, "little")
    q = _IDENTITY
    for i in range(63, -1, -1):
        q = _double(q)
        idx = ((sb[i >> 3] >> (i & 7)) & 1
               | ((sb[8 + (i >> 3)] >> (i & 7)) & 1) << 1
               | ((sb[16 + (i >> 3)] >> (i & 7)) & 1) << 2
               | ((sb[24 + (i >> 3)] >> (i & 7)) & 1) << 3)
        if idx:
            q = _add_cached(q, table[idx])
    return q


def _double_mul_sub(s, k, a_point):
    """[s]B - [k]A in one pass of shared doublings (s, k < 2^253)."""
    tb = _base_multiples()
    ta = _multiples_table(a_point, False)
    ds = _radix16(s.to_bytes(32, "little"))
    dk = _radix16(k.to_bytes(32, "little"))
    q = _IDENTITY
    for i in range(63, -1, -1):
        if i != 63:
            q = _double(_double(_double(_double(q))))
        d = ds[i]
        if d > 0:
            q = _add_cached(q, tb[d])
        elif d < 0:
            q = _add_cached(q, tb[-d], -1)
        d = dk[i]
        if d > 0:
            q = _add_cached(q, ta[d], -1)
        elif d < 0:
            q = _add_cached(q, ta[-d])
    return q


# -- RFC 8032 -----------------------------------------------------------------------------
_last_expanded = [b"", None]


def _expand(seed):
    """(scalar a, prefix) of a seed; the last one is kept (a device signs with one key)."""
    if len(seed) != 32:
        raise SignatureError("private key seed must be 32 bytes")
    seed = bytes(seed)
    if _last_expanded[0] == seed:
        return _last_expanded[1]
    h = sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    _last_expanded[0] = seed
    _last_expanded[1] = (a, h[32:])
    return a, h[32:]


def public_key(seed):
    a, _ = _expand(seed)
    return _encode(_mul_base(a))


def sign(seed, message, public=None):
    a, prefix = _expand(seed)
    if public is None:
        public = _encode(_mul_base(a))
    r = _sha512_int(prefix, message) % L
    r_enc = _encode(_mul_base(r))
    k = _sha512_int(r_enc, public, message) % L
    s = (r + k * a) % L
    return r_enc + s.to_bytes(32, "little")


def verify(public, message, signature):
    """Raises SignatureError unless `signature` is a valid signature of `message`."""
    if len(signature) != 64:
        raise SignatureError("signature must be 64 bytes, got %d" % len(signature))
    if len(public) != 32:
        raise SignatureError("public key must be 32 bytes")
    r_enc = bytes(signature[:32])
    s = int.from_bytes(bytes(signature[32:]), "little")
    if s >= L:
        raise SignatureError("signature scalar out of range")
    _check_strict_encoding(public, "public key")
    _check_strict_encoding(r_enc, "signature point R")
    a_point = _decode(public)
    k = _sha512_int(r_enc, public, message) % L
    # [s]B = R + [k]A  <=>  encode([s]B - [k]A) = R: R's bytes must be the canonical encoding.
    if _encode(_double_mul_sub(s, k, a_point)) != r_enc:
        raise SignatureError("signature does not verify")
