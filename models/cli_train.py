"""`ztfl train`: the centralised baseline. Reads one data file, deduplicates, splits
(stratified), fits the pipeline on the training part, trains, and reports validation metrics;
the model directory (see models.bundle) is written to --out, with the open-set detector
(models.openset: prototypes of the training part's normal rows, threshold calibrated on half the
validation normal rows, false alarms measured on the other half).

`--validation types,families,difficulty` also trains the same recipe on the splits of
models.validation and reports them under "generalisation": the random split hides what a model
does with attack types it never saw."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ztfl.models import bundle, validation
from ztfl.models.cnn_lstm import READOUTS
from ztfl.models.datasets import FORMATS, NORMAL
from ztfl.models.openset import DEFAULT_FAR, DEFAULT_PROTOTYPES, NoveltyDetector, split_normal
from ztfl.models.params import num_trainable
from ztfl.models.prepare import prepare
from ztfl.models.preprocess import SCALINGS, Encoded
from ztfl.models.training import TrainConfig, evaluate, logits_of


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data file")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--target", choices=("binary", "multiclass"), default="multiclass")
    p.add_argument("--model", dest="kind", choices=tuple(bundle.KINDS), default="cnn-lstm")
    add_recipe_arguments(p)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--window", type=int, default=1, help="ToN_IoT: readings per row")
    p.add_argument("--max-rows", type=int, default=None, help="stratified subsample (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-attack", choices=("fgsm", "pgd"), default=None,
                   help="also report robust accuracy on the validation split")
    p.add_argument("--eval-steps", type=int, default=10)
    p.add_argument("--eval-rows", type=int, default=None, help="attack at most this many validation rows")
    p.add_argument("--far", type=float, default=DEFAULT_FAR,
                   help="false-alarm rate on normal validation rows the open-set threshold is calibrated to")
    p.add_argument("--validation", default="random",
                   help="split kinds to report: random (the split the model is trained on) and any of "
                        f"{', '.join(validation.SPLIT_KINDS[1:])}, comma-separated, or all")
    p.add_argument("--folds", type=int, default=3, help="leave-attack-type-out folds")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """How the network is built and trained (also `ztfl bench baseline --model ...`)."""
    p.add_argument("--size", choices=("default", "small"), default="default")
    p.add_argument("--readout", choices=READOUTS, default=None,
                   help="CNN-LSTM head input: max over LSTM steps or the last step (default: the size's own)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--adversarial", choices=("none", "fgsm", "pgd"), default="none")
    p.add_argument("--adv-fraction", type=float, default=0.3)
    p.add_argument("--eps", type=float, default=0.05, help="L-inf budget in scaled feature space")
    p.add_argument("--pgd-steps", type=int, default=3, help="PGD steps when training with PGD")
    p.add_argument("--no-class-weights", action="store_true")
    p.add_argument("--scaling", choices=SCALINGS, default="log-minmax",
                   help="numeric columns: log1p of heavy-tailed ones then min-max (default), or plain min-max")
    p.add_argument("--noise", type=float, default=0.0, help="std of training noise on continuous columns")
    p.add_argument("--unseen-rate", type=float, default=0.0,
                   help="share of training rows whose category moves to the unseen slot, per column")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--prototypes", type=int, default=DEFAULT_PROTOTYPES,
                   help="open-set detector: prototypes of normal traffic (0: no detector)")


def recipe_of(args, target: str | None = None) -> validation.NetworkRecipe:
    return validation.NetworkRecipe(
        kind=args.kind, size=args.size, readout=args.readout, target=target or args.target, scaling=args.scaling,
        window=args.window, prototypes=args.prototypes, seed=args.seed,
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                          adversarial=None if args.adversarial == "none" else args.adversarial,
                          adv_fraction=args.adv_fraction, eps=args.eps, pgd_steps=args.pgd_steps,
                          class_weighting=not args.no_class_weights, seed=args.seed, noise=args.noise,
                          unseen_rate=args.unseen_rate, label_smoothing=args.label_smoothing))


def calibrate_open_set(net: validation.TrainedNetwork, val: Encoded, far: float, seed: int) -> tuple[NoveltyDetector, dict]:
    """Threshold from half the validation normal rows; false alarms and unknown decisions measured
    on the other half and on the attack rows."""
    normal = np.flatnonzero(val.category == NORMAL)
    cal_pos, test_pos = split_normal(len(normal), seed)
    detector = net.detector.calibrated(val.x[normal[cal_pos]], far)
    logits = logits_of(net.model, val.x).numpy()
    unknown = detector.unknown(logits, val.x, net.pipeline.classes)
    head_attack = logits.argmax(1) != net.pipeline.classes.index(NORMAL)
    measured, attacks = normal[test_pos], val.category != NORMAL
    return detector, {
        "prototypes": len(detector.prototypes), "far_target": far, "threshold": round(detector.threshold, 6),
        "calibration_rows": detector.calibration_rows, "measured_rows": len(measured),
        "false_alarm_head": round(float(np.mean(head_attack[measured])), 6) if len(measured) else None,
        "false_alarm": round(float(np.mean((head_attack | unknown)[measured])), 6) if len(measured) else None,
        "attacks_flagged_head": round(float(np.mean(head_attack[attacks])), 6) if attacks.any() else None,
        "attacks_flagged": round(float(np.mean((head_attack | unknown)[attacks])), 6) if attacks.any() else None,
        "unknown_rows": int(unknown.sum())}


def generalisation(args, recipe: validation.NetworkRecipe, kinds: tuple[str, ...]) -> dict | None:
    kinds = [k for k in kinds if k != "random"]
    if not kinds:
        return None
    typed = validation.subsample_typed(validation.load_typed(args.data, args.format, args.window),
                                       args.max_rows, args.seed)
    progress = None if args.json else (lambda name: print(f"validation split {name} ...", flush=True))
    return validation.run_kinds(typed, kinds, validation.network_fitter(recipe), args.folds, args.val_fraction,
                                args.far, args.seed, progress)


def run(args) -> int:
    try:
        kinds = validation.parse_kinds(args.validation)
    except validation.ValidationError as e:
        print(f"ztfl train: {e}", file=sys.stderr)
        return 2
    prep = prepare(args.data, args.format, args.target, args.val_fraction, args.seed, args.max_rows, args.window,
                   args.scaling)
    recipe = recipe_of(args)
    net = validation.train_network(recipe, prep.pipeline, prep.train)
    model, result = net.model, net.result
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
    # every attack type of the file is on the training side of the random split (models.validation)
    types = validation.load_typed(args.data, args.format, args.window, deduplicate=False).types
    report["attack_types"] = sorted(set(types) - {NORMAL})
    detector = None
    if net.detector is not None and np.sum(prep.val.category == NORMAL) >= 2:
        detector, report["open_set"] = calibrate_open_set(net, prep.val, args.far, args.seed)
    extra = generalisation(args, recipe, kinds)
    if extra is not None:
        report["generalisation"] = extra
    bundle.save(args.out, model, prep.pipeline, report)
    if detector is not None:
        detector.save(args.out)
    if args.json:
        print(json.dumps(report))
    else:
        v = metrics
        print(f"{args.kind} ({report['parameters']} parameters) trained on {len(prep.train)} rows "
              f"in {report['train_seconds']} s -> {args.out}")
        print(f"validation: accuracy {v['accuracy']:.4f}  macro-F1 {v['macro_f1']:.4f}  "
              f"binary accuracy {v['binary_accuracy']:.4f}"
              + (f"  robust accuracy ({v['attack']}) {v['robust_accuracy']:.4f}" if "robust_accuracy" in v else ""))
        if "open_set" in report:
            o = report["open_set"]
            print(f"open set ({o['prototypes']} prototypes, threshold {o['threshold']}): false alarms "
                  f"{o['false_alarm']} (head alone {o['false_alarm_head']}), attacks flagged {o['attacks_flagged']}")
        for kind, summary in (report.get("generalisation") or {}).get("summary", {}).items():
            print(f"{kind}: {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    add_arguments(p)
    sys.exit(run(p.parse_args()))
