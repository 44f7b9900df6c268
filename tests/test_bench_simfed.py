"""The simulated federation every experiment runs on (bench.simfed): its secure aggregation is the
gateway's own cohort code against the agents' own clients, and lands exactly on the plaintext
weighted mean of the same encoded updates; with DP on the agents' noisy updates, after the
gateway's ledger has accounted the release. Every experiment entry point builds on it."""
from __future__ import annotations

import ast
import copy
from pathlib import Path

import numpy as np
import pytest

from ztfl.bench.simfed import GatewayAggregation, SecureAggregationError, fedavg
from ztfl.gateway.config import PrivacySpec
from ztfl.gateway.secagg import CLIP, FRAC_BITS, clip_q
from ztfl.privacy import add_noise, clip_l2
from ztfl.protocol import fixedpoint
from ztfl.protocol.epochs import EpochPolicy

REPO = Path(__file__).resolve().parents[1]


def _updates(n: int, dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {f"site{k}": rng.normal(0, 0.05, dim).astype(np.float32) for k in range(n)}


@pytest.mark.parametrize("mask_bits", [32, 64])
def test_secagg_through_the_gateway_is_the_plaintext_weighted_mean_of_the_encoded_updates(mask_bits):
    deltas = _updates(5, 300)
    deltas["site0"][0] = CLIP + 1.5                  # beyond the gateway's per-coordinate clip
    samples = dict(zip(deltas, (40, 900, 5000, 120, 77)))
    secure = GatewayAggregation(list(deltas), mask_bits)
    result = secure.aggregate(1, deltas, samples)

    # The gateway's weight unit keeps the largest weight inside its bound (at 32 bits, 5000 rows do
    # not fit); each agent sends its rows in that unit.
    frac, bound = FRAC_BITS[mask_bits], clip_q(mask_bits)
    unit = 1 if mask_bits == 64 else 7
    weights = {a: max(1, round(s / unit)) for a, s in samples.items()}
    sums = sum(w * fixedpoint.quantize(deltas[a], frac, bound) for a, w in weights.items())
    expected = (sums.astype(np.float64) / (2.0 ** frac * sum(weights.values()))).astype(np.float32)
    np.testing.assert_array_equal(result.mean, expected)
    assert result.weight == unit * sum(weights.values())
    assert result.survivors == list(deltas) and result.mean[0] < CLIP
    if mask_bits == 64:                              # exact weights: only the fixed point differs
        exact = fedavg(deltas, samples)
        assert np.max(np.abs(result.mean[1:] - exact[1:])) <= 2.0 ** -frac
    # A classic round: the gateway's key epochs saw every agent advertise new keys once.
    assert secure.epochs[secure.cohort].key_setups == 5 and secure.key_setups() == 1.0


def test_dp_round_sums_the_agents_noisy_updates_after_the_ledger_accounts_the_release():
    deltas = _updates(5, 200, seed=1)                # the agents' security floor: groups of 5 at least
    deltas["site1"] *= 40                            # far beyond the L2 clip: the agent clips it
    samples = dict.fromkeys(deltas, 100)
    spec = PrivacySpec(epsilon=8.0, delta=1e-5, min_survivors=5, clip_norm=1.0)
    secure = GatewayAggregation(list(deltas), 32, key_policy=EpochPolicy(max_rounds=3), privacy=spec,
                                planned_rounds=2, seed=3)
    for rnd in (1, 2):
        noise = copy.deepcopy(secure.noise)          # the agents' generators, before they draw
        result = secure.aggregate(rnd, deltas, samples)
        params = secure.privacy[secure.cohort].params
        frac = FRAC_BITS[32]
        noisy = sum(add_noise(fixedpoint.encode(clip_l2(deltas[a], 1.0), 1, frac, clip_q(32), 32), params, noise[a])
                    for a in deltas)
        expected = (noisy[:-1].astype(np.float64) / (2.0 ** frac * len(deltas))).astype(np.float32)
        np.testing.assert_array_equal(result.mean, expected)
        assert result.weight == sum(samples.values())     # with DP every agent weighs 1
    ledger = secure.privacy[secure.cohort].ledger
    assert [r.survivors for r in ledger.rounds] == [5, 5]
    assert ledger.epsilon_spent == pytest.approx(8.0, abs=0.01) and ledger.epsilon_spent <= 8.0
    assert secure.key_setups() == 1.0                  # one key epoch for both rounds
    with pytest.raises(SecureAggregationError, match="privacy budget exhausted"):
        secure.aggregate(3, deltas, samples)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


# What the harness does for the experiments: none of them may do it their own way again.
HARNESS_PARTS = {"ztfl.protocol.simulate", "ztfl.models.partition", "ztfl.models.prepare", "ztfl.models.training",
                 "ztfl.models.micro", "ztfl.models.cnn_lstm", "ztfl.agent.update", "ztfl.gateway.cohort",
                 "ztfl.gateway.secagg", "ztfl.models.params"}


def test_every_experiment_entry_point_builds_on_the_harness():
    from ztfl.cli import BENCHMARKS, COMMANDS

    assert COMMANDS["experiment"][0] == "ztfl.bench.experiment" and BENCHMARKS["dp"][0] == "ztfl.bench.dp"
    cli = _imports(REPO / "bench" / "experiment.py")
    assert {"ztfl.bench.byzantine", "ztfl.bench.sweep", "ztfl.bench.federated"} <= cli
    assert "ztfl.bench.byzantine" in _imports(REPO / "bench" / "sweep.py")
    for name in ("byzantine", "federated", "dp"):
        used = _imports(REPO / "bench" / f"{name}.py")
        assert "ztfl.bench.simfed" in used, name
        assert not used & HARNESS_PARTS, (name, sorted(used & HARNESS_PARTS))
    assert not (REPO / "robustness" / "secure_groups.py").exists()
