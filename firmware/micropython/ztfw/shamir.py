"""Shamir secret sharing of 32-byte secrets over GF(p), p = 2^256 + 297 (docs/protocol.md 1.5).

A share is (x, y): x is the holder's client id (1..65535), y is 33 bytes little-endian.
Coefficients are 40 random bytes (little-endian) reduced mod p, as in the CPython
reference, so a fixed random source gives identical shares. Inverses use Fermat:
pow(a, -1, p) silently returns 0 on MicroPython.
"""
import os

PRIME = 2 ** 256 + 297
SECRET_BYTES = 32
SHARE_BYTES = 33
MAX_INDEX = 0xFFFF


class ShamirError(ValueError):
    pass


def encode_y(y):
    if not 0 <= y < PRIME:
        raise ShamirError("share value outside the field")
    return y.to_bytes(SHARE_BYTES, "little")


def decode_y(data):
    if len(data) != SHARE_BYTES:
        raise ShamirError("a share value is 33 bytes, got %d" % len(data))
    y = int.from_bytes(bytes(data), "little")
    if y >= PRIME:
        raise ShamirError("share value outside the field")
    return y


def _check_indices(xs):
    seen = set()
    for x in xs:
        if not isinstance(x, int) or not 1 <= x <= MAX_INDEX:
            raise ShamirError("share index must be in 1..65535, got %r" % (x,))
        if x in seen:
            raise ShamirError("duplicate share index %d" % x)
        seen.add(x)


def random_coefficient(randbytes=os.urandom):
    return int.from_bytes(randbytes(40), "little") % PRIME


def split_with_coefficients(secret, coefficients, xs):
    """[(x, y)] for the polynomial secret + c1 x + c2 x^2 + ... at each x in xs."""
    if len(secret) != SECRET_BYTES:
        raise ShamirError("secrets are 32 bytes, got %d" % len(secret))
    _check_indices(xs)
    poly = [int.from_bytes(bytes(secret), "little")] + list(coefficients)
    out = []
    for x in xs:
        y = 0
        for c in reversed(poly):
            y = (y * x + c) % PRIME
        out.append((x, y))
    return out


def split(secret, threshold, xs, randbytes=os.urandom):
    if threshold < 1 or threshold > len(xs):
        raise ShamirError("threshold %d outside 1..%d holders" % (threshold, len(xs)))
    coefficients = [random_coefficient(randbytes) for _ in range(threshold - 1)]
    return split_with_coefficients(secret, coefficients, xs)


def reconstruct(shares, threshold):
    """The 32-byte secret from the first `threshold` of (x, y) shares."""
    if threshold < 1 or len(shares) < threshold:
        raise ShamirError("%d shares, %d needed" % (len(shares), threshold))
    _check_indices([x for x, _ in shares])
    used = shares[:threshold]
    xs = [x for x, _ in used]
    secret = 0
    for i, (xi, yi) in enumerate(used):
        if not 0 <= yi < PRIME:
            raise ShamirError("share value outside the field")
        num = 1
        den = 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        secret = (secret + yi * num * pow(den, PRIME - 2, PRIME)) % PRIME
    if secret >> (8 * SECRET_BYTES):
        raise ShamirError("shares are inconsistent: the result is not a 32-byte secret")
    return secret.to_bytes(SECRET_BYTES, "little")
