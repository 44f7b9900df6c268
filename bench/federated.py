"""Federated against centralised accuracy on one validation split, in this process.

It runs on the simulated federation of bench.simfed: the same Dirichlet partitions the agents
use (models.partition), the same pipeline the gateway fits, the same local update the agents run
(agent.update), and per round the transformations the real system applies to the numbers, each
one the project's own code:

    wire      the global model as a ModelBlob (fednet.messages): encoded, decoded, loaded by the agent
    secagg    the deltas through one secure-aggregation round of the gateway's own cohort code
              against the agents' own clients (bench.simfed.secure): fixed-point encoding,
              clipping, the weight unit and the weights the agents send
    (always)  the delta against the base the agent trained from, the gateway's update of its
              float model

`exact` runs the same rounds with none of them: float deltas, averaged by sample count in
float64 (plain FedAvg). Only the transport (MQTT) and the TPM are absent; the radio and the
boards are simulated by running every agent here.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

TRANSFORMS = ("wire", "secagg")


def default_dataset() -> str:
    from ztfl.models.datasets import dataset_file   # here, not at the top: it loads pandas
    return str(dataset_file("nsl-kdd"))


@dataclass
class FederatedConfig:
    data: str = field(default_factory=default_dataset)
    fmt: str = "nsl-kdd"
    agents: int = 8
    alpha: float = 0.5
    rounds: int = 10
    local_epochs: int = 1
    local_batches: int | None = 200     # the demo's budget per agent and round
    batch_size: int = 64                # raspberry-pi-4 profile
    lr: float = 3e-3                    # the agent's default
    model_size: str = "small"
    mask_bits: int = 64
    central_epochs: int = 3
    seed: int = 7                       # the partition seed the demo uses
    max_train_rows: int | None = None   # stratified subsample of the training rows (tests)
    transforms: tuple[str, ...] = TRANSFORMS
    threads: int = 1                    # torch threads; two spinning OpenMP threads on a busy 2-core machine run 30x slower

    def __post_init__(self):
        unknown = set(self.transforms) - set(TRANSFORMS)
        if unknown:
            raise ValueError(f"unknown transform {sorted(unknown)[0]!r}; known: {', '.join(TRANSFORMS)}")
        if self.agents < 3:
            raise ValueError("a secure-aggregation cohort needs at least 3 agents")


def build(cfg: FederatedConfig):
    """The federation (bench.simfed.SimulatedFederation): the agents' cut of the training rows,
    the gateway's pipeline, the CNN-LSTM of `model_size`."""
    from ztfl.bench.simfed import DataSpec, LocalTraining, SimulatedFederation

    data = DataSpec(cfg.fmt, path=cfg.data, seed=cfg.seed, max_train_rows=cfg.max_train_rows, agents=cfg.agents,
                    alpha=cfg.alpha)
    training = LocalTraining(cfg.local_batches, cfg.batch_size, cfg.lr, cfg.local_epochs)
    return SimulatedFederation.create(data, "cnn-lstm", cfg.model_size, training=training, seed=cfg.seed,
                                      threads=cfg.threads)


def _metrics(m: dict) -> dict:
    return {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4),
            "per_class_recall": m["per_class_recall"]}


def run_federation(cfg: FederatedConfig, fed=None, log=None) -> "FederationRun":
    from ztfl.bench.simfed import GatewayAggregation, fedavg

    fed = fed or build(cfg)
    fed.reset()
    secure = GatewayAggregation(fed.agents, cfg.mask_bits, fed.spec.variant) if "secagg" in cfg.transforms else None
    history = []
    for r in range(1, cfg.rounds + 1):
        t0 = time.monotonic()
        base = fed.published() if "wire" in cfg.transforms else None
        deltas, samples = fed.local_updates(r, base=base)
        fed.commit(secure.aggregate(r, deltas, samples).mean if secure else fedavg(deltas, samples))
        m = _metrics(fed.evaluate())
        history.append({"round": r, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                        "seconds": round(time.monotonic() - t0, 2)})
        if log:
            log(f"[{'+'.join(cfg.transforms) or 'exact'}] round {r}: accuracy {m['accuracy']:.4f} "
                f"macro-F1 {m['macro_f1']:.4f}")
    return FederationRun(list(cfg.transforms), history, _metrics(fed.evaluate()), fed.global_flat.copy())


@dataclass
class FederationRun:
    transforms: list
    rounds: list
    final: dict
    weights: np.ndarray             # the last global model (flat)

    def summary(self) -> dict:
        return {"transforms": self.transforms, "rounds": self.rounds, "final": self.final,
                "best_accuracy": max(h["accuracy"] for h in self.rounds)}


def run_centralised(cfg: FederatedConfig, fed) -> dict:
    return {"epochs": cfg.central_epochs, **_metrics(fed.centralised(cfg.central_epochs))}


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = FederatedConfig()
    p.add_argument("--data", default=d.data, help="NSL-KDD training file")
    p.add_argument("--agents", type=int, default=d.agents)
    p.add_argument("--alpha", type=float, default=d.alpha, help="Dirichlet concentration of the split")
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--local-epochs", type=int, default=d.local_epochs)
    p.add_argument("--local-batches", type=int, default=d.local_batches, help="local budget per round")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--model-size", choices=("small", "default"), default=d.model_size)
    p.add_argument("--mask-bits", type=int, choices=(32, 64), default=d.mask_bits)
    p.add_argument("--central-epochs", type=int, default=d.central_epochs)
    p.add_argument("--max-train-rows", type=int, default=None, help="stratified subsample of the training rows")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads")
    p.add_argument("--no-exact", action="store_true", help="skip the plain-FedAvg reference run")
    p.add_argument("--transforms", default=",".join(TRANSFORMS),
                   help="system-path transformations to apply (comma-separated subset of wire,secagg)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    transforms = tuple(t for t in args.transforms.split(",") if t)
    try:
        cfg = FederatedConfig(data=args.data, agents=args.agents, alpha=args.alpha, rounds=args.rounds,
                              local_epochs=args.local_epochs, local_batches=args.local_batches,
                              batch_size=args.batch_size, lr=args.lr, model_size=args.model_size,
                              mask_bits=args.mask_bits, central_epochs=args.central_epochs,
                              max_train_rows=args.max_train_rows, transforms=transforms, threads=args.threads)
    except ValueError as exc:
        print(f"ztfl experiment federated: {exc}", file=sys.stderr)
        return 2
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        fed = build(cfg)
        centralised = run_centralised(cfg, fed)
        log(f"centralised: accuracy {centralised['accuracy']:.4f} macro-F1 {centralised['macro_f1']:.4f}")
        system = run_federation(cfg, fed, log).summary()
        exact = None if args.no_exact else run_federation(FederatedConfig(**{**asdict(cfg), "transforms": ()}),
                                                          fed, log).summary()
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"ztfl experiment federated: {exc}", file=sys.stderr)
        return 2
    out = {"config": {**asdict(cfg), "transforms": list(cfg.transforms)},
           "validation_rows": len(fed.data.test), "centralised": centralised, "federated": system, "exact_fedavg": exact,
           "gap_points": round(100 * (centralised["accuracy"] - system["final"]["accuracy"]), 2)}
    if exact is not None:
        out["system_vs_exact_points"] = round(100 * (exact["final"]["accuracy"] - system["final"]["accuracy"]), 2)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"centralised {centralised['accuracy']:.4f}  federated {system['final']['accuracy']:.4f}"
              + (f"  exact FedAvg {exact['final']['accuracy']:.4f}" if exact else "")
              + f"  gap {out['gap_points']} points")
    return 0
