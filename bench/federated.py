"""Federated against centralised accuracy on one validation split, in this process.

The same Dirichlet partitions the agents use (models.partition), the same pipeline the gateway fits,
the same local training the agents run, and per round the transformations the real system
applies to the numbers, each one the project's own code:

    wire      the global model as a ModelBlob (agent.wire): encoded, decoded, loaded by the agent
    secagg    the weighted deltas through one real secure-aggregation round (protocol.simulate,
              with the RoundConfig the gateway builds), including fixed-point encoding and clipping
    (always)  the delta against the base the agent trained from, the weight the agent sends,
              the gateway's update of its float model

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
    from ztfl.models.datasets import datasets_dir   # here, not at the top: it loads pandas
    return str(datasets_dir() / "nsl_kdd" / "KDDTrain+_20Percent.txt")


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


@dataclass
class Federation:
    spec: object                        # models.spec.ModelSpec
    train: object                       # models.preprocess.Encoded, all training rows
    val: object
    parts: list                         # Encoded per agent


def build(cfg: FederatedConfig) -> Federation:
    from ztfl.models.partition import AGENT_MIN_ROWS, PartitionSpec, dirichlet_partition, train_validation
    from ztfl.models.spec import ModelSpec
    from ztfl.models.datasets import stratified_split
    from ztfl.models.preprocess import Pipeline
    import torch

    torch.set_num_threads(max(1, cfg.threads))
    spec = PartitionSpec(path=cfg.data, fmt=cfg.fmt, seed=cfg.seed, count=cfg.agents, alpha=cfg.alpha)
    train, val = train_validation(spec)
    if cfg.max_train_rows is not None and cfg.max_train_rows < len(train):
        keep, _ = stratified_split(train.category, 1.0 - cfg.max_train_rows / len(train), cfg.seed)
        train = train.take(np.sort(keep))
    pipeline = Pipeline.fit(train)                       # as the gateway fits it
    encoded = pipeline.encode(train)
    cut = dirichlet_partition(train.category, cfg.agents, cfg.alpha, cfg.seed, min_size=AGENT_MIN_ROWS, top_up=True)
    parts = [encoded.subset(idx) for idx in cut]
    model_spec = ModelSpec("cnn-lstm", pipeline.n_features, pipeline.n_classes, cfg.model_size)
    return Federation(model_spec, encoded, pipeline.encode(val), parts)


def _metrics(spec, flat: np.ndarray, val) -> dict:
    from ztfl.models.params import set_flat
    from ztfl.models.training import evaluate

    model = spec.build()
    set_flat(model, flat.astype(np.float32))
    m = evaluate(model, val)
    return {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4),
            "per_class_recall": m["per_class_recall"]}


def _wire(spec, flat: np.ndarray, version: int) -> np.ndarray:
    """What an agent holds after the gateway published `flat` as a model blob."""
    from ztfl.models.spec import flat_to_tensors, layout, tensors_to_flat
    from ztfl.fednet.messages import ModelBlob
    from ztfl.models.params import get_flat, set_flat

    model = spec.build()
    shape_table = layout(model)
    payload = ModelBlob(version, spec.variant, "", flat_to_tensors(flat, shape_table)).encode()
    received = ModelBlob.decode(payload, len(payload))
    set_flat(model, tensors_to_flat(received.tensors, shape_table))
    return get_flat(model)


def _secure_mean(deltas: dict[int, np.ndarray], samples: dict[int, int], mask_bits: int,
                 round_id: int, cohort) -> tuple[np.ndarray, int]:
    """One real secure-aggregation round over the deltas with the gateway's configuration and
    the agents' weights; returns (weighted mean, samples it stands for) as the gateway reads it."""
    from ztfl.gateway.cohort import threshold_for, weight_unit
    from ztfl.gateway.config import GatewayConfig
    from ztfl.gateway.secagg import cohort_round_config
    from ztfl.protocol.simulate import run_round

    n = len(deltas)
    dim = next(iter(deltas.values())).size
    config = cohort_round_config(mask_bits, dim, threshold_for(n, GatewayConfig.threshold_fraction), n)
    unit = weight_unit(samples.values(), mask_bits, n)
    # The agent's weight (agent.daemon), clamped as agent.secagg clamps it.
    weights = {c: max(1, min(round(samples[c] / unit), config.max_weight)) for c in deltas}
    run = run_round(config, cohort, deltas, weights, round_id=round_id)
    if run.result is None:
        raise RuntimeError(f"secure aggregation aborted: {run.server.abort_reason}")
    return run.result.mean(), run.result.total_weight * unit


def run_federation(cfg: FederatedConfig, fed: Federation | None = None, log=None) -> "FederationRun":
    from ztfl.agent.update import local_update
    from ztfl.models.params import get_flat
    from ztfl.protocol.simulate import Cohort

    fed = fed or build(cfg)
    global_flat = get_flat(fed.spec.build())
    cohort = Cohort.create(range(1, cfg.agents + 1)) if "secagg" in cfg.transforms else None
    history = []
    for r in range(1, cfg.rounds + 1):
        t0 = time.monotonic()
        base = _wire(fed.spec, global_flat, r - 1) if "wire" in cfg.transforms else global_flat
        deltas, samples = {}, {}
        for i, part in enumerate(fed.parts):
            update = local_update(fed.spec, base, part, epochs=cfg.local_epochs, batch_size=cfg.batch_size,
                                  lr=cfg.lr, max_batches=cfg.local_batches, seed=i + r)
            deltas[i + 1], samples[i + 1] = update.delta, update.samples
        if cohort is not None:
            mean, _ = _secure_mean(deltas, samples, cfg.mask_bits, r, cohort)
        else:
            total = sum(samples.values())
            mean = sum(d.astype(np.float64) * samples[c] for c, d in deltas.items()) / total
        global_flat = (global_flat.astype(np.float64) + mean).astype(np.float32)   # the gateway's commit
        m = _metrics(fed.spec, global_flat, fed.val)
        history.append({"round": r, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                        "seconds": round(time.monotonic() - t0, 2)})
        if log:
            log(f"[{'+'.join(cfg.transforms) or 'exact'}] round {r}: accuracy {m['accuracy']:.4f} "
                f"macro-F1 {m['macro_f1']:.4f}")
    return FederationRun(list(cfg.transforms), history, _metrics(fed.spec, global_flat, fed.val), global_flat)


@dataclass
class FederationRun:
    transforms: list
    rounds: list
    final: dict
    weights: np.ndarray             # the last global model (flat)

    def summary(self) -> dict:
        return {"transforms": self.transforms, "rounds": self.rounds, "final": self.final,
                "best_accuracy": max(h["accuracy"] for h in self.rounds)}


def run_centralised(cfg: FederatedConfig, fed: Federation) -> dict:
    from ztfl.models.training import TrainConfig, train_local

    model = fed.spec.build()
    result = train_local(model, fed.train, TrainConfig(epochs=cfg.central_epochs, batch_size=cfg.batch_size,
                                                       lr=cfg.lr, seed=0))
    return {"epochs": cfg.central_epochs, **_metrics(fed.spec, result.weights, fed.val)}


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
           "validation_rows": len(fed.val), "centralised": centralised, "federated": system, "exact_fedavg": exact,
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
