"""Splitting data across federated clients.

`dirichlet_partition`: for every class, its rows are shared among clients in proportions
drawn from Dirichlet(alpha): small alpha gives each client few classes (strongly non-IID),
large alpha approaches an even split. `by_device`: one client per ToN_IoT device file.
"""
from __future__ import annotations

import numpy as np

from models.datasets import LabeledTable


def dirichlet_partition(labels: np.ndarray, n_clients: int, alpha: float, seed: int = 0,
                        min_size: int = 1, max_tries: int = 100) -> list[np.ndarray]:
    """Row indices per client (disjoint, together all rows). Redraws until every client holds
    at least `min_size` rows, so no client is empty."""
    if n_clients < 1 or alpha <= 0:
        raise ValueError("need n_clients >= 1 and alpha > 0")
    labels = np.asarray(labels)
    if len(labels) < n_clients * min_size:
        raise ValueError(f"{len(labels)} rows cannot give {n_clients} clients {min_size} rows each")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for cls in np.unique(labels):
            idx = np.flatnonzero(labels == cls)
            rng.shuffle(idx)
            share = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].append(chunk)
        result = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(r) for r in result) >= min_size:
            return result
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
