"""privacy: grouped runs one real secure aggregation per group, through the gateway's own cohort
code against the agents' own clients (bench.simfed), and the robust rule over the group means
drops a group a scaled attacker poisoned."""
import numpy as np

from ztfl.bench.simfed import GatewayAggregation, secure_group_sums
from ztfl.gateway.secagg import FRAC_BITS
from ztfl.robustness.attacks import scale_update
from ztfl.robustness.modes import make_aggregator


def test_a_group_sum_equals_the_weighted_plaintext_sum_up_to_fixed_point():
    rng = np.random.default_rng(0)
    ups = {f"a{i}": rng.normal(0, 0.05, 64).astype(np.float32) for i in range(5)}
    weights = {k: int(rng.integers(10, 300)) for k in ups}
    [g] = secure_group_sums(GatewayAggregation(list(ups), mask_bits=64), 1, [list(ups)], ups, weights)
    ref = sum(weights[k] * ups[k].astype(np.float64) for k in ups)
    assert g.weight == sum(weights.values()) and g.survivors == list(ups)
    # Each member's value is rounded to 2^-24 before weighting; the gateway keeps the mean in float32
    # (a relative error of at most 2^-24 of each coordinate, 2^-23 with the rounding of the sum).
    bound = sum(weights.values()) * 0.5 / 2 ** FRAC_BITS[64] + float(np.abs(ref).max()) * 2 ** -23
    assert 0 < np.max(np.abs(g.total - ref)) <= bound


def test_grouped_median_survives_one_boosted_attacker():
    rng = np.random.default_rng(1)
    n, dim = 15, 32
    honest_direction = rng.normal(0, 0.02, dim)
    ups = {i: (honest_direction + rng.normal(0, 0.002, dim)).astype(np.float32) for i in range(n)}
    ups[7] = scale_update(-honest_direction, 50)          # one agent, boosted sign flip
    weights = {i: 100 for i in range(n)}
    agg = make_aggregator(privacy="grouped", defense="median", cohort_size=n, group_size=5, seed=3)
    groups = agg.split(list(range(n)))
    sums = secure_group_sums(GatewayAggregation(range(n)), 1, groups, ups, weights)
    assert [s.members for s in sums] == groups
    res = agg.aggregate_groups([s.total for s in sums], [s.weight for s in sums], groups)
    fedavg = np.mean(list(ups.values()), axis=0)
    assert np.dot(fedavg, honest_direction) < 0                      # FedAvg is turned round
    assert np.linalg.norm(res.aggregate - honest_direction) < 0.1 * np.linalg.norm(honest_direction)
