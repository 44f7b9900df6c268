"""Shamir secret sharing of 32-byte secrets over GF(p), p = 2^256 + 297 (docs/protocol.md, 1.5).

A share is (x, y): x is the holder's client id (1..65535), y a field element encoded as
33 bytes little-endian. Any t shares reconstruct; t - 1 shares are uniformly distributed and
reveal nothing.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from ztfl.protocol.errors import ShamirError

PRIME = 2**256 + 297
SECRET_BYTES = 32
SHARE_BYTES = 33
MAX_INDEX = 0xFFFF


@dataclass(frozen=True)
class Share:
    x: int
    y: int

    def y_bytes(self) -> bytes:
        return self.y.to_bytes(SHARE_BYTES, "little")


def encode_y(y: int) -> bytes:
    if not 0 <= y < PRIME:
        raise ShamirError("share value outside the field")
    return y.to_bytes(SHARE_BYTES, "little")


def decode_y(data: bytes) -> int:
    if len(data) != SHARE_BYTES:
        raise ShamirError(f"a share value is {SHARE_BYTES} bytes, got {len(data)}")
    y = int.from_bytes(data, "little")
    if y >= PRIME:
        raise ShamirError("share value outside the field")
    return y


def secret_to_int(secret: bytes) -> int:
    if len(secret) != SECRET_BYTES:
        raise ShamirError(f"secrets are {SECRET_BYTES} bytes, got {len(secret)}")
    return int.from_bytes(secret, "little")


def random_coefficient(randbytes: Callable[[int], bytes] = os.urandom) -> int:
    # 40 bytes reduced mod p: bias below 2^-60, and no loop for the firmware to get wrong.
    return int.from_bytes(randbytes(40), "little") % PRIME


def _check_indices(xs: Sequence[int]) -> None:
    seen = set()
    for x in xs:
        if not isinstance(x, int) or isinstance(x, bool) or not 1 <= x <= MAX_INDEX:
            raise ShamirError(f"share index must be an int in 1..{MAX_INDEX}, got {x!r}")
        if x in seen:
            raise ShamirError(f"duplicate share index {x}")
        seen.add(x)


def evaluate(coefficients: Sequence[int], x: int) -> int:
    acc = 0
    for c in reversed(coefficients):
        acc = (acc * x + c) % PRIME
    return acc


def split_with_coefficients(secret: bytes, coefficients: Sequence[int],
                            xs: Sequence[int]) -> list[Share]:
    """Shares of `secret` at `xs` for the polynomial secret + c1 x + ... (deterministic: vectors)."""
    _check_indices(xs)
    if any(not 0 <= c < PRIME for c in coefficients):
        raise ShamirError("coefficient outside the field")
    poly = [secret_to_int(secret), *coefficients]
    return [Share(x, evaluate(poly, x)) for x in xs]


def split(secret: bytes, threshold: int, xs: Sequence[int],
          randbytes: Callable[[int], bytes] = os.urandom) -> list[Share]:
    """Shares of a 32-byte secret at the holder ids `xs`; any `threshold` of them reconstruct."""
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        raise ShamirError(f"threshold must be a positive int, got {threshold!r}")
    if threshold > len(xs):
        raise ShamirError(f"threshold {threshold} exceeds the {len(xs)} holders")
    coefficients = [random_coefficient(randbytes) for _ in range(threshold - 1)]
    return split_with_coefficients(secret, coefficients, xs)


@functools.lru_cache(maxsize=256)
def _lagrange_cached(xs: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_lagrange(xs))


def lagrange_at_zero(xs: Sequence[int]) -> list[int]:
    """Coefficients l_i with f(0) = sum l_i f(x_i), one modular inversion in all.

    Cached by index set: a server reconstructs many secrets from the same responders."""
    xs = tuple(xs)
    _check_indices(xs)
    return list(_lagrange_cached(xs))


def _lagrange(xs: tuple[int, ...]) -> list[int]:
    nums, dens = [], []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        nums.append(num)
        dens.append(den)
    # Batch inversion (Montgomery's trick): prefix products, one pow, walk back.
    prefix = [1]
    for d in dens:
        prefix.append(prefix[-1] * d % PRIME)
    inv = pow(prefix[-1], PRIME - 2, PRIME)
    coeffs = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        coeffs[i] = nums[i] * inv * prefix[i] % PRIME
        inv = inv * dens[i] % PRIME
    return coeffs


def reconstruct(shares: Iterable[Share], threshold: int) -> bytes:
    """The 32-byte secret from at least `threshold` shares (the first `threshold` are used).

    Raises ShamirError for too few shares, bad or duplicate indices, or a result that is not a
    32-byte secret (inconsistent shares).
    """
    shares = list(shares)
    if threshold < 1 or len(shares) < threshold:
        raise ShamirError(f"{len(shares)} shares, {threshold} needed")
    _check_indices([s.x for s in shares])
    for s in shares:
        if not isinstance(s.y, int) or not 0 <= s.y < PRIME:
            raise ShamirError("share value outside the field")
    used = shares[:threshold]
    coeffs = lagrange_at_zero([s.x for s in used])
    value = sum(c * s.y for c, s in zip(coeffs, used)) % PRIME
    if value >= 1 << (8 * SECRET_BYTES):
        raise ShamirError("shares are inconsistent: the result is not a 32-byte secret")
    return value.to_bytes(SECRET_BYTES, "little")


def reconstruct_checked(shares: Sequence[Share], threshold: int) -> bytes:
    """Like `reconstruct`, and when more than `threshold` shares are at hand, also from the last
    `threshold` of them: a wrong share changes the two results differently, so one bad share is
    detected (ShamirError) instead of silently giving a wrong secret."""
    secret = reconstruct(shares, threshold)
    if len(shares) > threshold and reconstruct(list(shares)[-threshold:], threshold) != secret:
        raise ShamirError("shares are inconsistent: two subsets reconstruct different secrets")
    return secret
