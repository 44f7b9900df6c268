"""Byzantine-robust aggregation rules over flat float vectors (numpy only).

Each rule is a small object with `aggregate(updates, weights=None) -> AggregateResult` and
`min_inputs()`, the fewest inputs it can work with (the privacy-mode validator uses it).
Inputs are the rows of an (n, d) stack: per-agent updates in `privacy: none`, group sums
turned into group means in `privacy: grouped`. Sample-count weights are applied only
among the inputs a rule keeps: a Byzantine agent could otherwise win by claiming many samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ztfl.robustness.result import AggregateResult, RobustnessError, as_stack, as_weights


class RuleConfigError(RobustnessError):
    """A rule's parameters cannot work with the number of inputs it was given."""


def pairwise_sq_distances(stack: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", stack, stack)
    d = sq[:, None] + sq[None, :] - 2.0 * stack @ stack.T
    np.fill_diagonal(d, 0.0)
    return np.maximum(d, 0.0)


def _weighted_mean(stack: np.ndarray, weights: np.ndarray, keep) -> np.ndarray:
    keep = np.asarray(keep)
    w = weights[keep]
    w = w / w.sum() if w.sum() > 0 else np.full(len(keep), 1.0 / len(keep))
    return (w @ stack[keep]).astype(np.float32)


@dataclass
class FedAvg:
    """The plain weighted mean: no defence, shown for contrast."""
    name: str = "fedavg"

    def min_inputs(self) -> int:
        return 1

    def aggregate(self, updates, weights=None) -> AggregateResult:
        stack = as_stack(updates)
        w = as_weights(weights, len(stack))
        return AggregateResult(_weighted_mean(stack, w, np.arange(len(stack))), {}, self.name)


@dataclass
class Krum:
    """Blanchard et al. 2017: keep the input whose n - f - 2 nearest neighbours are closest
    (sum of squared distances). Multi-Krum (`m` > 1) keeps the m best-scored inputs and
    averages them. Needs n >= 2f + 3."""
    f: int
    m: int = 1
    name: str = "krum"

    def __post_init__(self):
        if self.f < 0 or self.m < 1:
            raise RuleConfigError(f"{self.name}: f must be >= 0 and m >= 1 (f={self.f}, m={self.m})")

    def min_inputs(self) -> int:
        return max(2 * self.f + 3, self.m)

    def scores(self, stack: np.ndarray) -> np.ndarray:
        n = len(stack)
        k = n - self.f - 2
        d = pairwise_sq_distances(stack)
        # Each row's own zero distance sorts first: skip it.
        return np.sort(d, axis=1)[:, 1:k + 1].sum(axis=1)

    def aggregate(self, updates, weights=None) -> AggregateResult:
        stack = as_stack(updates)
        n = len(stack)
        if n < self.min_inputs():
            raise RuleConfigError(f"{self.name} with f={self.f}, m={self.m} needs at least "
                                  f"{self.min_inputs()} inputs, got {n}")
        w = as_weights(weights, n)
        scores = self.scores(stack)
        # Stable sort: equal scores keep input order, so results are reproducible.
        order = np.argsort(scores, kind="stable")
        keep = np.sort(order[:self.m])
        cut = scores[order[self.m - 1]]
        excluded = {int(i): f"krum score {scores[i]:.4g} above the {self.m} best (cut {cut:.4g})"
                    for i in order[self.m:]}
        return AggregateResult(_weighted_mean(stack, w, keep), excluded, self.name,
                               {"scores": scores.tolist()})


def multi_krum(f: int, m: int) -> Krum:
    return Krum(f=f, m=m, name="multi-krum")


@dataclass
class CoordinateMedian:
    """Yin et al. 2018: the median of every coordinate. Unweighted; excludes nobody as a whole."""
    name: str = "median"

    def min_inputs(self) -> int:
        return 3

    def aggregate(self, updates, weights=None) -> AggregateResult:
        stack = as_stack(updates)
        as_weights(weights, len(stack))
        return AggregateResult(np.median(stack, axis=0).astype(np.float32), {}, self.name)


@dataclass
class TrimmedMean:
    """Yin et al. 2018: per coordinate, drop the `beta` fraction largest and smallest values
    and average the rest. Unweighted; reports per input the share of its coordinates trimmed."""
    beta: float = 0.2
    name: str = "trimmed-mean"

    def __post_init__(self):
        if not 0 <= self.beta < 0.5:
            raise RuleConfigError(f"trimmed-mean: beta must be in [0, 0.5), got {self.beta}")

    def trim_count(self, n: int) -> int:
        return int(np.floor(self.beta * n))

    def min_inputs(self) -> int:
        # At least one value must survive on each coordinate and something must be trimmed.
        return 3 if self.beta == 0 else max(3, int(np.ceil(1 / self.beta)))

    def aggregate(self, updates, weights=None) -> AggregateResult:
        stack = as_stack(updates)
        n = len(stack)
        as_weights(weights, n)
        k = self.trim_count(n)
        if n - 2 * k < 1:
            raise RuleConfigError(f"trimmed-mean with beta={self.beta} leaves nothing of {n} inputs")
        order = np.argsort(stack, axis=0, kind="stable")
        kept_rows = order[k:n - k]
        agg = np.take_along_axis(stack, kept_rows, axis=0).mean(axis=0)
        trimmed_share = np.zeros(n)
        if k:
            for part in (order[:k], order[n - k:]):
                trimmed_share += np.bincount(part.reshape(-1), minlength=n)
            trimmed_share /= stack.shape[1]
        return AggregateResult(agg.astype(np.float32), {}, self.name,
                               {"trimmed_per_side": k, "trimmed_share": trimmed_share.tolist()})


@dataclass
class GeometricMedian:
    """RFA (Pillutla et al. 2022): the weighted geometric median by smoothed Weiszfeld
    iterations. `nu` keeps a step finite when the estimate sits on an input."""
    nu: float = 1e-6
    max_iter: int = 100
    tol: float = 1e-7
    name: str = "geomed"

    def min_inputs(self) -> int:
        return 3

    def aggregate(self, updates, weights=None) -> AggregateResult:
        stack = as_stack(updates)
        w = as_weights(weights, len(stack))
        z = w @ stack
        obj = _geomed_objective(stack, w, z)
        iters = 0
        for iters in range(1, self.max_iter + 1):
            dist = np.linalg.norm(stack - z, axis=1)
            beta = w / np.maximum(dist, self.nu)
            z_new = (beta @ stack) / beta.sum()
            obj_new = _geomed_objective(stack, w, z_new)
            z = z_new
            if abs(obj - obj_new) <= self.tol * max(obj_new, 1e-30):
                break
            obj = obj_new
        dist = np.linalg.norm(stack - z, axis=1)
        return AggregateResult(z.astype(np.float32), {}, self.name,
                               {"iterations": iters, "distances": dist.tolist()})


def _geomed_objective(stack, w, z) -> float:
    return float(w @ np.linalg.norm(stack - z, axis=1))


@dataclass
class Flame:
    """FLAME-style (Nguyen et al. 2022): cluster inputs by cosine distance (the most persistent
    cluster holding a majority) and drop the outliers; clip the kept ones to the median norm of all
    inputs; average; add Gaussian noise of standard deviation `noise_lambda` x that norm.
    `noise_lambda` = 0 gives a deterministic result."""
    noise_lambda: float = 0.001
    seed: int | None = None
    name: str = "flame"

    def min_inputs(self) -> int:
        return 3

    def admitted(self, stack: np.ndarray) -> np.ndarray:
        """Positions in the most persistent majority cluster by cosine distance.

        Single-linkage merging (what HDBSCAN with min_samples = 1 builds) over cosine
        distances; among the cuts where one component holds a majority, take the one that
        survives the widest range of distances (the largest gap to the next merge; the
        all-in-one state's gap runs to 2, the largest cosine distance). sklearn's HDBSCAN
        with allow_single_cluster labels the stragglers of a lone cluster as noise, which
        would drop honest non-IID agents, hence this explicit form."""
        from scipy.cluster.hierarchy import linkage
        from scipy.spatial.distance import squareform

        n = len(stack)
        norms = np.linalg.norm(stack, axis=1)
        unit = stack / np.maximum(norms, 1e-12)[:, None]
        dist = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
        np.fill_diagonal(dist, 0.0)
        dist = (dist + dist.T) / 2
        merges = linkage(squareform(dist, checks=False), method="single")
        heights = np.append(merges[:, 2], 2.0)
        majority = n // 2 + 1
        members = {i: [i] for i in range(n)}
        best, best_gap = np.arange(n), -1.0
        for step, (a, b, h, _) in enumerate(merges):
            merged = members.pop(int(a)) + members.pop(int(b))
            members[n + step] = merged
            biggest = max(members.values(), key=len)
            gap = heights[step + 1] - h
            if len(biggest) >= majority and gap > best_gap:
                best, best_gap = np.sort(np.array(biggest)), gap
        return best

    def aggregate(self, updates, weights=None) -> AggregateResult:
        stack = as_stack(updates)
        n = len(stack)
        w = as_weights(weights, n)
        keep = self.admitted(stack)
        norms = np.linalg.norm(stack, axis=1)
        clip = float(np.median(norms))
        scale = np.minimum(1.0, clip / np.maximum(norms, 1e-12))
        clipped = stack * scale[:, None]
        agg = _weighted_mean(clipped, w, keep).astype(np.float64)
        if self.noise_lambda > 0:
            rng = np.random.default_rng(self.seed)
            agg = agg + rng.normal(0.0, self.noise_lambda * clip, size=agg.shape)
        excluded = {int(i): "cosine outlier (not in the majority cluster)"
                    for i in range(n) if i not in set(keep.tolist())}
        return AggregateResult(agg.astype(np.float32), excluded, self.name,
                               {"clip_norm": clip, "clipped": [int(i) for i in np.flatnonzero(scale < 1)]})


def clip_to_norm(update: np.ndarray, max_norm: float) -> np.ndarray:
    """Client-side norm clipping: the defence that survives masking in `privacy: secagg`
    (each honest agent clips before masking; the gateway cannot check it was done)."""
    if max_norm <= 0:
        raise RuleConfigError(f"clip norm must be positive, got {max_norm}")
    u = np.asarray(update, dtype=np.float32)
    n = float(np.linalg.norm(u))
    return u if n <= max_norm else (u * (max_norm / n)).astype(np.float32)
