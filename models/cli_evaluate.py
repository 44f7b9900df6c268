"""`ztfl evaluate`: a saved model on any file of a known format (its pipeline encodes it;
unseen categories go to the "unseen" slot, a missing column is a clear error)."""
from __future__ import annotations

import argparse
import json
import sys

from ztfl.models import bundle
from ztfl.models.datasets import FORMATS, DataFormatError
from ztfl.models.prepare import encode_file
from ztfl.models.training import evaluate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (from ztfl train)")
    p.add_argument("--data", required=True, help="data file")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--attack", choices=("fgsm", "pgd"), default=None)
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=10, help="PGD steps")
    p.add_argument("--attack-rows", type=int, default=None, help="attack at most this many rows")
    p.add_argument("--max-rows", type=int, default=None, help="stratified subsample (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    model, pipeline = bundle.load(args.model)
    try:
        data = encode_file(args.data, args.format, pipeline, args.max_rows, args.seed)
    except (DataFormatError, FileNotFoundError) as e:
        print(f"ztfl evaluate: {e}", file=sys.stderr)
        return 2
    metrics = evaluate(model, data, attack_kind=args.attack, eps=args.eps, steps=args.steps, seed=args.seed,
                       attack_rows=args.attack_rows)
    metrics.update({"model": str(args.model), "data": str(args.data), "format": args.format,
                    "target": pipeline.target})
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{metrics['n']} rows: accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
              f"binary accuracy {metrics['binary_accuracy']:.4f}")
        for name, rec in metrics["per_class_recall"].items():
            print(f"  recall {name:>20s} {rec:.4f}")
        if "robust_accuracy" in metrics:
            print(f"robust accuracy ({args.attack}, eps {args.eps}): {metrics['robust_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    add_arguments(p)
    sys.exit(run(p.parse_args()))
