"""Splitting data across federated clients.

`dirichlet_partition`: for every class, its rows are shared among clients in proportions
drawn from Dirichlet(alpha): small alpha gives each client few classes (strongly non-IID),
large alpha approaches an even split. `by_device`: one client per ToN_IoT device file.

`PartitionSpec` / `agent_partition`: an agent's local data for demos and tests, one non-IID
partition of a shared dataset cut the same way by every process from a small spec. The split is
deterministic (deduplicate, stratified train/validation split, Dirichlet partition of the training
rows by class), so a gateway and N agent processes started from one spec agree on who holds which
rows without exchanging any.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ztfl.models.datasets import LabeledTable, deduplicate, load, stratified_split

# Every agent process trains, so each partition gets at least this many rows.
AGENT_MIN_ROWS = 20


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


def train_validation(spec: PartitionSpec) -> tuple[LabeledTable, LabeledTable]:
    table = deduplicate(load(Path(spec.path), spec.fmt))
    train_idx, val_idx = stratified_split(table.category, spec.val_fraction, spec.seed)
    return table.take(train_idx), table.take(val_idx)


def agent_partitions(spec: PartitionSpec, labels: np.ndarray) -> list[np.ndarray]:
    """The spec's cut of the training rows (labels = their categories) into `count` partitions."""
    return dirichlet_partition(labels, spec.count, spec.alpha, spec.seed, min_size=AGENT_MIN_ROWS, top_up=True)


def agent_partition(spec: PartitionSpec) -> LabeledTable:
    train, _ = train_validation(spec)
    parts = agent_partitions(spec, train.category)
    if not 0 <= spec.index < spec.count:
        raise ValueError(f"data: partition index {spec.index} outside 0..{spec.count - 1}")
    return train.take(parts[spec.index])


def dirichlet_partition(labels: np.ndarray, n_clients: int, alpha: float, seed: int = 0,
                        min_size: int = 1, max_tries: int = 100, top_up: bool = False) -> list[np.ndarray]:
    """Row indices per client (disjoint, together all rows). For every class, its rows are shared
    by Dirichlet(alpha) proportions. A client left with fewer than `min_size` rows is fixed either
    by redrawing (the default, at most `max_tries` draws) or, with `top_up`, by moving rows to it
    from the largest client (one draw, so every process cutting the same spec agrees cheaply)."""
    if n_clients < 1 or alpha <= 0:
        raise ValueError("need n_clients >= 1 and alpha > 0")
    labels = np.asarray(labels)
    if len(labels) < n_clients * min_size:
        raise ValueError(f"{len(labels)} rows cannot give {n_clients} clients {min_size} rows each")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(n_clients)]
        for cls in np.unique(labels):
            idx = np.flatnonzero(labels == cls)
            rng.shuffle(idx)
            share = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].extend(chunk.tolist())
        if top_up:
            for client in range(n_clients):
                while len(parts[client]) < min_size:
                    donor = max(range(n_clients), key=lambda c: len(parts[c]))
                    parts[client].append(parts[donor].pop())
        if min(len(part) for part in parts) >= min_size:
            return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]
    raise ValueError(f"no Dirichlet({alpha}) draw in {max_tries} tries gave every client {min_size} rows")


def by_device(tables: list[LabeledTable]) -> dict[str, LabeledTable]:
    """ToN_IoT: each device type is one naturally non-IID client."""
    out = {}
    for t in tables:
        if t.device is None:
            raise ValueError("by_device needs ToN_IoT tables (with a device)")
        if t.device in out:
            raise ValueError(f"device {t.device} appears twice")
        out[t.device] = t
    return out
