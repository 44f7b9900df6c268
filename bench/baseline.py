"""`ztfl bench baseline`: the reference model every IDS change is compared with, on the same splits.

The reference is an untuned `HistGradientBoostingClassifier(max_iter=300, random_state=0)` on the
raw columns, the categorical ones ordinal-encoded from the training rows' values (a value training
never saw is missing), and nothing else. It is trained and scored on the splits of
models.validation (random, leave-attack-type-out, leave-family-out, difficulty), for the five-way
(multi-class) and the attack-vs-normal target; `--model cnn-lstm|micro` trains the network on the
very same splits and prints both side by side.

Prints one JSON object with --json.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ztfl.models import cli_train, validation
from ztfl.models.datasets import FORMATS, NORMAL, LabeledTable
from ztfl.models.openset import DEFAULT_FAR
from ztfl.models.validation import (SPLIT_KINDS, Predictions, load_typed, make_splits, network_fitter, parse_kinds,
                                    subsample_typed, supported_kinds)
from ztfl.bench.report import add_json_flag, emit

TARGETS = ("multiclass", "binary")
MAX_ITER = 300


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data file")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--validation", default="random,types",
                   help=f"comma-separated split kinds ({', '.join(SPLIT_KINDS)}) or 'all'")
    p.add_argument("--target", choices=(*TARGETS, "both"), default="both")
    p.add_argument("--folds", type=int, default=3, help="leave-attack-type-out folds")
    p.add_argument("--far", type=float, default=DEFAULT_FAR, help="false-alarm rate the thresholds are calibrated to")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--max-rows", type=int, default=None, help="stratified subsample (quick runs)")
    p.add_argument("--window", type=int, default=1, help="ToN_IoT: readings per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", dest="kind", choices=("none", "cnn-lstm", "micro"), default="none",
                   help="also train this network on the same splits, as ztfl train would (its options below)")
    cli_train.add_recipe_arguments(p)
    add_json_flag(p)


@dataclass
class OrdinalColumns:
    """Raw columns as floats: numeric ones as read, categorical ones as the index of the value
    among the training values (sorted), NaN for a value training never saw."""
    columns: list[str]
    categories: dict[str, list[str]]

    @classmethod
    def fit(cls, table: LabeledTable) -> "OrdinalColumns":
        return cls(list(table.features.columns),
                   {c: sorted(set(table.features[c].astype(str))) for c in table.categorical})

    def transform(self, table: LabeledTable) -> np.ndarray:
        out = np.empty((len(table), len(self.columns)), dtype=np.float64)
        for j, col in enumerate(self.columns):
            s = table.features[col]
            if col in self.categories:
                index = {v: float(i) for i, v in enumerate(self.categories[col])}
                out[:, j] = [index.get(str(v), np.nan) for v in s]
            else:
                out[:, j] = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
        return out


def tree_fitter(target: str, seed: int = 0):
    """models.validation Fitter for the reference trees. One OpenMP thread: on a shared two-core
    machine its threads spin-wait for a busy core, and a fit then takes ten times as long."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    def fit(table: LabeledTable):
        columns = OrdinalColumns.fit(table)
        y = table.category if target == "multiclass" else np.where(table.category == NORMAL, NORMAL, "attack")
        clf = HistGradientBoostingClassifier(max_iter=MAX_ITER, random_state=seed)
        with threadpool_limits(limits=1, user_api="openmp"):
            clf.fit(columns.transform(table), y.astype(str))

        def predict(rows: LabeledTable) -> Predictions:
            with threadpool_limits(limits=1, user_api="openmp"):
                x = columns.transform(rows)
                proba, raw = clf.predict_proba(x), clf.decision_function(x)
            # a binary model's raw score is the log-odds of its second class
            logits = np.stack([np.zeros_like(raw), raw], 1) if raw.ndim == 1 else raw
            return Predictions([str(c) for c in clf.classes_], proba, logits=logits)
        return predict
    return fit


def side_by_side(results: dict) -> dict:
    """target -> kind -> figure -> {baseline, model}: the summary figures next to each other."""
    out = {}
    for target, by_model in results.items():
        for who, result in by_model.items():
            for kind, s in result["summary"].items():
                flat = {"known_accuracy": s["known_accuracy"], "known_binary_accuracy": s["known_binary_accuracy"]}
                for det, v in s.get("unseen", {}).items():
                    flat[f"unseen_{det}_types"], flat[f"unseen_{det}_rows"] = v["types"], v["rows"]
                for figure in ("false_alarm", "attacks_flagged"):
                    for det, v in s.get(figure, {}).items():
                        flat[f"{figure}_{det}"] = v
                for way, v in s.get("mixture", {}).items():
                    flat[f"mixture_{way}_accuracy"] = v["accuracy"]
                    flat[f"mixture_{way}_binary_accuracy"] = v["binary_accuracy"]
                for fig, value in flat.items():
                    out.setdefault(target, {}).setdefault(kind, {}).setdefault(fig, {})[who] = value
    return out


def text_view(report: dict) -> str:
    lines = [f"{report['format']}: {report['rows_unique']} unique rows, false-alarm target {report['far_target']}"]
    for target, kinds in report["side_by_side"].items():
        for kind, figures in kinds.items():
            lines.append(f"{target} / {kind}")
            for fig, by in figures.items():
                lines.append(f"  {fig:40s} " + "  ".join(f"{who} {v if v is not None else '-'}" for who, v in by.items()))
    return "\n".join(lines)


def run_bench(args) -> dict:
    typed = subsample_typed(load_typed(args.data, args.format, args.window), args.max_rows, args.seed)
    kinds = parse_kinds(args.validation)
    targets = TARGETS if args.target == "both" else (args.target,)
    fitters = {target: {"baseline": tree_fitter(target, args.seed)} for target in targets}
    if args.kind != "none":
        for target in targets:
            fitters[target]["model"] = network_fitter(cli_train.recipe_of(args, target))
    results = {target: {who: validation.run_kinds(typed, kinds, fit, args.folds, args.val_fraction, args.far,
                                                  args.seed) for who, fit in by.items()}
               for target, by in fitters.items()}
    splits = make_splits(typed, kinds, args.folds, args.val_fraction, args.seed)
    return {"data": str(args.data), "format": args.format, "rows_unique": len(typed), "far_target": args.far,
            "splits": [s.name for s in splits], "skipped": [k for k in kinds if k not in supported_kinds(typed)],
            "baseline": f"HistGradientBoostingClassifier(max_iter={MAX_ITER})", "model": args.kind,
            "side_by_side": side_by_side(results), "results": results}


def run(args) -> int:
    emit(run_bench(args), args.json, text_view)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    add_arguments(p)
    sys.exit(run(p.parse_args()))
