"""privacy: grouped runs one real secure aggregation per group (protocol/), and the robust
rule over the group means drops a group a scaled attacker poisoned."""
import numpy as np

from ztfl.robustness.attacks import scale_update
from ztfl.robustness.modes import make_aggregator
from ztfl.robustness.secure_groups import FRAC_BITS, secure_group_sums, secure_sum


def test_secure_sum_equals_the_weighted_plaintext_sum_up_to_fixed_point():
    rng = np.random.default_rng(0)
    ups = {f"a{i}": rng.normal(0, 0.05, 64).astype(np.float32) for i in range(5)}
    weights = {k: int(rng.integers(10, 300)) for k in ups}
    g = secure_sum(ups, weights)
    ref = sum(weights[k] * ups[k].astype(np.float64) for k in ups)
    assert g.weight == sum(weights.values())
    # Each member's value is rounded to 2^-20 before weighting.
    assert np.max(np.abs(g.total - ref)) <= sum(weights.values()) * 0.5 / 2**FRAC_BITS + 1e-12


def test_grouped_median_survives_one_boosted_attacker():
    rng = np.random.default_rng(1)
    n, dim = 15, 32
    honest_direction = rng.normal(0, 0.02, dim)
    ups = {i: (honest_direction + rng.normal(0, 0.002, dim)).astype(np.float32) for i in range(n)}
    ups[7] = scale_update(-honest_direction, 50)          # one agent, boosted sign flip
    weights = {i: 100 for i in range(n)}
    agg = make_aggregator(privacy="grouped", defense="median", cohort_size=n, group_size=5, seed=3)
    groups = agg.split(list(range(n)))
    sums = secure_group_sums(groups, ups, weights)
    res = agg.aggregate_groups([s.total for s in sums], [s.weight for s in sums], groups)
    fedavg = np.mean(list(ups.values()), axis=0)
    assert np.dot(fedavg, honest_direction) < 0                      # FedAvg is turned round
    assert np.linalg.norm(res.aggregate - honest_direction) < 0.1 * np.linalg.norm(honest_direction)
