"""From a data file to model-ready train/validation sets, in the one order that avoids leaks:
read, deduplicate, split (stratified by class), fit the pipeline on the training part only,
encode both parts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ztfl.models.datasets import LabeledTable, deduplicate, load, stratified_split
from ztfl.models.preprocess import Encoded, Pipeline


@dataclass
class Prepared:
    pipeline: Pipeline
    train: Encoded
    val: Encoded
    n_rows_read: int
    n_rows_unique: int


def subsample(table: LabeledTable, max_rows: int | None, seed: int) -> LabeledTable:
    """At most `max_rows` rows, stratified by class (for quick runs and tests)."""
    if max_rows is None or len(table) <= max_rows:
        return table
    _, keep = stratified_split(table.category, max_rows / len(table), seed)
    return table.take(keep)


def prepare_table(table: LabeledTable, target: str = "multiclass", val_fraction: float = 0.2,
                  seed: int = 0, max_rows: int | None = None, window: int = 1,
                  scaling: str = "log-minmax") -> Prepared:
    n_read = len(table)
    table = subsample(deduplicate(table), max_rows, seed)
    train_idx, val_idx = stratified_split(table.category, val_fraction, seed)
    pipeline = Pipeline.fit(table.take(train_idx), target=target, window=window, scaling=scaling)
    return Prepared(pipeline, pipeline.encode(table.take(train_idx)), pipeline.encode(table.take(val_idx)),
                    n_read, len(table))


def prepare(path: str | Path, fmt: str, target: str = "multiclass", val_fraction: float = 0.2,
            seed: int = 0, max_rows: int | None = None, window: int = 1,
            scaling: str = "log-minmax") -> Prepared:
    kwargs = {"window": window} if fmt == "ton-iot" else {}
    return prepare_table(load(path, fmt, **kwargs), target, val_fraction, seed, max_rows, window, scaling)


def encode_file(path: str | Path, fmt: str, pipeline: Pipeline, max_rows: int | None = None,
                seed: int = 0) -> Encoded:
    """Encode any file of a known format with a saved pipeline (no deduplication: every row
    of an evaluation file counts)."""
    kwargs = {"window": pipeline.window} if fmt == "ton-iot" else {}
    table = subsample(load(path, fmt, **kwargs), max_rows, seed)
    return pipeline.encode(table)


def validation_split(split: dict, pipeline: Pipeline) -> Encoded:
    """The validation rows `ztfl train` held out (its report's "split"), encoded with `pipeline`.
    Deduplication, subsampling and splitting are deterministic, so the same rows come back."""
    kwargs = {"window": split.get("window", 1)} if split["format"] == "ton-iot" else {}
    table = subsample(deduplicate(load(split["data"], split["format"], **kwargs)), split.get("max_rows"),
                      split["seed"])
    _, val_idx = stratified_split(table.category, split["val_fraction"], split["seed"])
    return pipeline.encode(table.take(val_idx))
