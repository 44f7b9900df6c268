"""`ztfl bench dp`: accuracy against epsilon, federated training with distributed DP on real data.

It runs on the simulated federation of bench.simfed (no radio, no boards), with the real maths:
the data loaders, Dirichlet split and micro model of models/, each agent's local update
(agent.update), and per training round one secure aggregation of the gateway's own cohort code
against the agents' own clients (bench.simfed.secure): one key epoch for the whole run (the
gateway's key epochs, the agents' key rings), the agents' clipping and Skellam noise, and the
gateway's privacy ledger, which accounts each release before unmasking. For each epsilon (`inf`
= the same run without clipping or noise) it prints the final test accuracy and the epsilon the
ledger reports.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

# The masks the figures were measured with; the gateway checks that the noise fits them.
MASK_BITS = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ztfl.models.datasets import DATASET_FILES

    parser.add_argument("--dataset", choices=sorted(DATASET_FILES), default="nsl-kdd")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--min-survivors", type=int, default=0, help="honest survivors the noise assumes (0 = all agents)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epsilons", default="inf,8", help="comma-separated; inf = no DP")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--clip", type=float, default=1.0, help="L2 clip of one update")
    parser.add_argument("--server-lr", type=float, default=1.0)
    parser.add_argument("--hidden", default="8", help="micro MLP hidden sizes, e.g. 32,16 ('' = linear)")
    parser.add_argument("--local-batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--alpha", type=float, default=1.0, help="Dirichlet concentration")
    parser.add_argument("--max-rows", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _federation(args):
    """The micro MLP of `--hidden` on 70 % of the rows, split over the agents (at least 8 rows
    each); the other 30 % are the test rows."""
    from ztfl.bench.simfed import DataSpec, LocalTraining, SimulatedFederation

    data = DataSpec(args.dataset, target="binary", val_fraction=0.3, seed=args.seed, max_rows=args.max_rows,
                    agents=args.agents, alpha=args.alpha, min_rows=8, top_up=False)
    hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    return SimulatedFederation.create(data, "micro", hidden=hidden,
                                      training=LocalTraining(args.local_batches, args.batch_size, args.lr),
                                      seed=args.seed, init_seed=args.seed)


def train_run(args, fed, epsilon: float) -> dict:
    from ztfl.bench.simfed import GatewayAggregation
    from ztfl.gateway.config import PrivacySpec
    from ztfl.protocol.epochs import EpochPolicy

    fed.reset()
    n = args.agents
    private = math.isfinite(epsilon)
    privacy = PrivacySpec(epsilon, args.delta, args.min_survivors or n, args.clip) if private else None
    # One key epoch for the whole run: every agent sets its keys up once.
    secure = GatewayAggregation(fed.agents, MASK_BITS, fed.spec.variant,
                                key_policy=EpochPolicy(max_rounds=args.rounds + 1), privacy=privacy,
                                planned_rounds=args.rounds, seed=args.seed)
    norms = []
    for r in range(1, args.rounds + 1):
        deltas, samples = fed.local_updates(r)
        norms += [float(np.linalg.norm(d.astype(np.float64))) for d in deltas.values()]
        fed.commit(secure.aggregate(r, deltas, samples).mean, args.server_lr, noisy=private)
    metrics = fed.evaluate()
    out = {"epsilon_target": epsilon if private else None, "accuracy": metrics["accuracy"],
           "macro_f1": metrics["macro_f1"], "n_params": int(fed.global_flat.size),
           "update_norm_median": float(np.median(norms)), "key_setups_per_agent": secure.key_setups()}
    if private:
        state = secure.privacy[secure.cohort]
        params = state.params
        out.update({"epsilon_spent": state.ledger.epsilon_spent, "noise_multiplier": params.noise_multiplier(),
                    "noise_std_on_mean": math.sqrt(params.aggregate_variance(n)) / (2 ** params.frac_bits * n),
                    "per_client_variance": params.noise_variance})
    return out


def run(args) -> int:
    start = time.monotonic()
    fed = _federation(args)
    runs = []
    for text in args.epsilons.split(","):
        eps = float(text)
        t0 = time.monotonic()
        result = train_run(args, fed, eps)
        result["seconds"] = time.monotonic() - t0
        runs.append(result)
    report = {"dataset": args.dataset, "agents": args.agents, "rounds": args.rounds, "delta": args.delta,
              "clip": args.clip, "hidden": args.hidden, "alpha": args.alpha, "max_rows": args.max_rows,
              "test_rows": len(fed.data.test), "runs": runs, "seconds": time.monotonic() - start,
              "load_average_1min": os.getloadavg()[0]}
    print(json.dumps(report) if args.json else json.dumps(report, indent=1))
    return 0
