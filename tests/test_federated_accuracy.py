"""The federation's update path against plain FedAvg, on real NSL-KDD rows and a tiny budget.

Every agent's update goes through what the real system does to it (the model blob it trains
from, the fixed-point encoding, clipping and masking of a secure-aggregation round run by the
gateway's own cohort code with the agents' weights) and must land where exact float FedAvg lands.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ztfl.agent.update import local_update
from ztfl.bench.federated import FederatedConfig, build, run_federation
from ztfl.bench.simfed import GatewayAggregation, fedavg
from ztfl.gateway.secagg import CLIP
from ztfl.models.params import get_flat

TINY = dict(agents=8, alpha=0.5, rounds=3, local_batches=12, batch_size=32, max_train_rows=2400, mask_bits=32)


@pytest.fixture(scope="module")
def tiny():
    cfg = FederatedConfig(**TINY)
    if not Path(cfg.data).is_file():
        pytest.fail(f"dataset not found at {cfg.data}: set ZTFL_DATASETS or provide ../shared/datasets")
    return cfg, build(cfg)


def test_partitions_are_non_iid_and_complete(tiny):
    cfg, fed = tiny
    assert len(fed.data.parts) == cfg.agents
    assert sum(len(p) for p in fed.data.parts) == len(fed.data.train)
    majority = [np.bincount(p.y[p.y >= 0]).max() / len(p) for p in fed.data.parts]
    assert max(majority) > 0.8          # alpha 0.5: some agent is dominated by one class


def test_local_update_takes_the_whole_batch_budget(tiny):
    cfg, fed = tiny
    small = min(fed.data.parts, key=len)
    assert len(small) < 4 * cfg.batch_size          # shorter than the budget in one pass
    base = get_flat(fed.spec.build())
    update = local_update(fed.spec, base, small, epochs=1, batch_size=cfg.batch_size, lr=cfg.lr,
                          max_batches=cfg.local_batches, seed=0)
    assert update.batches == cfg.local_batches
    assert update.samples == len(small)
    assert np.abs(update.delta).max() > 0


def test_secure_mean_is_the_weighted_mean_and_nothing_is_clipped(tiny):
    cfg, fed = tiny
    fed.reset()
    deltas, samples = fed.local_updates(1)
    assert max(float(np.abs(d).max()) for d in deltas.values()) < CLIP
    result = GatewayAggregation(fed.agents, cfg.mask_bits, fed.spec.variant).aggregate(1, deltas, samples)
    exact = fedavg(deltas, samples)
    scale = float(np.abs(exact).max())
    # 16 fractional bits and weights rounded to the weight unit: far below the update's size.
    assert result.survivors == fed.agents
    assert float(np.abs(result.mean - exact).max()) < 0.01 * scale
    assert abs(result.weight - sum(samples.values())) <= len(samples) * 8      # the weight unit's rounding


def test_system_update_path_loses_at_most_one_point_against_exact_fedavg(tiny):
    cfg, fed = tiny
    system = run_federation(cfg, fed)
    exact = run_federation(FederatedConfig(**{**cfg.__dict__, "transforms": ()}), fed)
    assert system.transforms == ["wire", "secagg"] and exact.transforms == []
    assert len(system.rounds) == cfg.rounds
    assert system.final["accuracy"] >= exact.final["accuracy"] - 0.01
    # The two paths end near each other in weight space too, not only in accuracy.
    start = get_flat(fed.spec.build())
    moved = np.linalg.norm(exact.weights - start)
    assert np.linalg.norm(system.weights - exact.weights) < 0.1 * moved
