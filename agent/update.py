"""One agent's contribution to a round: train a copy of the model it was given on its own rows
and return the change, computed against exactly the weights it started from (the gateway adds
the aggregate of these changes to its own copy of that model version)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ztfl.models.params import set_flat
from ztfl.models.training import TrainConfig, train_local


@dataclass
class LocalUpdate:
    delta: np.ndarray       # float32: locally trained weights - the base they started from
    batches: int            # optimiser steps taken
    samples: int            # rows of the partition (the FedAvg weight)


def local_update(spec, base: np.ndarray, encoded, *, epochs: int, batch_size: int, lr: float,
                 max_batches: int | None = None, seed: int = 0, adversarial: str | None = None,
                 time_budget_s: float | None = None) -> LocalUpdate:
    """Train a copy of `base` on `encoded` and return the change.

    A batch budget is a number of optimiser steps, taken in full: an agent whose partition is
    shorter than the budget passes over its rows again instead of stopping at the end of its
    epochs. FedAvg's averaged step is the mean of the agents' steps, so agents stopped after one
    pass of a few hundred rows (11 steps for 700 rows) held the whole federation back to a
    fraction of the centralised progress per round."""
    if max_batches is not None:
        per_epoch = max(1, len(encoded) // batch_size)   # a last batch of one row is skipped
        epochs = max(epochs, math.ceil(max_batches / per_epoch))
    local = spec.build()
    set_flat(local, base)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, adversarial=adversarial, seed=seed,
                      time_budget_s=time_budget_s, max_batches=max_batches)
    result = train_local(local, encoded, cfg)
    return LocalUpdate(result.weights - base, result.batches, len(encoded))
