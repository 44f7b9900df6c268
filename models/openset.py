"""The open-set detector: besides the known-class head, a score for traffic unlike any normal
traffic seen in training, and an "unknown attack" decision at an operator-chosen false-alarm rate.

Score: how far an encoded row lies from the nearest of P prototypes of normal traffic,
  novelty(x) = log1p(min_j || x - c_j ||^2)
with c_j the k-means centroids of normal rows in the pipeline's encoded space ([0, 1] per column,
one-hots included, so a category never seen in training adds 1 on its own), stored on the 8-bit
grid c = q / 255 so every exported form computes the same score. Chosen on the
leave-attack-type-out validation (docs/models.md): it flags far more unseen attack types at 1 %
false alarms than distances in the classifier's embedding (a single Gaussian, Mahalanobis) or
energy and softmax scores, which only see what the head learnt to separate. The log keeps the
range an int8 exporter can represent: a scan can sit a thousand times further out than normal.

Nothing here is trained by the federation: the prototypes and the threshold are fitted where the
normal validation rows are (the gateway, or `ztfl train`), one set of rows for the prototypes and
another for the threshold, so agents do no extra work and no round is added.

Decision: the head's class, except that a row the head calls normal is an "unknown attack" when
its novelty exceeds the threshold. Counted five-way, an unknown row is the head's likeliest attack
class; counted attack-vs-normal, it is an attack.

The ESP32 form is integer only: prototypes on the input grid q_c = clamp(floor(c * 127 + 0.5), 0, 127)
(the grid of models.micro.quantise_input), distance d = min_j sum_i (q_x[i] - q_c[j][i])^2 (exact
integers), unknown when d > threshold_q = floor(expm1(threshold) * 127^2).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ztfl.models.datasets import NORMAL
from ztfl.models.export.novelty_graph import GRID, OPENSET_FILE

UNKNOWN = "unknown_attack"
OPENSET_VERSION = 1
DEFAULT_PROTOTYPES = 256
DEFAULT_FAR = 0.01
MAX_FIT_ROWS = 20000
INPUT_LEVELS = 127               # models.micro's input grid


class OpenSetError(ValueError):
    """A novelty detector cannot be fitted or calibrated, or a saved one is malformed."""


def calibrate_threshold(normal_scores: np.ndarray, far: float) -> float:
    """The score that at most a share `far` of these normal rows exceed."""
    if not 0.0 <= far < 1.0:
        raise OpenSetError(f"false-alarm rate must be in [0, 1), not {far}")
    s = np.sort(np.asarray(normal_scores, dtype=np.float64))
    if not len(s):
        raise OpenSetError("no normal rows to calibrate on")
    k = int(math.floor(far * len(s)))  # rows allowed above the threshold
    return float(s[len(s) - 1 - k])


def open_set_decision(proba: np.ndarray, novelty: np.ndarray, threshold: float, classes: list[str]) -> np.ndarray:
    """Class index per row after the open-set rule: a row the head calls normal but whose novelty
    exceeds `threshold` takes the head's likeliest attack class."""
    proba = np.asarray(proba, dtype=np.float64)
    normal = classes.index(NORMAL)
    attack_only = proba.copy()
    attack_only[:, normal] = -np.inf
    return np.where(unknown_mask(proba, novelty, threshold, classes), attack_only.argmax(1), proba.argmax(1))


def unknown_mask(scores: np.ndarray, novelty: np.ndarray, threshold: float, classes: list[str]) -> np.ndarray:
    """Rows raising "unknown attack": the head (probabilities or logits) says normal, the novelty
    score says unlike normal."""
    return (np.asarray(scores).argmax(1) == classes.index(NORMAL)) & (np.asarray(novelty) > threshold)


def kmeans(x: np.ndarray, k: int, seed: int = 0, iterations: int = 25) -> np.ndarray:
    """k-means++ seeding then Lloyd iterations; an emptied cluster moves to the row furthest from
    its centre. Deterministic for a seed."""
    x = np.asarray(x, dtype=np.float64)
    k = min(k, len(x))
    rng = np.random.default_rng(seed)
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(len(x))]
    nearest = squared_distances(x, centres[:1])[:, 0]
    for j in range(1, k):
        total = nearest.sum()
        pick = rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x))
        centres[j] = x[pick]
        nearest = np.minimum(nearest, squared_distances(x, centres[j:j + 1])[:, 0])
    for _ in range(iterations):
        d = squared_distances(x, centres)
        label = d.argmin(1)
        counts = np.bincount(label, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, label, x)
        moved = centres.copy()
        filled = counts > 0
        moved[filled] = sums[filled] / counts[filled, None]
        for j in np.flatnonzero(~filled):
            moved[j] = x[d[np.arange(len(x)), label].argmax()]
        if np.allclose(moved, centres):
            break
        centres = moved
    return centres


def squared_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :]
    return np.maximum(d, 0.0)


@dataclass
class NoveltyDetector:
    """Prototypes of normal traffic (encoded rows, as integers q: the prototype is q / GRID) and
    the calibrated threshold on the score."""
    prototypes: list[list[int]]
    threshold: float | None = None   # None until calibrated
    far: float | None = None
    calibration_rows: int = 0
    version: int = OPENSET_VERSION

    @classmethod
    def fit(cls, normal_x: np.ndarray, n_prototypes: int = DEFAULT_PROTOTYPES, seed: int = 0) -> "NoveltyDetector":
        x = np.asarray(normal_x, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise OpenSetError(f"need at least two normal rows to fit prototypes, got shape {x.shape}")
        if n_prototypes < 1:
            raise OpenSetError(f"need at least one prototype, not {n_prototypes}")
        if len(x) > MAX_FIT_ROWS:
            x = x[np.sort(np.random.default_rng(seed).choice(len(x), MAX_FIT_ROWS, replace=False))]
        centres = kmeans(x, n_prototypes, seed)
        return cls(np.clip(np.round(centres * GRID), 0, GRID).astype(np.int64).tolist())

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.prototypes, dtype=np.float64) / GRID

    def score(self, x: np.ndarray) -> np.ndarray:
        return np.log1p(squared_distances(np.asarray(x, dtype=np.float64), self.array).min(1))

    def calibrated(self, normal_x: np.ndarray, far: float = DEFAULT_FAR) -> "NoveltyDetector":
        """The same prototypes with the threshold that flags `far` of these normal rows (rows
        the prototypes were not fitted on)."""
        scores = self.score(normal_x)
        return NoveltyDetector(self.prototypes, calibrate_threshold(scores, far), far, len(scores))

    @classmethod
    def from_validation(cls, normal_x: np.ndarray, far: float = DEFAULT_FAR,
                        n_prototypes: int = DEFAULT_PROTOTYPES, seed: int = 0) -> "NoveltyDetector":
        """What a gateway does after the last round, from its own normal validation rows alone:
        prototypes from one half, the threshold from the other."""
        fit_rows, calibration_rows = split_normal(len(normal_x), seed)
        x = np.asarray(normal_x)
        return cls.fit(x[fit_rows], n_prototypes, seed).calibrated(x[calibration_rows], far)

    def unknown(self, logits_or_proba: np.ndarray, x: np.ndarray, classes: list[str]) -> np.ndarray:
        if self.threshold is None:
            raise OpenSetError("the open-set detector has no calibrated threshold")
        return unknown_mask(logits_or_proba, self.score(x), self.threshold, classes)

    # --- integer form (ESP32) -------------------------------------------------------------
    def int8_prototypes(self) -> np.ndarray:
        return np.clip(np.floor(self.array * INPUT_LEVELS + 0.5), 0, INPUT_LEVELS).astype(np.int64)

    def int8_threshold(self) -> int:
        if self.threshold is None:
            raise OpenSetError("the open-set detector has no calibrated threshold")
        return int(math.floor(math.expm1(self.threshold) * INPUT_LEVELS ** 2))

    def int8_form(self) -> dict:
        """What the ESP32 runs (module docstring): prototypes and threshold as integers."""
        return {"levels": INPUT_LEVELS, "prototypes": self.int8_prototypes().tolist(),
                "threshold": self.int8_threshold(), "far": self.far, "version": self.version}

    def decision(self) -> dict:
        """What a runtime needs beside the graph's novelty output: the threshold, and what it was
        calibrated to."""
        return {"threshold": self.threshold, "far": self.far, "calibration_rows": self.calibration_rows,
                "prototypes": len(self.prototypes), "version": self.version}

    # --- persistence --------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NoveltyDetector":
        if d.get("version") != OPENSET_VERSION:
            raise OpenSetError(f"open-set detector version {d.get('version')!r} is not {OPENSET_VERSION}")
        try:
            protos = [[int(v) for v in row] for row in d["prototypes"]]
            threshold = None if d.get("threshold") is None else float(d["threshold"])
            far = None if d.get("far") is None else float(d["far"])
            det = cls(protos, threshold, far, int(d.get("calibration_rows", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise OpenSetError(f"malformed open-set detector: {e}") from e
        if not protos or len({len(row) for row in protos}) != 1:
            raise OpenSetError("open-set prototypes must be a non-empty table of equal-length rows")
        if min(map(min, protos)) < 0 or max(map(max, protos)) > GRID:
            raise OpenSetError(f"open-set prototypes must be integers in 0..{GRID}")
        return det

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / OPENSET_FILE
        path.write_text(json.dumps(self.to_dict()))
        return path


def int8_distances(prototypes_q: np.ndarray, qx: np.ndarray) -> np.ndarray:
    """min_j sum_i (q_x[i] - q_c[j][i])^2 per row, exact integers (the ESP32 form)."""
    qx = np.asarray(qx, dtype=np.int64)
    q = np.asarray(prototypes_q, dtype=np.int64)
    return ((qx[:, None, :] - q[None, :, :]) ** 2).sum(2).min(1)


def load_detector(directory: str | Path) -> NoveltyDetector | None:
    """The detector saved in a model directory, or None if it has none."""
    path = Path(directory) / OPENSET_FILE
    return NoveltyDetector.from_dict(json.loads(path.read_text())) if path.is_file() else None


def split_normal(n_rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions of validation normal rows halved at random: (calibration, measurement)."""
    order = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(order[: n_rows // 2]), np.sort(order[n_rows // 2:])
