"""`ztfl evaluate`: a saved model on any file of a known format (its pipeline encodes it;
unseen categories go to the "unseen" slot, a missing column is a clear error).

With the model's open-set detector (models.openset) the report adds "open_set": the "unknown
attack" decisions at the threshold calibrated in training, false alarms on the file's normal
rows and accuracy counted with the open-set rule. `--by-type` adds the share of each attack
type's rows flagged (marking the types training never saw) and, for NSL-KDD, accuracy by
difficulty level: what a random split cannot show."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ztfl.models import bundle, validation
from ztfl.models.datasets import FORMATS, NORMAL, DataFormatError
from ztfl.models.openset import load_detector, open_set_decision
from ztfl.models.prepare import encode_file
from ztfl.models.training import evaluate, logits_of, metrics_from_predictions

# NSL-KDD difficulty bands (levels 0-21: how many reference learners got the row right)
DIFFICULTY_BANDS = ((0, 10), (11, 15), (16, 18), (19, 20), (21, 21))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (from ztfl train)")
    p.add_argument("--data", required=True, help="data file")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--attack", choices=("fgsm", "pgd"), default=None)
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=10, help="PGD steps")
    p.add_argument("--attack-rows", type=int, default=None, help="attack at most this many rows")
    p.add_argument("--max-rows", type=int, default=None, help="stratified subsample (quick runs)")
    p.add_argument("--by-type", action="store_true",
                   help="share of each attack type flagged, and NSL-KDD accuracy by difficulty level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def open_set_metrics(detector, logits: np.ndarray, data) -> dict:
    classes = data.classes
    decided = open_set_decision(logits, detector.score(data.x), detector.threshold, classes)
    head = logits.argmax(1)
    m = metrics_from_predictions(decided, data)
    normal, attack = data.category == NORMAL, data.category != NORMAL
    flagged = np.array(classes, dtype=object)[decided] != NORMAL
    head_flagged = np.array(classes, dtype=object)[head] != NORMAL
    rate = lambda flags, rows: round(float(np.mean(flags[rows])), 6) if rows.any() else None  # noqa: E731
    return {"threshold": detector.threshold, "far_target": detector.far, "unknown_rows": int(np.sum(decided != head)),
            "false_alarm": rate(flagged, normal), "false_alarm_head": rate(head_flagged, normal),
            "attacks_flagged": rate(flagged, attack), "attacks_flagged_head": rate(head_flagged, attack),
            "accuracy": m["accuracy"], "binary_accuracy": m["binary_accuracy"], "macro_f1": m["macro_f1"]}


def by_type(typed: validation.TypedTable, flags: dict[str, np.ndarray], trained_types: set[str] | None) -> dict:
    out = {}
    for t in sorted(set(typed.types) - {NORMAL}):
        rows = typed.types == t
        out[t] = {"rows": int(rows.sum()), **{name: round(float(np.mean(f[rows])), 6) for name, f in flags.items()}}
        if trained_types is not None:
            out[t]["seen_in_training"] = t in trained_types
    return out


def by_difficulty(typed: validation.TypedTable, pred_names: dict[str, np.ndarray], binary_model: bool) -> dict:
    out = {}
    for lo, hi in DIFFICULTY_BANDS:
        rows = (typed.difficulty >= lo) & (typed.difficulty <= hi)
        if rows.any():
            out[f"{lo}-{hi}"] = {"rows": int(rows.sum()), **{
                f"{name}_{m}": v for name, names in pred_names.items()
                for m, v in validation.mixture_metrics(names[rows], typed.families[rows], binary_model).items()}}
    return out


def run(args) -> int:
    model, pipeline = bundle.load(args.model)
    detector = load_detector(args.model)
    try:
        if args.by_type:
            typed = validation.subsample_typed(validation.load_typed(args.data, args.format, pipeline.window,
                                                                     deduplicate=False), args.max_rows, args.seed)
            data = pipeline.encode(typed.table)
        else:
            data = encode_file(args.data, args.format, pipeline, args.max_rows, args.seed)
    except (DataFormatError, FileNotFoundError) as e:
        print(f"ztfl evaluate: {e}", file=sys.stderr)
        return 2
    metrics = evaluate(model, data, attack_kind=args.attack, eps=args.eps, steps=args.steps, seed=args.seed,
                       attack_rows=args.attack_rows)
    metrics.update({"model": str(args.model), "data": str(args.data), "format": args.format,
                    "target": pipeline.target})
    logits = logits_of(model, data.x).numpy() if len(data) else np.zeros((0, pipeline.n_classes))
    names = np.array(pipeline.classes, dtype=object)
    pred_names = {"head": names[logits.argmax(1)]}
    if detector is not None and detector.threshold is not None:
        metrics["open_set"] = open_set_metrics(detector, logits, data)
        pred_names["open_set"] = names[open_set_decision(logits, detector.score(data.x), detector.threshold,
                                                         pipeline.classes)]
    if args.by_type:
        trained = _trained_types(Path(args.model))
        metrics["by_type"] = by_type(typed, {f"flagged_{k}": v != NORMAL for k, v in pred_names.items()}, trained)
        if typed.difficulty is not None:
            metrics["by_difficulty"] = by_difficulty(typed, pred_names, pipeline.target == "binary")
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{metrics['n']} rows: accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
              f"binary accuracy {metrics['binary_accuracy']:.4f}")
        for name, rec in metrics["per_class_recall"].items():
            print(f"  recall {name:>20s} {rec:.4f}")
        if "robust_accuracy" in metrics:
            print(f"robust accuracy ({args.attack}, eps {args.eps}): {metrics['robust_accuracy']:.4f}")
        if "open_set" in metrics:
            o = metrics["open_set"]
            print(f"open set: accuracy {o['accuracy']:.4f}  binary accuracy {o['binary_accuracy']:.4f}  "
                  f"false alarms {o['false_alarm']} (head {o['false_alarm_head']})  unknown rows {o['unknown_rows']}")
        for t, v in metrics.get("by_type", {}).items():
            print(f"  {t:>20s} {json.dumps(v)}")
        for band, v in metrics.get("by_difficulty", {}).items():
            print(f"  difficulty {band:>6s} {json.dumps(v)}")
    return 0


def _trained_types(model_dir: Path) -> set[str] | None:
    """Attack types the model was trained on, from its training report (if it recorded them)."""
    path = model_dir / "metrics.json"
    types = json.loads(path.read_text()).get("attack_types") if path.is_file() else None
    return set(types) if types is not None else None


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    add_arguments(p)
    sys.exit(run(p.parse_args()))
