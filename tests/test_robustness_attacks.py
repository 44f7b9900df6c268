"""Each attack changes what it should, and nothing else."""
import numpy as np
import pytest

from ztfl.robustness.attacks import (AttackConfigError, Trigger, a_little_is_enough, attack_success_rate,
                                choose_malicious, collude, flip_labels, gaussian_noise,
                                poison_with_backdoor, replacement_factor, scale_update, sign_flip,
                                slow_poison)
from ztfl.robustness.rules import FedAvg


def test_choose_malicious_takes_the_rounded_fraction_of_distinct_agents():
    idx = choose_malicious(20, 0.3, np.random.default_rng(0))
    assert len(idx) == 6 and len(set(idx.tolist())) == 6 and idx.max() < 20
    assert len(choose_malicious(20, 0.0, np.random.default_rng(0))) == 0
    with pytest.raises(AttackConfigError):
        choose_malicious(20, 1.0, np.random.default_rng(0))


def test_label_flip_binary_and_multiclass():
    y = np.array([0, 1, 1, 0])
    assert np.array_equal(flip_labels(y, 2), [1, 0, 0, 1])
    assert np.array_equal(flip_labels(np.array([0, 1, 4]), 5), [4, 3, 0])
    assert np.array_equal(y, [0, 1, 1, 0])          # input untouched
    with pytest.raises(AttackConfigError):
        flip_labels(np.array([2]), 2)


def test_backdoor_poisons_the_asked_share_of_attack_rows_only():
    rng = np.random.default_rng(1)
    x = rng.random((100, 6)).astype(np.float32) * 0.5
    y = np.array([1] * 40 + [0] * 60)
    trig = Trigger(features=(2, 5), value=1.0, target=0)
    px, py = poison_with_backdoor(x, y, trig, fraction=0.5, rng=rng)
    changed = np.flatnonzero(np.any(px != x, axis=1))
    assert len(changed) == 20 and np.all(changed < 40)               # only source-class rows
    assert np.all(px[changed][:, [2, 5]] == 1.0) and np.all(py[changed] == 0)
    untouched = np.setdiff1d(np.arange(100), changed)
    assert np.array_equal(px[untouched], x[untouched]) and np.array_equal(py[untouched], y[untouched])


def test_attack_success_rate_counts_rows_turned_into_the_target():
    trig = Trigger(features=(0,), value=1.0, target=0)
    x = np.array([[0.2, 0.9], [0.3, 0.1], [0.4, 0.9], [0.1, 0.2]], dtype=np.float32)
    # A model that says "normal" whenever feature 0 is 1 and feature 1 > 0.5: two of four.
    predict = lambda z: np.where((z[:, 0] == 1.0) & (z[:, 1] > 0.5), 0, 1)
    assert attack_success_rate(predict, x, trig) == 0.5


def test_sign_flip_gaussian_and_scaling():
    u = np.array([1.0, -2.0, 3.0], np.float32)
    assert np.array_equal(sign_flip(u), -u)
    assert np.array_equal(sign_flip(u, scale=2), -2 * u)
    g = gaussian_noise(np.zeros(20000), 0.5, np.random.default_rng(0))
    assert abs(g.std() - 0.5) < 0.02 and abs(g.mean()) < 0.02
    assert np.array_equal(scale_update(u, 3), 3 * u)


def test_model_replacement_puts_the_fedavg_mean_on_the_attackers_model():
    target = np.array([0.5, -1.0, 2.0], np.float32)
    n, m = 10, 2
    honest = [np.zeros(3, np.float32)] * (n - m)
    evil = [scale_update(target, replacement_factor(n, m))] * m
    assert np.allclose(FedAvg().aggregate(honest + evil).aggregate, target)


def test_a_little_is_enough_shifts_by_z_standard_deviations():
    rng = np.random.default_rng(2)
    honest = rng.normal(size=(14, 50))
    crafted = a_little_is_enough(honest, n_agents=20, n_malicious=6)
    # n=20, m=6: s = 11 - 6 = 5, z = Phi^-1(15 / 20) = 0.6745
    expected = honest.mean(0) - 0.6744897501960817 * honest.std(0)
    assert np.allclose(crafted, expected, atol=1e-5)
    # Within one standard deviation of the mean on every coordinate: it hides in the spread.
    assert np.all(np.abs(crafted - honest.mean(0)) <= honest.std(0) + 1e-6)


def test_slow_poison_moves_alpha_of_the_norm_along_the_direction():
    u = np.array([3.0, 4.0, 0.0])
    d = np.array([0.0, 0.0, 2.0])
    p = slow_poison(u, d, alpha=0.05)
    assert np.allclose(p - u, [0, 0, 0.25], atol=1e-6)
    with pytest.raises(AttackConfigError):
        slow_poison(u, d, alpha=0.0)


def test_colluders_send_one_shared_update():
    crafted = np.array([[1.0, 0.0], [3.0, 2.0], [2.0, 1.0]])
    shared = collude(crafted)
    assert shared.shape == (3, 2) and np.allclose(shared, [[2.0, 1.0]] * 3)
