"""Each robust rule on crafted updates whose answer is known."""
import numpy as np
import pytest

from ztfl.robustness.result import UpdateShapeError
from ztfl.robustness.rules import (CoordinateMedian, FedAvg, Flame, GeometricMedian, Krum, RuleConfigError,
                              TrimmedMean, clip_to_norm, multi_krum)

CENTER = np.array([1.0, 1.0])
# Five honest updates in a tight cross around CENTER, two far outliers (positions 5 and 6).
HONEST = [CENTER, CENTER + [0.1, 0], CENTER - [0.1, 0], CENTER + [0, 0.1], CENTER - [0, 0.1]]
CROSS = np.array(HONEST + [[100.0, -100.0], [-90.0, 120.0]], dtype=np.float32)


def test_fedavg_is_the_weighted_mean():
    r = FedAvg().aggregate([[0.0, 2.0], [4.0, 6.0]], weights=[3, 1])
    assert np.allclose(r.aggregate, [1.0, 3.0])
    assert r.excluded == {}


def test_krum_picks_the_most_central_honest_update_and_names_the_rest():
    r = Krum(f=2).aggregate(CROSS)
    assert np.array_equal(r.aggregate, CENTER.astype(np.float32))
    assert set(r.excluded) == {1, 2, 3, 4, 5, 6}
    assert "krum score" in r.excluded[5]


def test_multi_krum_averages_the_honest_cross_to_its_center():
    r = multi_krum(f=2, m=5).aggregate(CROSS)
    assert np.allclose(r.aggregate, CENTER, atol=1e-6)
    assert set(r.excluded) == {5, 6}


def test_multi_krum_weights_only_the_kept_inputs():
    # A huge claimed weight on an excluded outlier changes nothing.
    w = [1, 1, 1, 1, 1, 1e6, 1]
    r = multi_krum(f=2, m=5).aggregate(CROSS, weights=w)
    assert np.allclose(r.aggregate, CENTER, atol=1e-6)


def test_krum_refuses_too_few_inputs_for_its_f():
    with pytest.raises(RuleConfigError, match="at least 7"):
        Krum(f=2).aggregate(CROSS[:6])


def test_coordinate_median():
    r = CoordinateMedian().aggregate([[1, 5], [2, -1], [100, 3]])
    assert np.array_equal(r.aggregate, np.array([2, 3], np.float32))


def test_trimmed_mean_drops_one_per_side_of_five():
    ups = np.array([[1, 10], [2, 20], [3, 30], [4, 40], [100, -1000]], dtype=np.float32)
    r = TrimmedMean(beta=0.2).aggregate(ups)
    assert np.allclose(r.aggregate, [3.0, 20.0])
    # The outlier row is trimmed on both coordinates.
    assert r.info["trimmed_share"][4] == 1.0


def test_trimmed_mean_rejects_beta_of_half():
    with pytest.raises(RuleConfigError):
        TrimmedMean(beta=0.5)


def test_geometric_median_of_collinear_points_is_their_median():
    pts = np.array([[0.0], [1.0], [2.0], [3.0], [1000.0]])
    r = GeometricMedian().aggregate(pts)
    assert abs(float(r.aggregate[0]) - 2.0) < 1e-3


def test_geometric_median_sits_on_a_coinciding_majority():
    pts = np.array([[3.0, -2.0]] * 4 + [[50.0, 50.0], [-40.0, 80.0], [0.0, -300.0]])
    r = GeometricMedian().aggregate(pts)
    assert np.allclose(r.aggregate, [3.0, -2.0], atol=1e-3)


def test_geometric_median_of_a_square_is_its_center():
    pts = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    assert np.allclose(GeometricMedian().aggregate(pts).aggregate, [1.0, 1.0], atol=1e-4)


def _flame_case():
    rng = np.random.default_rng(3)
    honest = np.array([1.0, 0, 0, 0]) + rng.normal(0, 0.05, size=(8, 4))
    honest[0] *= 10                      # honest direction, ten times the norm: clipped, kept
    attackers = np.array([-1.0, 0.2, 0, 0]) + rng.normal(0, 0.05, size=(3, 4))
    return np.vstack([honest, attackers])


def test_flame_drops_the_opposite_cluster_and_clips_to_the_median_norm():
    ups = _flame_case()
    r = Flame(noise_lambda=0.0).aggregate(ups)
    assert set(r.excluded) == {8, 9, 10}
    assert 0 in r.info["clipped"]
    norms = np.linalg.norm(ups, axis=1)
    clip = np.median(norms)
    kept = ups[:8] * np.minimum(1, clip / norms[:8])[:, None]
    assert np.allclose(r.aggregate, kept.mean(axis=0), atol=1e-6)


def test_flame_noise_has_the_configured_scale():
    ups = _flame_case()
    clean = Flame(noise_lambda=0.0).aggregate(ups).aggregate
    noisy = Flame(noise_lambda=0.5, seed=1).aggregate(ups)
    spread = np.std(noisy.aggregate - clean)
    assert 0.1 * noisy.info["clip_norm"] < spread < 2 * noisy.info["clip_norm"]


def test_client_side_clipping():
    assert np.allclose(clip_to_norm(np.array([3.0, 4.0]), 1.0), [0.6, 0.8])
    assert np.array_equal(clip_to_norm(np.array([0.3, 0.4]), 1.0), np.array([0.3, 0.4], np.float32))


@pytest.mark.parametrize("bad", [[[1.0, np.nan], [1.0, 2.0]], [[1.0, 2.0], [1.0]], []])
def test_rules_refuse_malformed_updates(bad):
    with pytest.raises(UpdateShapeError):
        CoordinateMedian().aggregate(bad)


def test_negative_weights_are_refused():
    with pytest.raises(UpdateShapeError):
        FedAvg().aggregate([[1.0], [2.0]], weights=[1, -1])
