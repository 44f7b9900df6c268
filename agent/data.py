"""An agent's local data: a file of its own, or (for demos and tests) one non-IID partition of a
shared dataset, cut the same way by every process from a small spec.

The split is deterministic (deduplicate, stratified train/validation split, Dirichlet partition
of the training rows by class), so a gateway and N agent processes started from one spec agree
on who holds which rows without exchanging any.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.datasets import LabeledTable, deduplicate, load, stratified_split


@dataclass(frozen=True)
class PartitionSpec:
    path: str
    fmt: str = "nsl-kdd"
    val_fraction: float = 0.2
    seed: int = 7
    count: int = 1
    alpha: float = 0.5
    index: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "PartitionSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"data: unknown key '{sorted(unknown)[0]}'")
        if "path" not in known:
            raise ValueError("data: missing key 'path'")
        return cls(**known)


def dirichlet_partition(labels: np.ndarray, count: int, alpha: float, seed: int,
                        min_rows: int = 20) -> list[np.ndarray]:
    """Split row indices among `count` clients; each class is spread by Dir(alpha) proportions
    (small alpha: very skewed). Every client gets at least `min_rows` rows so it can train."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(count)]
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        shares = rng.dirichlet(np.full(count, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for client, chunk in enumerate(np.split(idx, cuts)):
            parts[client].extend(chunk.tolist())
    # Top up tiny clients from the largest one so nobody has an empty partition.
    for client in range(count):
        while len(parts[client]) < min_rows:
            donor = max(range(count), key=lambda c: len(parts[c]))
            parts[client].append(parts[donor].pop())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def train_validation(spec: PartitionSpec) -> tuple[LabeledTable, LabeledTable]:
    table = deduplicate(load(Path(spec.path), spec.fmt))
    train_idx, val_idx = stratified_split(table.category, spec.val_fraction, spec.seed)
    return table.take(train_idx), table.take(val_idx)


def agent_partition(spec: PartitionSpec) -> LabeledTable:
    train, _ = train_validation(spec)
    parts = dirichlet_partition(train.category, spec.count, spec.alpha, spec.seed)
    if not 0 <= spec.index < spec.count:
        raise ValueError(f"data: partition index {spec.index} outside 0..{spec.count - 1}")
    return train.take(parts[spec.index])
