"""What every aggregation rule returns: the aggregate and who was left out, with the reason."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class RobustnessError(ValueError):
    """Base class of the errors this package raises."""


class UpdateShapeError(RobustnessError):
    """Updates are not a non-empty stack of equally long, finite float vectors."""


@dataclass
class AggregateResult:
    """`aggregate` is float32 of the input length. `excluded` maps the position of an input
    (an agent in `privacy: none`, a group in `privacy: grouped`) to why it was left out;
    inputs not listed contributed. `info` carries rule-specific figures (scores, thresholds)."""
    aggregate: np.ndarray
    excluded: dict[int, str] = field(default_factory=dict)
    rule: str = ""
    info: dict = field(default_factory=dict)

    def kept(self, n: int) -> list[int]:
        return [i for i in range(n) if i not in self.excluded]


def as_stack(updates) -> np.ndarray:
    """(n, d) float64 view of the updates, checked. float64 keeps distance sums exact enough
    for ties between identical updates to stay ties."""
    try:
        stack = np.asarray([np.asarray(u, dtype=np.float64).reshape(-1) for u in updates]) \
            if not isinstance(updates, np.ndarray) else np.asarray(updates, dtype=np.float64)
    except ValueError as exc:
        raise UpdateShapeError(f"updates differ in length: {exc}") from None
    if stack.ndim != 2 or stack.shape[0] == 0 or stack.shape[1] == 0:
        raise UpdateShapeError(f"expected a non-empty (n, d) stack of updates, got shape {stack.shape}")
    if not np.all(np.isfinite(stack)):
        bad = sorted(set(np.flatnonzero(~np.all(np.isfinite(stack), axis=1)).tolist()))
        raise UpdateShapeError(f"updates at positions {bad} hold NaN or infinite values")
    return stack


def as_weights(weights, n: int) -> np.ndarray:
    """Non-negative weights summing to one (equal weights when None)."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (n,):
        raise UpdateShapeError(f"{w.size} weights for {n} updates")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise UpdateShapeError("weights must be finite, non-negative and not all zero")
    return w / w.sum()
