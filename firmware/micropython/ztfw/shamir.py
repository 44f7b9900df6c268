"""Shamir secret sharing over a prime field GF(p).

Coefficients come from os.urandom (random.getrandbits is at most 32 bits on the
port). Inverses use Fermat: pow(a, -1, p) silently returns 0 on MicroPython.
"""
import os


class ShamirError(ValueError):
    pass


def _random_below(p):
    nbytes = (_bit_length(p) + 7) // 8 + 16
    # 128 extra bits make the modular bias negligible.
    return int.from_bytes(os.urandom(nbytes), "big") % p


def _bit_length(n):
    # MicroPython ints have no bit_length().
    bits = 0
    while n >> (bits + 32):
        bits += 32
    while n >> bits:
        bits += 1
    return bits


def split(secret, threshold, xs, p, random_below=_random_below):
    """Shares (x, f(x)) of `secret` (an int < p) for each x in `xs`; any `threshold` rebuild it."""
    if not 0 <= secret < p:
        raise ShamirError("secret out of field range")
    if threshold < 1 or threshold > len(xs):
        raise ShamirError("threshold must be in 1..number of shares")
    seen = set()
    for x in xs:
        if not 0 < x < p or x in seen:
            raise ShamirError("share x-coordinates must be distinct and non-zero")
        seen.add(x)
    coeffs = [secret] + [random_below(p) for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        y = 0
        for c in reversed(coeffs):
            y = (y * x + c) % p
        shares.append((x, y))
    return shares


def reconstruct(shares, p):
    """Lagrange interpolation at 0 of (x, y) pairs with distinct non-zero x."""
    if not shares:
        raise ShamirError("no shares")
    xs = [x for x, _ in shares]
    if len(set(xs)) != len(xs) or any(not 0 < x < p for x in xs):
        raise ShamirError("share x-coordinates must be distinct and non-zero")
    secret = 0
    for i, (xi, yi) in enumerate(shares):
        num = 1
        den = 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % p
                den = den * (xj - xi) % p
        secret = (secret + yi * num * pow(den, p - 2, p)) % p
    return secret
