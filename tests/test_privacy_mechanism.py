"""Client-side distributed DP: clipping, Skellam noise (exact, from a cryptographic source), and
noisy inputs through a real secure aggregation round (the unmasked sum is exactly the sum of the
noisy encoded inputs)."""
from __future__ import annotations

import numpy as np
import pytest

from ztfl.privacy import DpParams, add_noise, clip_l2, skellam_noise
from ztfl.privacy.sampling import KeyedWords
from ztfl.protocol import fixedpoint
from ztfl.protocol.config import ACTIVE, RoundConfig
from ztfl.protocol.simulate import Cohort, run_round
from ztfl.protocol.stages import Stage

PARAMS = DpParams(clip_norm=1.0, frac_bits=16, dim=64, noise_variance=4.0e8, min_survivors=4)


def test_clip_l2_bounds_the_norm_and_leaves_small_updates_alone():
    rng = np.random.default_rng(1)
    big = rng.normal(0, 1, 300)
    clipped = clip_l2(big, 0.5)
    assert np.linalg.norm(clipped) == pytest.approx(0.5)
    assert np.allclose(clipped / np.linalg.norm(clipped), big / np.linalg.norm(big))
    small = big / np.linalg.norm(big) * 0.2
    assert np.array_equal(clip_l2(small, 0.5), small)
    with pytest.raises(ValueError):
        clip_l2(np.array([1.0, np.nan]), 1.0)


def test_rounded_clipped_updates_stay_within_the_l2_sensitivity():
    rng = np.random.default_rng(2)
    for _ in range(50):
        x = clip_l2(rng.normal(0, 1, PARAMS.dim) * rng.uniform(0.1, 10), PARAMS.clip_norm)
        q = fixedpoint.quantize(x, PARAMS.frac_bits, 1 << 40)
        assert np.linalg.norm(q) <= PARAMS.l2_sensitivity
        assert np.abs(q).sum() <= PARAMS.l1_sensitivity


def test_skellam_noise_is_integer_centred_with_the_requested_variance_and_sums_to_skellam():
    source = KeyedWords.from_labels("skellam", 3)
    noise = skellam_noise(200_000, 25, source)
    assert noise.dtype == np.int64
    assert abs(noise.mean()) < 0.1
    assert noise.var() == pytest.approx(50.0, rel=0.02)
    # Sum of 8 clients' noise: variance 8 x 50, and the Skellam pmf at 0 (I_0(400) e^-400).
    total = sum(skellam_noise(100_000, 25, source) for _ in range(8))
    assert total.var() == pytest.approx(400.0, rel=0.03)
    from scipy.special import ive
    assert np.mean(total == 0) == pytest.approx(float(ive(0, 400.0)), rel=0.1)


def test_add_noise_checks_its_input():
    words = fixedpoint.encode(np.zeros(PARAMS.dim), 1, 16, 1 << 16, 32)
    source = KeyedWords.from_labels("checks", 4)
    with pytest.raises(ValueError, match="words"):
        add_noise(words[:-2], PARAMS, source)
    with pytest.raises(ValueError, match="weight"):
        add_noise(fixedpoint.encode(np.zeros(PARAMS.dim), 3, 16, 1 << 16, 32), PARAMS, source)
    with pytest.raises(ValueError, match="integers"):
        add_noise(words.astype(np.float64), PARAMS, source)
    with pytest.raises(TypeError, match="cryptographic"):
        add_noise(words, PARAMS, np.random.default_rng(4))       # numpy's PCG64 is not a CSPRNG
    noisy = add_noise(words, PARAMS, source)
    assert noisy[-1] == 1 and noisy.dtype == np.int64 and (noisy[:-1] < 0).any()


@pytest.mark.parametrize("mask_bits", [32, 64])
def test_noisy_inputs_through_secure_aggregation_sum_exactly(mask_bits):
    ids = [1, 2, 3, 4, 5]
    config = RoundConfig.for_range(dim=PARAMS.dim, max_clients=5, threshold=4, clip=1.0,
                                   frac_bits=PARAMS.frac_bits, mask_bits=mask_bits, security=ACTIVE)
    assert PARAMS.headroom_ok(5, config.clip_q, mask_bits)
    rng = np.random.default_rng(5)
    updates = {c: clip_l2(rng.normal(0, 0.2, PARAMS.dim), PARAMS.clip_norm) for c in ids}
    encoded = {}
    for c in ids:
        words = fixedpoint.encode(updates[c], 1, config.frac_bits, config.clip_q, mask_bits)
        encoded[c] = add_noise(words, PARAMS, KeyedWords.from_labels("sum", c))
    run = run_round(config, Cohort.create(ids), updates, drop_before={5: Stage.MASKED_INPUT_COLLECTION},
                    encoded=encoded)
    assert run.result is not None and run.result.survivors == (1, 2, 3, 4)
    expected = sum(encoded[c][:-1] for c in (1, 2, 3, 4))
    assert np.array_equal(run.result.sums, expected)
    assert run.result.total_weight == 4
    # The noise is what the privacy parameters say: std of the mean's noise sqrt(4 v) / 4 / 2^f.
    noise = run.result.mean() - np.mean([updates[c] for c in (1, 2, 3, 4)], axis=0)
    assert np.std(noise) == pytest.approx(np.sqrt(4 * PARAMS.noise_variance) / 4 / 2 ** 16, rel=0.35)


def test_headroom_check_refuses_noise_that_could_wrap_32_bits():
    loud = DpParams(clip_norm=1.0, frac_bits=16, dim=10, noise_variance=1e16, min_survivors=4)
    assert not loud.headroom_ok(20, 1 << 16, 32)
    assert loud.headroom_ok(20, 1 << 16, 64)


@pytest.mark.parametrize("field,value", [("clip_norm", 0.0), ("dim", 0), ("noise_variance", -1.0),
                                         ("min_survivors", 0), ("frac_bits", 70), ("dim", 2.5)])
def test_bad_parameters_are_refused(field, value):
    kwargs = dict(clip_norm=1.0, frac_bits=16, dim=10, noise_variance=1.0, min_survivors=2)
    kwargs[field] = value
    with pytest.raises(ValueError):
        DpParams(**kwargs)
