"""Exact Poisson and Skellam samples from a cryptographic source of random words (docs/privacy.md).

The agents' noise is Skellam, Poisson(mean) - Poisson(mean) per coordinate, with an integer mean
signed into the round configuration. Every Poisson sample is exact: its distribution is the
Poisson law itself, given uniform random bits, with no floating-point sampler in between.

Rejection from a geometric staircase. A candidate is k = mean + j with

    j = b*w + u  or  -(b*w + u) - 1      (a random sign)
    b ~ Geometric(1/2)                    (the trailing zero bits of a random word)
    u ~ Uniform{0..w-1}                   (w: the largest power of two <= sqrt(mean))

so the proposal is q(j) = 2^-b / (4w), and it is accepted iff U < A(j) = r(j) 2^b / K, where
U is uniform on [0, 1), r(j) = P(mean + j) / P(mean) (a ratio of integers), and K >= sup r(j) 2^b
is fixed per mean from the concavity of log r. About half the candidates are accepted.

The comparison U < A(j) is exact in three tiers, each using the same U (refined by more random
bits when a tier cannot decide):
  1. numpy floats, vectorised: log A(j) from Stirling's series with every cancelling term written
     out (log A = -j(j+1/2)/mean - (k+1/2)(log1p(x) - x) + S(mean) - S(k) + b ln 2 - ln K,
     x = j/mean), decided only if U is farther from A than 2^-40 times the terms' sizes, which is
     more than 250 times their worst-case rounding error;
  2. decimal arithmetic at 60+ digits (correctly rounded ln), with an explicit error bound;
  3. exact rationals (Python integers), which always decide.
Tier 1 leaves about one candidate in 10^11 to the others at training noise.
"""
from __future__ import annotations

import hashlib
import math
import os
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ztfl.protocol.config import MAX_POISSON_MEAN     # 2^52: tier 1's doubles hold every integer to 2^53

_MARGIN = 2.0 ** -40            # tier 1's error bound relative to the sizes of its terms
_FAST_MIN = 16                  # tier 1 needs k and mean >= 16 (Stirling to 3 terms within 1e-12)
_SERIES_BELOW = 0.125           # log1p(x) - x by its series below this |x|, else directly
_SERIES_TERMS = 24
_EXACT_FACTORIAL_BELOW = 4096   # tier 2: ln n! of the exact n! below, Stirling's series from here
_CHEAP_RATIONAL_BITS = 20_000   # below this size of the exact ratio, tier 3 is cheaper than tier 2
_LN2 = math.log(2.0)
# B_2 .. B_18: Stirling's series ln n! = (n+1/2) ln n - n + ln(2 pi)/2 + sum B_2i / (2i(2i-1) n^(2i-1)).
_BERNOULLI = (Fraction(1, 6), Fraction(-1, 30), Fraction(1, 42), Fraction(-1, 30), Fraction(5, 66),
              Fraction(-691, 2730), Fraction(7, 6), Fraction(-3617, 510), Fraction(43867, 798))


class SystemWords:
    """Uniform 64-bit words from the operating system's CSPRNG (os.urandom): the agents' noise."""

    def words(self, n: int) -> np.ndarray:
        return np.frombuffer(os.urandom(8 * n), dtype="<u8")


class KeyedWords:
    """Uniform 64-bit words from AES-128-CTR under a 16-byte key: reproducible noise (tests,
    benchmarks) that is still a cryptographic stream for whoever does not know the key."""

    def __init__(self, key: bytes):
        if not isinstance(key, bytes) or len(key) != 16:
            raise ValueError("the noise key is 16 bytes (AES-128)")
        self._key = key
        self._used = 0          # bytes of keystream drawn so far
        self._stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def __deepcopy__(self, memo) -> "KeyedWords":
        """A twin at the same position (a cipher context cannot be copied, its key and offset can)."""
        twin = KeyedWords(self._key)
        twin._stream.update(bytes(self._used))
        twin._used = self._used
        return twin

    @classmethod
    def from_labels(cls, *labels) -> "KeyedWords":
        """The stream of a seed and an agent, say: the key is SHA-256 of the labels."""
        text = "ztfl/privacy/noise/" + "/".join(map(str, labels))
        return cls(hashlib.sha256(text.encode()).digest()[:16])

    def words(self, n: int) -> np.ndarray:
        self._used += 8 * n
        return np.frombuffer(self._stream.update(bytes(8 * n)), dtype="<u8")


def _stirling_float(n: np.ndarray) -> np.ndarray:
    """S(n) = ln n! - ((n + 1/2) ln n - n + ln(2 pi)/2) to three terms; error < 1/(1680 n^7)."""
    inv = 1.0 / n
    inv2 = inv * inv
    return inv * (1.0 / 12 - inv2 * (1.0 / 360 - inv2 / 1260))


def _log1pmx(x: np.ndarray) -> np.ndarray:
    """log1p(x) - x without cancellation: the series -x^2/2 + x^3/3 - ... for small |x|."""
    small = np.abs(x) < _SERIES_BELOW
    out = np.empty_like(x)
    xs = x[small]
    acc = np.zeros_like(xs)
    for n in range(_SERIES_TERMS + 1, 1, -1):           # Horner: sum over n >= 2 of (-1)^(n+1) x^n / n
        acc = xs * (((-1.0) ** (n + 1)) / n + acc)
    out[small] = xs * acc
    xl = x[~small]
    out[~small] = np.log1p(xl) - xl
    return out


def _pi(ctx) -> Decimal:
    """pi to the context's precision (the decimal module documentation's series)."""
    with localcontext(ctx) as local:
        local.prec += 4
        three = Decimal(3)
        lasts, t, s, n, na, d, da = 0, three, 3, 1, 0, 0, 24
        while s != lasts:
            lasts = s
            n, na = n + na, na + 8
            d, da = d + da, da + 32
            t = (t * n) / d
            s += t
    return +s


def _ln_factorial(n: int, ctx) -> tuple[Decimal, Decimal]:
    """ln n! in the context's precision and a bound on the truncation of Stirling's series."""
    if n < _EXACT_FACTORIAL_BELOW:
        return ctx.ln(Decimal(math.factorial(n))), Decimal(0)
    d = Decimal(n)
    value = (d + Decimal("0.5")) * ctx.ln(d) - d + ctx.ln(2 * _pi(ctx)) / 2
    for i, b in enumerate(_BERNOULLI[:-1], start=1):
        value += Decimal(b.numerator) / (Decimal(b.denominator) * (2 * i) * (2 * i - 1) * d ** (2 * i - 1))
    last = _BERNOULLI[-1]
    truncation = Decimal(abs(last.numerator)) / (Decimal(last.denominator) * 18 * 17 * d ** 17)
    return value, truncation


def _log_ratio_decimal(mean: int, j: int, ctx) -> tuple[Decimal, Decimal]:
    """ln r(j) = ln P(mean + j) - ln P(mean) and a bound on its error (k = mean + j >= 0)."""
    ln_k, trunc_k = _ln_factorial(mean + j, ctx)
    ln_m, trunc_m = _ln_factorial(mean, ctx)
    ln_mean = ctx.ln(Decimal(mean))
    value = j * ln_mean - ln_k + ln_m
    # Every operation rounds within one unit in the last place of its result; four per term
    # bound the accumulated rounding.
    ulp = Decimal(10) ** (2 - ctx.prec)
    error = 4 * ulp * (abs(j * ln_mean) + abs(ln_k) + abs(ln_m) + 1) + trunc_k + trunc_m
    return value, error


def _precision(mean: int, j: int) -> int:
    """Decimal digits that leave about 50 after the cancellation of the ln n! terms."""
    return 60 + 2 * len(str(abs(mean) + abs(j)))


def _ratio_fraction(mean: int, j: int) -> tuple[int, int]:
    """r(j) = P(mean + j) / P(mean) as numerator, denominator."""
    if j >= 0:
        return mean ** j, math.perm(mean + j, j)
    return math.perm(mean, -j), mean ** (-j)


def _envelope(mean: int, width: int) -> float:
    """K >= sup over j of r(j) 2^floor(j'/w), j' = j for j >= 0 and -j - 1 below, as a float.

    On each side ln r(j) + j' ln2/w is concave in j', so its integer maximum is where its
    increment changes sign (near mean (2^(1/w) - 1) above, mean (1 - 2^(-1/w)) below); the window
    evaluated around the estimate is widened until both of its ends slope inwards."""
    best = Decimal(0)
    with localcontext() as ctx:
        ctx.prec = _precision(mean, 4 * math.isqrt(mean) + 64)
        step = ctx.ln(Decimal(2)) / width
        for sign, centre in ((1, int(mean * math.expm1(_LN2 / width))),
                             (-1, int(mean * -math.expm1(-_LN2 / width)))):

            def value(jp: int) -> Decimal:
                j = jp if sign == 1 else -jp - 1
                if mean + j < 0:
                    return Decimal("-Infinity")
                v, e = _log_ratio_decimal(mean, j, ctx)
                return v + jp * step + e

            half = 8
            while True:
                lo, hi = max(0, centre - half), centre + half
                values = [value(jp) for jp in range(lo, hi + 1)]
                top_ok = values[-1] < values[-2] or values[-1].is_infinite()
                if top_ok and (lo == 0 or values[0] < values[1]):
                    best = max(best, *values)
                    break
                half *= 4
    # Rounded up, and a relative 1e-9 more: any K at or above the supremum keeps sampling exact.
    return math.exp(float(best) + 1e-9) * (1 + 1e-9)


class PoissonSampler:
    """Exact Poisson(mean) samples for an integer mean in 1..2^52 (see the module docstring)."""

    def __init__(self, mean: int):
        if not isinstance(mean, int) or isinstance(mean, bool) or not 1 <= mean <= MAX_POISSON_MEAN:
            raise ValueError(f"the Poisson mean must be an int in 1..2^52, got {mean!r}")
        self.mean = mean
        self.width = 1 << (math.isqrt(mean).bit_length() - 1)
        self.bound = _envelope(mean, self.width)
        self.log_bound = math.log(self.bound)
        self._bound_ratio = Fraction(self.bound)
        self._s_mean = float(_stirling_float(np.float64(mean))) if mean >= _FAST_MIN else 0.0

    def sample(self, n: int, source) -> np.ndarray:
        """`n` independent samples (int64), from `source.words(count)` (uniform uint64 words)."""
        out = np.empty(n, dtype=np.int64)
        filled = 0
        while filled < n:
            need = n - filled
            accepted = self._batch(int(need * 2.2) + 32, source)[:need]
            out[filled:filled + accepted.size] = accepted
            filled += accepted.size
        return out

    def _batch(self, m: int, source) -> np.ndarray:
        """The accepted values among m candidates, in candidate order."""
        geo, pos, uni = source.words(3 * m).reshape(3, m)
        lowest = geo & (~geo + np.uint64(1))                       # lowest set bit; 0 for a zero word
        b = np.frexp(lowest.astype(np.float64))[1].astype(np.int64) - 1
        for i in np.flatnonzero(lowest == 0):                      # b >= 64: carry on with more words
            b[i] = _geometric_tail(source)
        offset = (pos & np.uint64(self.width - 1)).astype(np.int64)
        jp = b * self.width + offset
        j = np.where((pos >> np.uint64(63)) == 1, -jp - 1, jp)
        u53 = (uni >> np.uint64(11)).astype(np.int64)
        accept, undecided = self._decide_fast(j, b, u53)
        for i in np.flatnonzero(undecided):
            accept[i] = self._decide_exact(int(j[i]), int(b[i]), int(u53[i]), source)
        return self.mean + j[accept]

    def _decide_fast(self, j: np.ndarray, b: np.ndarray, u53: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tier 1 on every candidate it applies to: (accepted, undecided)."""
        mean = self.mean
        k = mean + j
        fast = (k >= _FAST_MIN) & (2 * j >= -mean) & (b <= 1000) if mean >= _FAST_MIN else np.zeros(j.size, bool)
        jf, kf, bf = j[fast].astype(np.float64), k[fast].astype(np.float64), b[fast].astype(np.float64)
        t1 = jf * (jf + 0.5) / mean
        t2 = (kf + 0.5) * _log1pmx(jf / mean)
        s_k = _stirling_float(kf)
        log_a = -t1 - t2 + (self._s_mean - s_k) + bf * _LN2 - self.log_bound
        small = np.minimum(kf, float(mean))
        error = _MARGIN * (np.abs(t1) + np.abs(t2) + self._s_mean + s_k + bf * _LN2 + abs(self.log_bound) + 1) \
            + 2.0 / (1680.0 * small ** 7)
        u = u53[fast].astype(np.float64)
        with np.errstate(divide="ignore"):
            ln_lo = np.log(u * 2.0 ** -53)                           # -inf for u = 0: never surely above
        ln_hi = np.log((u + 1.0) * 2.0 ** -53)
        surely_below = ln_hi + _MARGIN * np.abs(ln_hi) < log_a - error
        surely_above = ln_lo - _MARGIN * np.abs(ln_lo) > log_a + error
        accept = np.zeros(j.size, dtype=bool)
        accept[fast] = surely_below
        undecided = ~fast
        undecided[fast] = ~(surely_below | surely_above)
        return accept, undecided

    def _decide_exact(self, j: int, b: int, u53: int, source) -> bool:
        """Tiers 2 and 3 for one candidate: U < r(j) 2^b / K with U = (u53 + more bits) / 2^53."""
        mean = self.mean
        if mean + j < 0:
            return False
        lower, bits = (u53 << 64) | int(source.words(1)[0]), 117
        if abs(j) * (mean + abs(j)).bit_length() > _CHEAP_RATIONAL_BITS:
            with localcontext() as ctx:
                ctx.prec = _precision(mean, j)
                log_r, error = _log_ratio_decimal(mean, j, ctx)
                log_a = log_r + b * ctx.ln(Decimal(2)) - ctx.ln(Decimal(self.bound))
                error += 4 * Decimal(10) ** (2 - ctx.prec) * (abs(log_a) + b + 1)
                scale = Decimal(2) ** bits
                ln_lo = ctx.ln(Decimal(lower) / scale) if lower else Decimal("-Infinity")
                ln_hi = ctx.ln(Decimal(lower + 1) / scale)
                slack = 4 * Decimal(10) ** (2 - ctx.prec) * (abs(ln_hi) + 1)
                if ln_hi + slack < log_a - error:
                    return True
                if lower and ln_lo - slack - 4 * Decimal(10) ** (2 - ctx.prec) * abs(ln_lo) > log_a + error:
                    return False
        num, den = _ratio_fraction(mean, j)
        x = num * (1 << b) * self._bound_ratio.denominator          # A = x / y
        y = den * self._bound_ratio.numerator
        while True:
            if (lower + 1) * y <= x << bits:
                return True
            if lower * y >= x << bits:
                return False
            lower, bits = (lower << 64) | int(source.words(1)[0]), bits + 64


def _geometric_tail(source) -> int:
    """The count of trailing zero bits past a first all-zero word (Geometric(1/2) from 64 on)."""
    count = 64
    while True:
        word = int(source.words(1)[0])
        if word:
            return count + ((word & -word).bit_length() - 1)
        count += 64


_SAMPLERS: dict[int, PoissonSampler] = {}


def poisson_sampler(mean: int) -> PoissonSampler:
    """The sampler of this mean (its envelope is computed once)."""
    sampler = _SAMPLERS.get(mean)
    if sampler is None:
        if len(_SAMPLERS) > 64:
            _SAMPLERS.clear()
        sampler = _SAMPLERS[mean] = PoissonSampler(mean)
    return sampler


def skellam(n: int, mean: int, source=None) -> np.ndarray:
    """`n` exact samples of Poisson(mean) - Poisson(mean) (int64, variance 2 mean), from the OS's
    CSPRNG unless `source` (an object with `words(count)`) is given."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"sample count must be a non-negative int, got {n!r}")
    draws = poisson_sampler(mean).sample(2 * n, SystemWords() if source is None else source)
    return draws[:n] - draws[n:]


__all__ = ["KeyedWords", "MAX_POISSON_MEAN", "PoissonSampler", "SystemWords", "poisson_sampler", "skellam"]
