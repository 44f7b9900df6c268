"""`ztfl train`: the centralised baseline. Reads one data file, deduplicates, splits
(stratified), fits the pipeline on the training part, trains, and reports validation metrics;
the model directory (see models.bundle) is written to --out."""
from __future__ import annotations

import argparse
import json
import sys

import torch

from ztfl.models import bundle
from ztfl.models.cnn_lstm import READOUTS
from ztfl.models.datasets import FORMATS
from ztfl.models.params import num_trainable
from ztfl.models.prepare import prepare
from ztfl.models.preprocess import SCALINGS
from ztfl.models.training import TrainConfig, evaluate, train_local


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data file")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--target", choices=("binary", "multiclass"), default="multiclass")
    p.add_argument("--model", dest="kind", choices=tuple(bundle.KINDS), default="cnn-lstm")
    p.add_argument("--size", choices=("default", "small"), default="default")
    p.add_argument("--readout", choices=READOUTS, default=None,
                   help="CNN-LSTM head input: max over LSTM steps or the last step (default: the size's own)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--adversarial", choices=("none", "fgsm", "pgd"), default="none")
    p.add_argument("--adv-fraction", type=float, default=0.3)
    p.add_argument("--eps", type=float, default=0.05, help="L-inf budget in scaled feature space")
    p.add_argument("--pgd-steps", type=int, default=3, help="PGD steps when training with PGD")
    p.add_argument("--no-class-weights", action="store_true")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--window", type=int, default=1, help="ToN_IoT: readings per row")
    p.add_argument("--scaling", choices=SCALINGS, default="log-minmax",
                   help="numeric columns: log1p of heavy-tailed ones then min-max (default), or plain min-max")
    p.add_argument("--max-rows", type=int, default=None, help="stratified subsample (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-attack", choices=("fgsm", "pgd"), default=None,
                   help="also report robust accuracy on the validation split")
    p.add_argument("--eval-steps", type=int, default=10)
    p.add_argument("--eval-rows", type=int, default=None, help="attack at most this many validation rows")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    prep = prepare(args.data, args.format, args.target, args.val_fraction, args.seed, args.max_rows, args.window,
                   args.scaling)
    torch.manual_seed(args.seed)  # the initial weights follow --seed too
    model = bundle.new_model(args.kind, prep.pipeline, args.size, args.readout)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      adversarial=None if args.adversarial == "none" else args.adversarial,
                      adv_fraction=args.adv_fraction, eps=args.eps, pgd_steps=args.pgd_steps,
                      class_weighting=not args.no_class_weights, seed=args.seed)
    result = train_local(model, prep.train, cfg)
    metrics = evaluate(model, prep.val, attack_kind=args.eval_attack, eps=args.eps, steps=args.eval_steps,
                       seed=args.seed, attack_rows=args.eval_rows)
    report = {"format": args.format, "target": args.target, "model": args.kind, "size": args.size,
              "parameters": num_trainable(model),
              "readout": getattr(model.config, "readout", None), "rows_read": prep.n_rows_read,
              "rows_unique": prep.n_rows_unique, "train_rows": len(prep.train), "val_rows": len(prep.val),
              "features": prep.pipeline.n_features, "scaling": args.scaling, "classes": prep.pipeline.classes,
              "adversarial": args.adversarial, "epochs": args.epochs, "epoch_losses": result.epoch_losses,
              "train_seconds": round(result.seconds, 2), "validation": metrics, "out": str(args.out),
              # enough to rebuild the same validation split (models.prepare.validation_split)
              "split": {"data": str(args.data), "format": args.format, "seed": args.seed,
                        "val_fraction": args.val_fraction, "max_rows": args.max_rows, "window": args.window}}
    bundle.save(args.out, model, prep.pipeline, report)
    if args.json:
        print(json.dumps(report))
    else:
        v = metrics
        print(f"{args.kind} ({report['parameters']} parameters) trained on {len(prep.train)} rows "
              f"in {report['train_seconds']} s -> {args.out}")
        print(f"validation: accuracy {v['accuracy']:.4f}  macro-F1 {v['macro_f1']:.4f}  "
              f"binary accuracy {v['binary_accuracy']:.4f}"
              + (f"  robust accuracy ({v['attack']}) {v['robust_accuracy']:.4f}" if "robust_accuracy" in v else ""))
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    add_arguments(p)
    sys.exit(run(p.parse_args()))
