"""The agents' noise sampler (privacy.sampling): exact Poisson samples from a cryptographic source.

Checked against the exact Poisson law (chi-square on the pmf computed with rationals) where each
tier of the acceptance test decides, mean and variance at training noise, the envelope bound
against the exact ratios, the agreement of the three tiers on the same uniform draws, and the
speed the benchmarks need.
"""
from __future__ import annotations

import math
import time
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import chi2

from ztfl.privacy import sampling
from ztfl.privacy.sampling import KeyedWords, PoissonSampler, SystemWords, poisson_sampler, skellam


def _poisson_pmf(mean: int, k: int) -> float:
    return math.exp(k * math.log(mean) - mean - math.lgamma(k + 1))


def _chi_square_p(samples: np.ndarray, mean: int) -> float:
    """p-value of a chi-square test of the samples against Poisson(mean), bins of expected count >= 20."""
    n = samples.size
    lo, hi = int(samples.min()), int(samples.max())
    edges, expected, acc, start = [], [], 0.0, 0
    probs = {k: _poisson_pmf(mean, k) for k in range(0, hi + 2)}
    tail_low = sum(probs[k] for k in range(0, lo))
    for k in range(0, hi + 1):
        acc += probs[k] + (tail_low if k == 0 else 0.0)
        if acc * n >= 20:
            edges.append((start, k))
            expected.append(acc * n)
            start, acc = k + 1, 0.0
    edges[-1] = (edges[-1][0], 10 ** 18)
    expected[-1] += (1.0 - sum(expected) / n) * n
    observed = [np.count_nonzero((samples >= a) & (samples <= b)) for a, b in edges]
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected))
    return float(chi2.sf(stat, len(edges) - 1))


@pytest.mark.parametrize("mean, n", [(1, 20_000), (3, 20_000), (25, 60_000), (1000, 100_000)])
def test_samples_follow_the_poisson_law(mean, n):
    # mean 1 and 3 go through the exact rational tier for most candidates, 25 through both,
    # 1000 through the float tier: all must give the Poisson law itself.
    x = PoissonSampler(mean).sample(n, KeyedWords.from_labels("law", mean))
    assert x.dtype == np.int64 and x.min() >= 0
    assert _chi_square_p(x, mean) > 1e-4


@pytest.mark.parametrize("mean", [2 * 10 ** 8, 5 * 10 ** 9, 2 ** 52])
def test_training_noise_has_the_signed_mean_and_variance(mean):
    n = 200_000
    x = poisson_sampler(mean).sample(n, KeyedWords.from_labels("moments", mean)).astype(np.float64)
    sd = math.sqrt(mean)
    assert abs(x.mean() - mean) < 5 * sd / math.sqrt(n)
    assert abs(x.var() / mean - 1) < 5 * math.sqrt(2 / n)
    # Skellam: the difference of two, variance 2 mean, symmetric.
    s = skellam(n, mean, KeyedWords.from_labels("skellam", mean)).astype(np.float64)
    assert abs(s.mean()) < 5 * math.sqrt(2 * mean / n)
    assert abs(s.var() / (2 * mean) - 1) < 5 * math.sqrt(2 / n)


@pytest.mark.parametrize("mean", [1, 2, 7, 50, 4099])
def test_the_envelope_bounds_every_exact_ratio(mean):
    sampler = PoissonSampler(mean)
    bound = Fraction(sampler.bound)
    w = sampler.width
    for j in range(-mean, 12 * math.isqrt(mean) + 40):
        num, den = sampling._ratio_fraction(mean, j)
        b = (j if j >= 0 else -j - 1) // w
        assert Fraction(num, den) * 2 ** b <= bound, j


def _candidates(sampler: PoissonSampler, m: int, source):
    geo, pos, uni = source.words(3 * m).reshape(3, m)
    lowest = geo & (~geo + np.uint64(1))
    b = np.frexp(lowest.astype(np.float64))[1].astype(np.int64) - 1
    jp = b * sampler.width + (pos & np.uint64(sampler.width - 1)).astype(np.int64)
    j = np.where((pos >> np.uint64(63)) == 1, -jp - 1, jp)
    return j, b, (uni >> np.uint64(11)).astype(np.int64)


@pytest.mark.parametrize("mean", [400, 10 ** 6])
def test_the_three_tiers_decide_alike(mean, monkeypatch):
    # At 10^6 the exact decision of a large |j| goes through decimal arithmetic first (tier 2);
    # forcing the threshold up makes the same candidates go through rationals only (tier 3).
    sampler = PoissonSampler(mean)
    source = KeyedWords.from_labels("tiers", mean)
    j, b, u = _candidates(sampler, 3000, source)
    fast, undecided = sampler._decide_fast(j, b, u)
    picks = [i for i in range(j.size) if not undecided[i]][:400]
    via_default = [sampler._decide_exact(int(j[i]), int(b[i]), int(u[i]), source) for i in picks]
    monkeypatch.setattr(sampling, "_CHEAP_RATIONAL_BITS", 10 ** 12)
    via_rationals = [sampler._decide_exact(int(j[i]), int(b[i]), int(u[i]), source) for i in picks]
    assert via_default == via_rationals == [bool(fast[i]) for i in picks]
    assert 0.2 < np.mean(via_default) < 0.8


def test_streams_are_reproducible_by_key_and_the_default_is_the_os():
    a = skellam(1000, 10 ** 6, KeyedWords.from_labels("seed", 1))
    assert np.array_equal(a, skellam(1000, 10 ** 6, KeyedWords.from_labels("seed", 1)))
    assert not np.array_equal(a, skellam(1000, 10 ** 6, KeyedWords.from_labels("seed", 2)))
    assert not np.array_equal(skellam(1000, 10 ** 6), skellam(1000, 10 ** 6))
    assert SystemWords().words(4).dtype == np.dtype("<u8")
    for bad in (0, -1, 2 ** 52 + 1, 2.5, True):
        with pytest.raises(ValueError, match="Poisson mean"):
            PoissonSampler(bad)
    with pytest.raises(ValueError, match="16 bytes"):
        KeyedWords(b"short")


def test_fast_enough_for_the_benchmarks():
    # One agent's noise for 10^5 coordinates at training noise (variance 4e8 and 1e10).
    for mean in (2 * 10 ** 8, 5 * 10 ** 9):
        poisson_sampler(mean)
        start = time.process_time()
        skellam(100_000, mean)
        assert time.process_time() - start < 5.0
