"""How a simulated gateway aggregates one round's updates (deltas and sample counts by agent).

`fedavg` is exact float FedAvg, the reference no deployed path has. `PrivacyModeAggregation`
is the privacy mode of a robustness.modes aggregator: `none` gives every update to its rule;
`grouped` runs one secure aggregation per group and the rule over the group means; `secagg`
runs one for the cohort. Every secure aggregation goes through bench.simfed.secure, the
gateway's own cohort code against the agents' own clients.
"""
from __future__ import annotations

import numpy as np

from ztfl.bench.simfed.secure import GatewayAggregation, SecureSum


def fedavg(deltas: dict, samples: dict) -> np.ndarray:
    """The mean of the deltas weighted by sample count, in float64."""
    total = sum(samples[a] for a in deltas)
    return sum(d.astype(np.float64) * samples[a] for a, d in deltas.items()) / total


def secure_group_sums(secure: GatewayAggregation, rnd: int, groups: list[list], deltas: dict,
                      samples: dict) -> list[SecureSum]:
    """One secure aggregation per group, each its own cohort of the round."""
    return [secure.aggregate(rnd, {a: deltas[a] for a in group}, {a: samples[a] for a in group},
                             cohort=f"{secure.cohort}.group{k}") for k, group in enumerate(groups)]


class PrivacyModeAggregation:
    """`aggregator`: a robustness.modes.Aggregator; `secure`: the fleet's gateway aggregation
    (grouped and secagg)."""

    def __init__(self, aggregator, secure: GatewayAggregation | None = None):
        self.aggregator = aggregator
        self.secure = secure

    def aggregate(self, rnd: int, deltas: dict, samples: dict):
        """(robustness AggregateResult, the agents left out)."""
        privacy = self.aggregator.config.privacy
        ids = list(deltas)
        if privacy == "none":
            res = self.aggregator.aggregate(np.stack([deltas[a] for a in ids]), [samples[a] for a in ids], ids)
            return res, sorted(ids[k] for k in res.excluded)
        if privacy == "grouped":
            groups = self.aggregator.split(ids)
            sums = secure_group_sums(self.secure, rnd, groups, deltas, samples)
            res = self.aggregator.aggregate_groups([s.total for s in sums], [s.weight for s in sums], groups)
            return res, res.info.get("excluded_agents", [])
        cohort = self.secure.aggregate(rnd, deltas, samples)
        return self.aggregator.aggregate_sum(cohort.total, cohort.weight), []
