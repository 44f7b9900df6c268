"""The one preprocessing pipeline: fitted on training rows only, saved as JSON next to the
model, and applied identically by the trainer, the agents, the gateway and the exporters.

Layout of an encoded row (float32, every value in [0, 1]):
  numeric columns, in fitted order: impute NaN with the training median, log1p when the
    column is non-negative and heavy-tailed (max > 100 in training), then min-max scale with
    the training min/max and clip to [0, 1];
  categorical columns: one-hot over the values seen in training plus a final "unseen" slot,
    so new categories encode without error.
A numeric column with more than two distinct training values is *continuous*: adversarial
perturbations touch only those; 0/1 flags and one-hots stay valid.
`scaling="minmax"` fits plain min-max scaling (no log1p) for every numeric column.
`scaling="quantile"` maps each continuous column through its training quantiles (piecewise
linear between `QUANTILES` knots, so the training rows spread evenly over [0, 1] whatever the
tail; values beyond the training range clip to 0 or 1); other columns are min-max scaled.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ztfl.models.datasets import NORMAL, LabeledTable, MissingColumnError

PIPELINE_VERSION = 1
LOG_THRESHOLD = 100.0
TARGETS = ("binary", "multiclass")
SCALINGS = ("log-minmax", "minmax", "quantile")
QUANTILES = 65


class PipelineError(ValueError):
    """A saved pipeline is malformed."""


@dataclass
class NumericColumn:
    name: str
    median: float
    log: bool
    low: float
    high: float
    continuous: bool
    knots: list[float] | None = None    # scaling "quantile": value -> level by linear interpolation
    levels: list[float] | None = None


def quantile_map(v: np.ndarray) -> tuple[list[float], list[float]]:
    """Distinct quantile knots of `v` and the level each maps to (the middle of the quantile
    levels a repeated knot covers, so a value taken by many rows lands mid-way through them)."""
    q = np.linspace(0.0, 1.0, QUANTILES)
    knots = np.quantile(v, q)
    distinct, first, counts = np.unique(knots, return_index=True, return_counts=True)
    levels = (q[first] + q[first + counts - 1]) / 2
    if len(distinct) > 1:   # the extremes still map to 0 and 1
        levels[0], levels[-1] = 0.0, 1.0
    return [float(k) for k in distinct], [float(lv) for lv in levels]


@dataclass
class CategoricalColumn:
    name: str
    values: list[str]


@dataclass
class Pipeline:
    fmt: str
    target: str
    classes: list[str]
    numeric: list[NumericColumn]
    categorical: list[CategoricalColumn]
    device: str | None = None
    window: int = 1
    version: int = PIPELINE_VERSION
    extra: dict = field(default_factory=dict)

    # --- fitting ------------------------------------------------------------------------
    @classmethod
    def fit(cls, table: LabeledTable, target: str = "multiclass", window: int = 1,
            scaling: str = "log-minmax") -> "Pipeline":
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, not {scaling!r}")
        numeric, categorical = [], []
        for col in table.features.columns:
            s = table.features[col]
            if col in table.categorical:
                values = sorted(set(s.astype(str)))
                categorical.append(CategoricalColumn(col, values))
                continue
            v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
            finite = v[np.isfinite(v)]
            median = float(np.median(finite)) if finite.size else 0.0
            v = np.where(np.isfinite(v), v, median)
            lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
            log = scaling == "log-minmax" and lo >= 0.0 and hi > LOG_THRESHOLD
            if log:
                lo, hi = math.log1p(lo), math.log1p(hi)
            n_distinct = len(np.unique(v)) if v.size else 0
            if scaling == "quantile" and n_distinct > 2:
                knots, levels = quantile_map(v)
                numeric.append(NumericColumn(col, median, False, 0.0, 1.0, True, knots, levels))
                continue
            numeric.append(NumericColumn(col, median, log, lo, hi, continuous=n_distinct > 2))
        if target == "binary":
            classes = [NORMAL, "attack"]
        else:
            seen = sorted(set(table.category) - {NORMAL})
            classes = [NORMAL, *seen]
        # Recorded only when not the default, so default pipelines stay byte-identical.
        extra = {"scaling": scaling} if scaling != "log-minmax" else {}
        return cls(table.fmt, target, classes, numeric, categorical, table.device, window, extra=extra)

    # --- encoding -----------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return len(self.numeric) + sum(len(c.values) + 1 for c in self.categorical)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def continuous_mask(self) -> np.ndarray:
        mask = np.zeros(self.n_features, dtype=bool)
        mask[:len(self.numeric)] = [c.continuous for c in self.numeric]
        return mask

    @property
    def categorical_slots(self) -> tuple[tuple[int, int], ...]:
        """(start, stop) of each categorical column's one-hot block; its last slot is "unseen"."""
        slots, k = [], len(self.numeric)
        for col in self.categorical:
            slots.append((k, k + len(col.values) + 1))
            k += len(col.values) + 1
        return tuple(slots)

    @property
    def feature_names(self) -> list[str]:
        names = [c.name for c in self.numeric]
        for c in self.categorical:
            names += [f"{c.name}={v}" for v in c.values] + [f"{c.name}=<unseen>"]
        return names

    def transform(self, features: pd.DataFrame | LabeledTable) -> np.ndarray:
        if isinstance(features, LabeledTable):
            features = features.features
        n = len(features)
        out = np.zeros((n, self.n_features), dtype=np.float32)
        for j, col in enumerate(self.numeric):
            if col.name not in features.columns:
                raise MissingColumnError(col.name, "the data (the model's pipeline needs it)")
            v = pd.to_numeric(features[col.name], errors="coerce").to_numpy(dtype=np.float64)
            v = np.where(np.isfinite(v), v, col.median)
            if col.knots is not None:
                v = np.interp(v, col.knots, col.levels)
            if col.log:
                v = np.log1p(np.maximum(v, 0.0))
            span = col.high - col.low
            v = (v - col.low) / span if span > 0 else np.zeros_like(v)
            out[:, j] = np.clip(v, 0.0, 1.0)
        k = len(self.numeric)
        for col in self.categorical:
            if col.name not in features.columns:
                raise MissingColumnError(col.name, "the data (the model's pipeline needs it)")
            index = {v: i for i, v in enumerate(col.values)}
            unseen = len(col.values)
            pos = np.array([index.get(str(v).strip(), unseen) for v in features[col.name]], dtype=np.int64)
            out[np.arange(n), k + pos] = 1.0
            k += len(col.values) + 1
        return out

    def encode_labels(self, category: np.ndarray) -> np.ndarray:
        """Class index per row; -1 for a class the pipeline never saw (multiclass only)."""
        category = np.asarray(category, dtype=object)
        if self.target == "binary":
            return (category != NORMAL).astype(np.int64)
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index.get(c, -1) for c in category], dtype=np.int64)

    def encode(self, table: LabeledTable) -> "Encoded":
        return Encoded(self.transform(table), self.encode_labels(table.category), self.continuous_mask,
                       list(self.classes), np.asarray(table.category, dtype=object))

    # --- persistence --------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        for c in d["numeric"]:   # only quantile pipelines carry knots: others stay byte-identical
            if c["knots"] is None:
                del c["knots"], c["levels"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Pipeline":
        try:
            if d.get("version") != PIPELINE_VERSION:
                raise PipelineError(f"pipeline version {d.get('version')!r} is not {PIPELINE_VERSION}")
            return cls(fmt=str(d["fmt"]), target=str(d["target"]), classes=[str(c) for c in d["classes"]],
                       numeric=[NumericColumn(**c) for c in d["numeric"]],
                       categorical=[CategoricalColumn(str(c["name"]), [str(v) for v in c["values"]])
                                    for c in d["categorical"]],
                       device=d.get("device"), window=int(d.get("window", 1)),
                       version=PIPELINE_VERSION, extra=dict(d.get("extra", {})))
        except (KeyError, TypeError) as e:
            raise PipelineError(f"malformed pipeline: {e}") from e

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> "Pipeline":
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class Encoded:
    """Model-ready data: X float32 in [0, 1], y class indices, which columns are continuous."""
    x: np.ndarray
    y: np.ndarray
    continuous: np.ndarray
    classes: list[str]
    category: np.ndarray | None = None  # original class names (for unseen-class reporting)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index) -> "Encoded":
        index = np.asarray(index)
        return Encoded(self.x[index], self.y[index], self.continuous, self.classes,
                       None if self.category is None else self.category[index])
