"""X25519 (RFC 7748) in plain MicroPython: a constant-structure Montgomery ladder.

Python ints are not constant-time; the ladder still performs the same sequence of
operations for every scalar, which is the best this interpreter allows.
"""
P = 2 ** 255 - 19
_A24 = 121665
BASE_POINT = b"\x09" + bytes(31)


class X25519Error(ValueError):
    pass


def _decode_scalar(k):
    if len(k) != 32:
        raise X25519Error("scalar must be 32 bytes, got %d" % len(k))
    b = bytearray(k)
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return int.from_bytes(bytes(b), "little")


def _decode_u(u):
    if len(u) != 32:
        raise X25519Error("u-coordinate must be 32 bytes, got %d" % len(u))
    b = bytearray(u)
    b[31] &= 127
    return int.from_bytes(bytes(b), "little") % P


def scalarmult(k, u):
    """RFC 7748 §5: X25519(k, u) -> 32 bytes."""
    k = _decode_scalar(k)
    x1 = _decode_u(u)
    x2, z2, x3, z3 = 1, 0, x1, 1
    swap = 0
    for t in range(254, -1, -1):
        kt = (k >> t) & 1
        swap ^= kt
        if swap:
            x2, x3 = x3, x2
            z2, z3 = z3, z2
        swap = kt
        a = x2 + z2
        aa = a * a % P
        b = x2 - z2
        bb = b * b % P
        e = aa - bb
        c = x3 + z3
        d = x3 - z3
        da = d * a % P
        cb = c * b % P
        x3 = (da + cb) % P
        x3 = x3 * x3 % P
        z3 = (da - cb) % P
        z3 = x1 * (z3 * z3 % P) % P
        x2 = aa * bb % P
        z2 = e * ((aa + _A24 * e) % P) % P
    if swap:
        x2, x3 = x3, x2
        z2, z3 = z3, z2
    # pow(a, -1, m) is silently 0 on MicroPython: invert with Fermat.
    out = x2 * pow(z2, P - 2, P) % P
    return out.to_bytes(32, "little")


def public_key(private):
    return scalarmult(private, BASE_POINT)


def shared_secret(private, peer_public):
    """X25519 with the all-zero output check of RFC 7748 §6.1 (small-order peer keys)."""
    s = scalarmult(private, peer_public)
    if s == bytes(32):
        raise X25519Error("peer public key is of small order")
    return s
