"""One real secure aggregation per group, in this process (the protocol of docs/protocol.md).

`privacy: grouped` must not be a plaintext sum pretending to be one: each group runs a full
round of `protocol` (key agreement, masking, Shamir shares, unmasking) through the real
encoders and decoders; only the transport is absent. The gateway side learns `sum_k` and
`weight_k` per group and nothing else. `privacy: secagg` is the same with one group.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ztfl.protocol.config import RoundConfig, minimum_threshold
from ztfl.protocol.simulate import Cohort, run_round
from ztfl.robustness.result import RobustnessError

# Fixed point: 20 fractional bits resolve 1e-6, clip at +-8 per coordinate, 64-bit words
# leave room for sample-count weights of up to 2^31 per agent.
FRAC_BITS = 20
CLIP = 8.0
MASK_BITS = 64
MAX_WEIGHT = (1 << 31) - 1


class SecureGroupError(RobustnessError):
    """A group's secure aggregation did not produce a sum."""


@dataclass
class GroupSum:
    members: list
    total: np.ndarray        # sum of weight x update (float64, from the fixed-point sum)
    weight: int              # sum of the members' weights


def secure_sum(updates: dict, weights: dict, round_id: int = 1) -> GroupSum:
    """Run one secure-aggregation round over `updates` {member: flat vector} with integer
    `weights` {member: sample count}; return what the server learns."""
    members = list(updates)
    if len(members) < 2:
        raise SecureGroupError(f"a secure aggregation needs at least 2 members, got {len(members)}")
    dim = len(np.asarray(updates[members[0]]).reshape(-1))
    ids = {m: k + 1 for k, m in enumerate(members)}          # protocol ids are 1..65535
    n = len(members)
    config = RoundConfig.for_range(dim=dim, max_clients=n, threshold=minimum_threshold(n), clip=CLIP,
                                   frac_bits=FRAC_BITS, mask_bits=MASK_BITS, max_weight=MAX_WEIGHT)
    cohort = Cohort.create(list(ids.values()))
    w = {ids[m]: int(weights[m]) for m in members}
    run = run_round(config, cohort, {ids[m]: np.asarray(updates[m], np.float64) for m in members},
                    weights=w, round_id=round_id)
    if run.result is None:
        raise SecureGroupError(f"secure aggregation of {n} members aborted at {run.server.stage.name}")
    return GroupSum(members, run.result.sums.astype(np.float64) / float(1 << FRAC_BITS),
                    run.result.total_weight)


def secure_group_sums(groups: list[list], updates: dict, weights: dict, round_id: int = 1) -> list[GroupSum]:
    return [secure_sum({m: updates[m] for m in g}, {m: weights[m] for m in g}, round_id) for g in groups]
