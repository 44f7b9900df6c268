"""The data side of a simulated federation, one way for every experiment: a dataset by format
(models.datasets, its file from the one dataset table unless a path is given), deduplicated,
optionally subsampled, split into training and held-out rows (stratified by class), the
preprocessing pipeline fitted on the training rows only, and the training rows cut over the
agents by models.partition's Dirichlet partitioner (by the fine-grained class: sites see
different attack types even when the target is binary)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ztfl.models.partition import AGENT_MIN_ROWS


class SplitError(ValueError):
    """The training rows cannot be cut over the agents as asked."""


@dataclass(frozen=True)
class DataSpec:
    """`max_rows`: stratified subsample of the rows read (before the split); `max_train_rows`: of
    the training rows (after it, the held-out rows stay whole). `top_up` cuts as the agents do
    (one draw, small partitions topped up); without it the partitioner redraws. `gateway_share`:
    the part of the held-out rows the gateway keeps as its validation set (guard, SHAP reference
    batch); the rest is the test set every figure is measured on."""
    dataset: str = "nsl-kdd"
    path: str | None = None
    target: str = "multiclass"
    val_fraction: float = 0.2
    seed: int = 0
    max_rows: int | None = None
    max_train_rows: int | None = None
    agents: int = 8
    alpha: float = 0.5
    min_rows: int = AGENT_MIN_ROWS
    top_up: bool = True
    gateway_share: float = 0.0


@dataclass
class FederationData:
    pipeline: object                    # models.preprocess.Pipeline
    train: object                       # models.preprocess.Encoded, every training row
    parts: list                         # Encoded per agent
    gateway_val: object
    test: object


def load_federation(spec: DataSpec) -> FederationData:
    from ztfl.models.datasets import dataset_file, deduplicate, load, stratified_split
    from ztfl.models.partition import dirichlet_partition
    from ztfl.models.prepare import subsample
    from ztfl.models.preprocess import Pipeline

    table = subsample(deduplicate(load(spec.path or dataset_file(spec.dataset), spec.dataset)), spec.max_rows,
                      spec.seed)
    train_idx, val_idx = stratified_split(table.category, spec.val_fraction, spec.seed)
    train = subsample(table.take(train_idx), spec.max_train_rows, spec.seed)
    pipeline = Pipeline.fit(train, target=spec.target)
    encoded, held_out = pipeline.encode(train), pipeline.encode(table.take(val_idx))
    try:
        cut = dirichlet_partition(train.category, spec.agents, spec.alpha, spec.seed, min_size=spec.min_rows,
                                  top_up=spec.top_up)
    except ValueError as exc:
        raise SplitError(f"cannot split the data over {spec.agents} agents: {exc}") from None
    order = np.random.default_rng(spec.seed).permutation(len(held_out))
    n_gateway = int(len(order) * spec.gateway_share + 1e-9)
    return FederationData(pipeline, encoded, [encoded.subset(idx) for idx in cut],
                          held_out.subset(np.sort(order[:n_gateway])), held_out.subset(np.sort(order[n_gateway:])))
