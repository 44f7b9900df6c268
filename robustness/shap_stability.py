"""SHAP-stability scoring of candidate models (the ZTA-FL paper's Byzantine filter).

For each candidate (an agent's update in `privacy: none`, a group mean in `privacy: grouped`)
the caller supplies its SHAP attributions phi_i on one fixed reference batch. The score is
    s_i = 1 - ||phi_i - phi_ref|| / ||phi_ref||
and candidates scoring below mu - z*sigma of the round's scores are left out (z = 2, as in
the paper). phi_ref is, by default, the element-wise median of the candidates' attributions:
the paper leaves the reference open, and a median cannot be dragged by a minority.
With 30 % attackers mu - 2 sigma is itself pulled down by them; `threshold="median-mad"`
(median - z * 1.4826 * MAD) is the robust variant, offered beside the paper's rule.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ztfl.robustness.result import AggregateResult, RobustnessError, as_stack, as_weights
from ztfl.robustness.rules import FedAvg

THRESHOLDS = ("mean-2sd", "median-mad")


class ShapConfigError(RobustnessError):
    """The SHAP scorer was configured with something it cannot use."""


def shap_attributions(predict: Callable[[np.ndarray], np.ndarray], background: np.ndarray,
                      batch: np.ndarray, seed: int = 0) -> np.ndarray:
    """SHAP values of `predict` (rows -> one score per row, e.g. P(attack)) on `batch`,
    with `background` as the masker's reference rows: shape (rows, features).
    Uses shap's permutation explainer at its minimum budget (2F + 1 evaluations per row),
    which is exact for additive models and costs rows x (2F + 1) x |background| predictions."""
    import shap

    background = np.asarray(background, dtype=np.float32)
    batch = np.asarray(batch, dtype=np.float32)
    if background.ndim != 2 or batch.ndim != 2 or background.shape[1] != batch.shape[1]:
        raise ShapConfigError(f"background {background.shape} and batch {batch.shape} must be "
                              "2-D with the same number of features")
    n_features = batch.shape[1]
    masker = shap.maskers.Independent(background, max_samples=len(background))
    explainer = shap.explainers.Permutation(predict, masker, seed=seed)
    values = explainer(batch, max_evals=2 * n_features + 1, silent=True).values
    return np.asarray(values, dtype=np.float64).reshape(len(batch), n_features)


def stability_scores(phis: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """s_i = 1 - ||phi_i - phi_ref|| / ||phi_ref|| for each row of `phis` (flattened)."""
    phis = np.asarray(phis, dtype=np.float64).reshape(len(phis), -1)
    ref = np.median(phis, axis=0) if reference is None else np.asarray(reference, np.float64).reshape(-1)
    if ref.shape[0] != phis.shape[1]:
        raise ShapConfigError(f"reference has {ref.shape[0]} attributions, candidates {phis.shape[1]}")
    ref_norm = float(np.linalg.norm(ref))
    if ref_norm == 0.0:
        raise ShapConfigError("reference attributions are all zero: the reference batch "
                              "does not move the model's output")
    return 1.0 - np.linalg.norm(phis - ref, axis=1) / ref_norm


def score_threshold(scores: np.ndarray, threshold: str, z: float) -> float:
    if threshold == "mean-2sd":
        return float(np.mean(scores) - z * np.std(scores))
    if threshold == "median-mad":
        med = float(np.median(scores))
        return med - z * 1.4826 * float(np.median(np.abs(scores - med)))
    raise ShapConfigError(f"unknown threshold {threshold!r}; known: {', '.join(THRESHOLDS)}")


@dataclass
class ShapStability:
    """A rule: score every candidate by SHAP stability, leave out the low ones, aggregate the
    rest with `then` (FedAvg by default). `attributions_of(candidate_vector)` returns the
    candidate's SHAP attributions on the reference batch (see `shap_attributions`)."""
    attributions_of: Callable[[np.ndarray], np.ndarray]
    threshold: str = "mean-2sd"
    z: float = 2.0
    reference: np.ndarray | None = None
    then: object = field(default_factory=FedAvg)
    name: str = "shap"

    def __post_init__(self):
        if self.threshold not in THRESHOLDS:
            raise ShapConfigError(f"unknown threshold {self.threshold!r}; known: {', '.join(THRESHOLDS)}")
        if self.z <= 0:
            raise ShapConfigError(f"z must be positive, got {self.z}")

    def min_inputs(self) -> int:
        return 3

    def aggregate(self, updates, weights=None) -> AggregateResult:
        stack = as_stack(updates)
        n = len(stack)
        w = as_weights(weights, n)
        phis = np.stack([np.asarray(self.attributions_of(row.astype(np.float32)), np.float64).reshape(-1)
                         for row in stack])
        scores = stability_scores(phis, self.reference)
        cut = score_threshold(scores, self.threshold, self.z)
        keep = np.flatnonzero(scores >= cut)
        if len(keep) == 0:
            keep = np.arange(n)
        inner = self.then.aggregate(stack[keep], w[keep])
        excluded = {int(i): f"SHAP stability {scores[i]:.3f} below {cut:.3f} ({self.threshold})"
                    for i in range(n) if i not in set(keep.tolist())}
        for j, reason in inner.excluded.items():
            excluded[int(keep[j])] = reason
        return AggregateResult(inner.aggregate, excluded, self.name,
                               {"scores": scores.tolist(), "threshold": cut})
