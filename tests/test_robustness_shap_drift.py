"""SHAP-stability scoring (with the shap library) and cumulative drift tracking."""
import numpy as np
import pytest

from ztfl.robustness.drift import DriftTracker
from ztfl.robustness.modes import make_aggregator
from ztfl.robustness.shap_stability import ShapStability, shap_attributions, stability_scores

RNG = np.random.default_rng(0)
BACKGROUND = RNG.random((12, 5)).astype(np.float32)
BATCH = RNG.random((6, 5)).astype(np.float32)
W = np.array([2.0, -1.0, 0.5, 0.0, 1.5])


def linear_attributions(v):
    return shap_attributions(lambda x: x @ v.astype(np.float64), BACKGROUND, BATCH)


def test_shap_values_of_a_linear_model_are_weight_times_centred_input():
    phi = linear_attributions(W)
    assert np.allclose(phi, W * (BATCH - BACKGROUND.mean(axis=0)), atol=1e-5)


def test_stability_score_formula():
    ref = np.array([3.0, 4.0])
    s = stability_scores(np.array([[3.0, 4.0], [0.0, 4.0], [-3.0, -4.0]]), reference=ref)
    assert np.allclose(s, [1.0, 0.4, -1.0])


def _candidates(n_honest, n_flipped):
    rng = np.random.default_rng(5)
    honest = W + rng.normal(0, 0.05, size=(n_honest, 5))
    # A label-flipped model learns the opposite weights.
    flipped = -W + rng.normal(0, 0.05, size=(n_flipped, 5))
    return np.vstack([honest, flipped]).astype(np.float32)


def test_paper_threshold_excludes_a_lone_flipped_model():
    cands = _candidates(8, 1)
    res = ShapStability(linear_attributions).aggregate(cands)
    assert set(res.excluded) == {8}
    assert np.allclose(res.aggregate, cands[:8].mean(axis=0), atol=1e-6)


def test_mean_minus_two_sd_misses_thirty_percent_attackers_but_median_mad_does_not():
    cands = _candidates(7, 3)
    paper = ShapStability(linear_attributions, threshold="mean-2sd").aggregate(cands)
    assert paper.excluded == {}          # the attackers drag mu - 2 sigma below themselves
    robust = ShapStability(linear_attributions, threshold="median-mad").aggregate(cands)
    assert set(robust.excluded) == {7, 8, 9}


def test_shap_defense_through_make_aggregator():
    agg = make_aggregator(privacy="none", defense="shap-mad", cohort_size=10,
                          attributions_of=linear_attributions)
    res = agg.aggregate(_candidates(7, 3))
    assert set(res.excluded) == {7, 8, 9} and "SHAP stability" in res.excluded[9]


def _round(rng, n, dim, slow_agent=None, alpha=0.05, direction=None):
    # Honest updates share the round's descent direction (norm 10) and differ by noise
    # (norm about 3), as local updates from one global model do.
    common = rng.normal(0, 1.0, size=dim)
    common *= 10 / np.linalg.norm(common)
    ups = common + rng.normal(0, 3 / np.sqrt(dim), size=(n, dim))
    if slow_agent is not None:
        ups[slow_agent] += alpha * np.linalg.norm(ups[slow_agent]) * direction
    return ups


def test_drift_tracker_flags_a_slow_poisoner_that_no_single_round_reveals():
    rng = np.random.default_rng(7)
    n, dim = 12, 400
    direction = np.zeros(dim)
    direction[0] = 1.0
    tracker = DriftTracker(dim=dim, sketch_dim=64, min_rounds=5, patience=2)
    ids = [f"agent{i}" for i in range(n)]
    flagged_at = None
    poisoner_largest = 0
    for t in range(60):
        ups = _round(rng, n, dim, slow_agent=3, alpha=0.05, direction=direction)
        agg = ups.mean(axis=0)
        # Per round the poisoner's deviation is rarely even the largest.
        dev = np.linalg.norm(ups - agg, axis=1)
        poisoner_largest += int(np.argmax(dev) == 3)
        new = tracker.observe(ids, ups, agg)
        if "agent3" in new and flagged_at is None:
            flagged_at = t
    assert poisoner_largest < 15
    assert flagged_at is not None
    assert set(tracker.flagged) == {"agent3"}


def test_drift_tracker_flags_nobody_in_an_honest_cohort():
    rng = np.random.default_rng(8)
    tracker = DriftTracker(dim=200, sketch_dim=64)
    ids = list(range(10))
    for _ in range(40):
        ups = _round(rng, 10, 200)
        tracker.observe(ids, ups, ups.mean(axis=0))
    assert tracker.flagged == {}


def test_none_mode_with_drift_excludes_a_flagged_agent_in_later_rounds():
    rng = np.random.default_rng(9)
    dim = 300
    direction = np.zeros(dim)
    direction[5] = 1.0
    agg = make_aggregator(privacy="none", defense="fedavg", cohort_size=10, drift=True)
    ids = list(range(10))
    excluded_later = False
    for t in range(80):
        res = agg.aggregate(_round(rng, 10, dim, slow_agent=2, alpha=0.08, direction=direction),
                            agent_ids=ids)
        if 2 in res.excluded:
            assert res.excluded[2].startswith("drift:")
            excluded_later = True
            break
    assert excluded_later
