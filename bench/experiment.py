"""`ztfl experiment byzantine ...` (one run) and `ztfl experiment sweep ...` (a grid, a table
and plots). Both print one JSON object with --json."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from ztfl.bench.byzantine import MODELS
from ztfl.robustness.attacks import ATTACKS
from ztfl.robustness.modes import DEFENSES, PRIVACY_MODES


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--agents", type=int, default=20)
    p.add_argument("--group-size", type=int, default=5, help="privacy grouped: agents per group, at least")
    p.add_argument("--expected-byzantine", type=float, default=0.3,
                   help="fraction of inputs the defence is sized for (Krum's f)")
    p.add_argument("--model", choices=tuple(MODELS), default="micro",
                   help="micro: the MLP of models.micro; small: the small CNN-LSTM")
    p.add_argument("--target", choices=("binary", "multiclass"), default="binary")
    p.add_argument("--local-batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--max-rows", type=int, default=20000, help="rows read from the dataset (stratified)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ztfl.models.datasets import DATASET_FILES

    sub = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    sub.required = True
    one = sub.add_parser("byzantine", help="one federation under attack")
    one.add_argument("--dataset", choices=tuple(DATASET_FILES), default="nsl-kdd")
    one.add_argument("--attack", choices=ATTACKS, default="none")
    one.add_argument("--fraction", type=float, default=0.0, help="share of agents that attack")
    one.add_argument("--defense", choices=DEFENSES, default="fedavg")
    one.add_argument("--privacy", choices=PRIVACY_MODES, default="none")
    one.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration of the split")
    one.add_argument("--attack-scale", type=float, default=None)
    one.add_argument("--clip-norm", type=float, default=None, help="secagg: client-side norm clipping")
    one.add_argument("--guard-margin", type=float, default=None,
                     help="refuse an aggregate losing more than this validation accuracy")
    one.add_argument("--drift", action="store_true", help="cumulative drift tracking (privacy none)")
    _common(one)
    many = sub.add_parser("sweep", help="a grid of runs: results.jsonl, table.md, plot-*.png")
    many.add_argument("--preset", choices=("acceptance", "attacks", "all", "grid"), default="acceptance",
                      help="acceptance: label flipping, backdoor and skew runs; attacks: the rest of the attack "
                           "suite; all: both (docs/robustness.md); grid: the lists below")
    many.add_argument("--datasets", nargs="+", default=["nsl-kdd", "unsw-nb15"])
    many.add_argument("--attacks", nargs="+", choices=ATTACKS, default=["none", "label-flip"])
    many.add_argument("--fractions", nargs="+", type=float, default=[0.3])
    many.add_argument("--defenses", nargs="+", choices=DEFENSES, default=["fedavg", "median"])
    many.add_argument("--privacy", nargs="+", choices=PRIVACY_MODES, default=["none"])
    many.add_argument("--alphas", nargs="+", type=float, default=[0.5])
    many.add_argument("--out", default="robustness-sweep", help="output directory")
    _common(many)
    many.set_defaults(group_size=4)
    from ztfl.bench import federated as federated_experiment
    federated_experiment.add_arguments(sub.add_parser(
        "federated", help="federated (real update path) vs centralised accuracy on one validation split"))


def _config_kwargs(args) -> dict:
    from ztfl.bench.byzantine import ExperimentConfig

    names = {f.name for f in fields(ExperimentConfig)}
    return {k: v for k, v in vars(args).items() if k in names}


def run(args) -> int:
    from ztfl.bench.byzantine import ExperimentConfig, run_experiment
    from ztfl.robustness.result import RobustnessError
    from ztfl.bench.sweep import acceptance_grid, attack_suite_grid, grid, sweep

    if args.experiment == "federated":
        from ztfl.bench import federated as federated_experiment
        return federated_experiment.run(args)
    try:
        if args.experiment == "byzantine":
            result = run_experiment(ExperimentConfig(**_config_kwargs(args)))
            if args.json:
                print(json.dumps(result))
            else:
                for r in result["rounds"]:
                    print(f"round {r['round']:3d}  accuracy {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}  "
                          f"backdoor {r['attack_success'] if r['attack_success'] is not None else '-'}  "
                          f"honest excluded {r['honest_excluded']:.2f}")
            return 0
        common = {k: v for k, v in _config_kwargs(args).items()
                  if k not in ("dataset", "attack", "fraction", "defense", "privacy", "alpha")}
        if args.preset in ("acceptance", "attacks", "all"):
            preset = {"rounds": args.rounds, "agents": args.agents, "seed": args.seed,
                      "group_size": args.group_size, "model": args.model}
            runs = acceptance_grid(args.datasets, **preset) if args.preset != "attacks" else []
            if args.preset != "acceptance":
                runs += attack_suite_grid(args.datasets, **preset)
        else:
            runs = grid(args.datasets, args.attacks, args.fractions, args.defenses, args.privacy,
                        args.alphas, **common)
        log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
        results = sweep(runs, args.out, log=log)
        summary = {"out": args.out, "runs": len(results),
                   "refused": sum(1 for r in results if "refused" in r),
                   "table": f"{args.out}/table.md"}
        print(json.dumps(summary) if args.json else f"table: {summary['table']}")
        return 0
    except RobustnessError as exc:
        print(f"ztfl experiment: {exc}", file=sys.stderr)
        return 2
