"""Validation that predicts behaviour on traffic never seen in training.

A random split of one file puts every attack type on both sides, so it cannot show what a model
does with a new attack: the held-out files the project is judged on hold attack types that the
training file never has (NSL-KDD), or new feature vectors only (UNSW-NB15). The splits here are
made from the training files alone:

  random       a stratified random split (by attack type, after deduplication): every type on
               both sides, so it measures accuracy on traffic like the training rows only;
  types        leave-attack-type-out: the attack types are dealt into `n_folds` folds (round
               robin by family, then by size, so every family keeps types in training); each
               fold trains without its types and scores the share of their rows flagged;
  families     leave-attack-family-out (NSL-KDD's dos / probe / r2l / u2r): no row of the
               family in training;
  difficulty   NSL-KDD's difficulty column (how many of 21 reference learners got the row
               right): train on the easy rows, validate on the rows below `difficulty_cutoff`.

Normal rows are split once (seeded) and shared by every split. Validation normal rows are halved:
one half calibrates thresholds to the operator's false-alarm rate, the other measures the false
alarms actually raised. Every split is scored the same way for any model that returns class
probabilities (and, optionally, a novelty score): the network here, the tree baseline in
ztfl.bench.baseline.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ztfl.models import bundle
from ztfl.models.datasets import NORMAL, LabeledTable, load, stratified_split
from ztfl.models.openset import DEFAULT_FAR, DEFAULT_PROTOTYPES, NoveltyDetector, calibrate_threshold, \
    open_set_decision, split_normal
from ztfl.models.preprocess import Encoded, Pipeline
from ztfl.models.training import TrainConfig, TrainResult, logits_of, metrics_from_predictions, train_local

SPLIT_KINDS = ("random", "types", "families", "difficulty")
DIFFICULTY_CUTOFF = 19


class ValidationError(ValueError):
    """A split cannot be made from this data."""


@dataclass
class TypedTable:
    """A deduplicated table with each row's attack type (the class name where the format has no
    finer label) and, for NSL-KDD, its difficulty level."""
    table: LabeledTable
    types: np.ndarray
    difficulty: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.table)

    @property
    def families(self) -> np.ndarray:
        return self.table.category


def nsl_kdd_labels(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Attack name and difficulty level per row of an NSL-KDD file, in file order (the reader
    keeps only the five-way category)."""
    raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    names = raw.iloc[:, 41].str.strip().str.lower().str.rstrip(".").to_numpy(dtype=object)
    level = pd.to_numeric(raw.iloc[:, 42], errors="coerce").to_numpy() if raw.shape[1] > 42 else None
    return names, level


def typed_from(table: LabeledTable, types: np.ndarray | None = None,
               difficulty: np.ndarray | None = None) -> TypedTable:
    """Deduplicate on (features, type): the same record never lands on both sides of a split."""
    types = np.asarray(table.category if types is None else types, dtype=object)
    keyed = table.features.reset_index(drop=True).assign(__type__=pd.Series(types, dtype=object))
    keep = np.flatnonzero(~keyed.duplicated().to_numpy())
    return TypedTable(table.take(keep), types[keep], None if difficulty is None else difficulty[keep])


def load_typed(path: str | Path, fmt: str, window: int = 1, deduplicate: bool = True) -> TypedTable:
    """A data file with each row's attack type; deduplicated on (features, type) unless told not
    to (an evaluation file counts every row)."""
    table = load(path, fmt, **({"window": window} if fmt == "ton-iot" else {}))
    types, level = nsl_kdd_labels(path) if fmt == "nsl-kdd" else (table.category, None)
    if not deduplicate:
        return TypedTable(table, np.asarray(types, dtype=object), level)
    return typed_from(table, types, level)


# --- splits ----------------------------------------------------------------------------

@dataclass
class Split:
    """Row indices into a TypedTable. `unseen` rows belong to types absent from `train`."""
    name: str
    kind: str
    train: np.ndarray
    val: np.ndarray
    unseen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    held_out: tuple[str, ...] = ()


def random_split(typed: TypedTable, val_fraction: float = 0.2, seed: int = 0) -> Split:
    train, val = stratified_split(typed.types, val_fraction, seed)
    return Split("random", "random", train, val)


def type_folds(typed: TypedTable, n_folds: int) -> list[tuple[str, ...]]:
    """Attack types dealt into folds round robin, grouped by family and largest first: each fold
    holds out types of several families, and a family with more types than folds keeps some of
    them in training in every fold."""
    if n_folds < 2:
        raise ValidationError(f"leave-type-out needs at least 2 folds, not {n_folds}")
    attack = typed.types != NORMAL
    counts = pd.Series(typed.types[attack]).value_counts()
    family_of = dict(zip(typed.types[attack], typed.families[attack]))
    order = sorted(counts.index, key=lambda t: (family_of[t], -counts[t], t))
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    for i, name in enumerate(order):
        folds[i % n_folds].append(name)
    return [tuple(f) for f in folds if f]


def leave_out(typed: TypedTable, held: tuple[str, ...], name: str, kind: str,
              val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Train and validate on every type but `held`; every row of `held` is unseen. The random
    split underneath is the same for every `held`, so all splits share their normal rows."""
    train, val = stratified_split(typed.types, val_fraction, seed)
    out = np.isin(typed.types, list(held))
    return Split(name, kind, train[~out[train]], val[~out[val]], np.flatnonzero(out), tuple(held))


def leave_types_out(typed: TypedTable, n_folds: int = 3, val_fraction: float = 0.2, seed: int = 0) -> list[Split]:
    return [leave_out(typed, held, f"types-{i}", "types", val_fraction, seed)
            for i, held in enumerate(type_folds(typed, n_folds))]


def leave_families_out(typed: TypedTable, val_fraction: float = 0.2, seed: int = 0) -> list[Split]:
    """One split per attack family; only where families group several types (NSL-KDD)."""
    families = sorted(set(typed.families) - {NORMAL})
    if np.array_equal(typed.families, typed.types):
        raise ValidationError("this data has no attack families above its types (use the types splits)")
    splits = []
    for fam in families:
        held = tuple(sorted(set(typed.types[typed.families == fam])))
        splits.append(leave_out(typed, held, f"family-{fam}", "families", val_fraction, seed))
    return splits


def difficulty_split(typed: TypedTable, cutoff: int = DIFFICULTY_CUTOFF) -> Split:
    """Train on the rows with difficulty level >= `cutoff` (most reference learners got them
    right), validate on the harder rest."""
    if typed.difficulty is None:
        raise ValidationError("this data has no difficulty column (NSL-KDD only)")
    hard = typed.difficulty < cutoff
    return Split(f"difficulty<{cutoff}", "difficulty", np.flatnonzero(~hard), np.flatnonzero(hard))


def make_splits(typed: TypedTable, kinds, n_folds: int = 3, val_fraction: float = 0.2, seed: int = 0,
                difficulty_cutoff: int = DIFFICULTY_CUTOFF) -> list[Split]:
    """The splits of the requested kinds that this data supports; the others are left out
    (`supported_kinds` says which: families and difficulty are NSL-KDD's)."""
    unknown = set(kinds) - set(SPLIT_KINDS)
    if unknown:
        raise ValidationError(f"unknown split kind {sorted(unknown)[0]!r}; known: {', '.join(SPLIT_KINDS)}")
    splits: list[Split] = []
    for kind in kinds:
        if kind not in supported_kinds(typed):
            continue
        if kind == "random":
            splits.append(random_split(typed, val_fraction, seed))
        elif kind == "types":
            splits += leave_types_out(typed, n_folds, val_fraction, seed)
        elif kind == "families":
            splits += leave_families_out(typed, val_fraction, seed)
        else:
            splits.append(difficulty_split(typed, difficulty_cutoff))
    return splits


def parse_kinds(text: str) -> tuple[str, ...]:
    """"random,types" -> ("random", "types"); "all" -> every kind."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    if kinds == ("all",):
        return SPLIT_KINDS
    unknown = [k for k in kinds if k not in SPLIT_KINDS]
    if unknown or not kinds:
        raise ValidationError(f"unknown split kind {unknown[0] if unknown else text!r}; "
                              f"known: {', '.join(SPLIT_KINDS)} or all")
    return kinds


def subsample_typed(typed: TypedTable, max_rows: int | None, seed: int = 0) -> TypedTable:
    """At most `max_rows` rows, stratified by attack type (quick runs and tests)."""
    if max_rows is None or len(typed) <= max_rows:
        return typed
    _, keep = stratified_split(typed.types, max_rows / len(typed), seed)
    return TypedTable(typed.table.take(keep), typed.types[keep],
                      None if typed.difficulty is None else typed.difficulty[keep])


def supported_kinds(typed: TypedTable) -> tuple[str, ...]:
    kinds = ["random"]
    if len(set(typed.types) - {NORMAL}) >= 2:
        kinds.append("types")
    if not np.array_equal(typed.families, typed.types):
        kinds.append("families")
    if typed.difficulty is not None:
        kinds.append("difficulty")
    return tuple(kinds)


# --- models under validation -----------------------------------------------------------

@dataclass
class Predictions:
    """What a model says about some rows: class probabilities over `classes`, the logits they
    come from (when the model has them) and, for an open-set detector, a novelty score per row
    (higher = less like normal)."""
    classes: list[str]
    proba: np.ndarray
    novelty: np.ndarray | None = None
    logits: np.ndarray | None = None

    @property
    def attack_score(self) -> np.ndarray:
        """Log-odds of "some attack" against normal. From the logits when there are any: a
        probability saturates at exactly 1 for confident rows, and ties at the top would keep
        a threshold from reaching the chosen false-alarm rate."""
        normal = self.classes.index(NORMAL)
        if self.logits is None:
            return 1.0 - self.proba[:, normal]
        attack = np.delete(np.asarray(self.logits, dtype=np.float64), normal, axis=1)
        top = attack.max(1)
        return top + np.log(np.exp(attack - top[:, None]).sum(1)) - self.logits[:, normal]


# fit(training rows) -> predict(rows) -> Predictions
Fitter = Callable[[LabeledTable], Callable[[LabeledTable], Predictions]]


@dataclass
class NetworkRecipe:
    """How `ztfl train` builds and trains a network, so each split trains it the same way."""
    kind: str = "cnn-lstm"
    size: str = "default"
    readout: str | None = None
    target: str = "multiclass"
    scaling: str = "log-minmax"
    window: int = 1
    train: TrainConfig = field(default_factory=TrainConfig)
    prototypes: int = DEFAULT_PROTOTYPES   # 0: no open-set detector
    seed: int = 0


@dataclass
class TrainedNetwork:
    pipeline: Pipeline
    model: object
    result: TrainResult
    detector: NoveltyDetector | None

    def predict(self, table: LabeledTable) -> Predictions:
        x = self.pipeline.transform(table)
        logits = logits_of(self.model, x).double()
        return Predictions(list(self.pipeline.classes), logits.softmax(1).numpy(),
                           None if self.detector is None else self.detector.score(x), logits.numpy())


def train_network(recipe: NetworkRecipe, pipeline: Pipeline, train: Encoded) -> TrainedNetwork:
    """A fresh model trained on `train`; the open-set prototypes from its normal rows."""
    import torch
    torch.manual_seed(recipe.seed)  # the initial weights follow the seed too
    model = bundle.new_model(recipe.kind, pipeline, recipe.size, recipe.readout)
    config = replace(recipe.train, categorical_slots=pipeline.categorical_slots) if recipe.train.unseen_rate \
        else recipe.train
    result = train_local(model, train, config)
    normal = train.x[train.category == NORMAL] if train.category is not None else train.x[train.y == 0]
    # prototypes need normal rows to describe (a tiny or attack-only training part has none)
    detector = NoveltyDetector.fit(normal, recipe.prototypes, recipe.seed) if recipe.prototypes and len(normal) >= 2 \
        else None
    return TrainedNetwork(pipeline, model, result, detector)


def network_fitter(recipe: NetworkRecipe) -> Fitter:
    def fit(table: LabeledTable):
        pipeline = Pipeline.fit(table, target=recipe.target, window=recipe.window, scaling=recipe.scaling)
        return train_network(recipe, pipeline, pipeline.encode(table)).predict
    return fit


# --- scoring ---------------------------------------------------------------------------

DETECTORS = ("head", "classifier", "open_set", "classifier_same_budget")


def _rate(flags: np.ndarray) -> float | None:
    return round(float(np.mean(flags)), 6) if len(flags) else None


def _per_type(flags: np.ndarray, types: np.ndarray) -> dict[str, float]:
    return {t: round(float(np.mean(flags[types == t])), 6) for t in sorted(set(types))}


def mixture_metrics(pred_names: np.ndarray, truth: np.ndarray, binary_model: bool) -> dict:
    """Accuracy by class name (a binary model's "attack" matches any attack) and attack-vs-normal
    accuracy: how a held-out file mixing known and unseen types would count."""
    named_truth = np.where(truth == NORMAL, NORMAL, "attack") if binary_model else truth
    return {"accuracy": round(float(np.mean(pred_names == named_truth)), 6),
            "binary_accuracy": round(float(np.mean((pred_names != NORMAL) == (truth != NORMAL))), 6)}


def detector_flags(pred: Predictions, cal: np.ndarray, far: float) -> dict[str, np.ndarray]:
    """Rows each detector flags as attack. Thresholds come from the normal rows `cal` only:
      head                    the class head's argmax;
      classifier              attack probability above the level `far` of `cal` exceed;
      open_set                the head, plus "unknown attack" where novelty exceeds its level at `far`;
      classifier_same_budget  attack probability at the false alarms `open_set` raises on `cal`
                              (does the novelty score add more than moving the head's threshold?)."""
    names = np.array(pred.classes, dtype=object)
    head = names[pred.proba.argmax(1)] != NORMAL
    score = pred.attack_score
    flags = {"head": head, "classifier": score > calibrate_threshold(score[cal], far)}
    if pred.novelty is not None:
        flags["open_set"] = head | (pred.novelty > calibrate_threshold(pred.novelty[cal], far))
        budget = float(np.mean(flags["open_set"][cal]))
        flags["classifier_same_budget"] = score > (calibrate_threshold(score[cal], budget) if budget < 1 else -np.inf)
    return flags


def score_split(typed: TypedTable, split: Split, fit: Fitter, far: float = DEFAULT_FAR, seed: int = 0) -> dict:
    """Train on the split's training rows and score:
      known          argmax metrics on the validation rows (types seen in training);
      false_alarm    per detector (see detector_flags), on the half of the validation normal rows
                     that did not calibrate it;
      attacks_flagged per detector, the share of the validation attack rows (known types) flagged:
                     with `classifier` (calibrated to `far`) a comparison free of the head's bias
                     towards or away from alarms;
      unseen         per detector, the share of the unseen types' rows flagged as attack, and per type;
      mixture        5-class and attack-vs-normal accuracy on validation + unseen rows, by the head
                     alone and with the open-set rule (an unknown row counts as the head's likeliest
                     attack class), as a held-out file mixing known and new types would count them."""
    predict = fit(typed.table.take(split.train))
    rows = np.concatenate([split.val, split.unseen])
    pred = predict(typed.table.take(rows))
    n_val = len(split.val)
    truth = typed.families[rows]
    classes = list(pred.classes)
    index = {c: i for i, c in enumerate(classes)}
    argmax = pred.proba.argmax(1)
    binary_model = set(classes) == {NORMAL, "attack"}
    val_truth = np.where(truth[:n_val] == NORMAL, NORMAL, "attack") if binary_model else truth[:n_val]
    val_enc = Encoded(np.zeros((n_val, 0), np.float32), np.array([index.get(c, -1) for c in val_truth]),
                      np.zeros(0, bool), classes, truth[:n_val])
    known = metrics_from_predictions(argmax[:n_val], val_enc)
    out = {"name": split.name, "kind": split.kind, "held_out": list(split.held_out),
           "train_rows": len(split.train), "val_rows": n_val, "unseen_rows": len(split.unseen),
           "known": {k: known[k] for k in ("accuracy", "macro_f1", "binary_accuracy", "per_class_recall")}}
    normal = np.flatnonzero(truth[:n_val] == NORMAL)
    if len(normal) < 2:
        return out
    cal_pos, test_pos = split_normal(len(normal), seed)
    cal, test = normal[cal_pos], normal[test_pos]
    flags = detector_flags(pred, cal, far)
    out["far_target"] = far
    out["false_alarm"] = {name: _rate(f[test]) for name, f in flags.items()}
    attacks = np.flatnonzero(truth[:n_val] != NORMAL)
    if len(attacks):
        out["attacks_flagged"] = {name: _rate(f[attacks]) for name, f in flags.items()}
    if len(split.unseen):
        unseen_types = typed.types[split.unseen]
        out["unseen_counts"] = {t: int(np.sum(unseen_types == t)) for t in sorted(set(unseen_types))}
        out["unseen"] = {name: {"rows": _rate(f[n_val:]), "per_type": _per_type(f[n_val:], unseen_types)}
                         for name, f in flags.items()}
    names = np.array(classes, dtype=object)
    out["mixture"] = {"head": mixture_metrics(names[argmax], truth, binary_model)}
    if pred.novelty is not None:
        decided = open_set_decision(pred.proba, pred.novelty, calibrate_threshold(pred.novelty[cal], far), classes)
        out["mixture"]["open_set"] = mixture_metrics(names[decided], truth, binary_model)
    return out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 6) if values else None


def summarise(results: list[dict]) -> dict:
    """Per kind of split: means over its splits, and for unseen rows (each type is held out in
    one split of its kind) the share flagged by each detector, pooled over rows ("rows") and
    averaged over types ("types")."""
    summary = {}
    for kind in dict.fromkeys(r["kind"] for r in results):
        rs = [r for r in results if r["kind"] == kind]
        s = {"splits": len(rs),
             "known_accuracy": _mean(r["known"]["accuracy"] for r in rs),
             "known_binary_accuracy": _mean(r["known"]["binary_accuracy"] for r in rs),
             "known_macro_f1": _mean(r["known"]["macro_f1"] for r in rs)}
        for name in DETECTORS:
            for figure in ("false_alarm", "attacks_flagged"):
                value = _mean(r.get(figure, {}).get(name) for r in rs)
                if value is not None:
                    s.setdefault(figure, {})[name] = value
            per_type, counts = {}, {}
            for r in rs:
                if name in r.get("unseen", {}):
                    per_type.update(r["unseen"][name]["per_type"])
                    counts.update(r["unseen_counts"])
            if per_type:
                total = sum(counts[t] for t in per_type)
                s.setdefault("unseen", {})[name] = {
                    "rows": round(sum(per_type[t] * counts[t] for t in per_type) / total, 6),
                    "types": round(float(np.mean(list(per_type.values()))), 6)}
        for way in ("head", "open_set"):
            if all(way in r.get("mixture", {}) for r in rs):
                s.setdefault("mixture", {})[way] = {
                    m: _mean(r["mixture"][way][m] for r in rs) for m in ("accuracy", "binary_accuracy")}
        summary[kind] = s
    return summary


def run(typed: TypedTable, splits: list[Split], fit: Fitter, far: float = DEFAULT_FAR, seed: int = 0,
        progress: Callable[[str], None] | None = None) -> dict:
    """Score `fit` on every split: {"far_target", "splits": [...], "summary": {kind: ...}}."""
    results = []
    for split in splits:
        if progress:
            progress(split.name)
        results.append(score_split(typed, split, fit, far, seed))
    return {"far_target": far, "splits": results, "summary": summarise(results)}


def run_kinds(typed: TypedTable, kinds, fit: Fitter, n_folds: int = 3, val_fraction: float = 0.2,
              far: float = DEFAULT_FAR, seed: int = 0, progress: Callable[[str], None] | None = None) -> dict:
    """`run` on the splits of `kinds`, naming the kinds this data cannot support under "skipped"."""
    result = run(typed, make_splits(typed, kinds, n_folds, val_fraction, seed), fit, far, seed, progress)
    result["skipped"] = [k for k in kinds if k not in supported_kinds(typed)]
    return result
