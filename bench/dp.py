"""`ztfl bench dp`: accuracy against epsilon, federated training with distributed DP on real data.

One process, simulated agents (no radio, no boards), the real maths: the data loaders, Dirichlet
split, micro model and local training of models/, one secure-aggregation round of protocol/ per
training round with one key epoch for the whole run (ClientKeyring / EpochSchedule), client
clipping and Skellam noise of privacy/, and the gateway's PrivacyLedger. For each epsilon
(`inf` = the same run without clipping or noise) it prints the final test accuracy and the
epsilon the ledger reports.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

DATASET_FILES = {"nsl-kdd": "nsl_kdd/KDDTrain+_20Percent.txt", "unsw-nb15": "unsw_nb15/UNSW_NB15_dev.csv"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    from ztfl.models.datasets import datasets_dir
    from ztfl.models.partition import dirichlet_partition
    from ztfl.models.prepare import prepare

    prep = prepare(datasets_dir() / DATASET_FILES[args.dataset], args.dataset, target="binary",
                   val_fraction=0.3, seed=args.seed, max_rows=args.max_rows)
    labels = prep.train.category if prep.train.category is not None else prep.train.y
    split = dirichlet_partition(labels, args.agents, args.alpha, seed=args.seed, min_size=8)
    return prep, [prep.train.subset(idx) for idx in split]


def train_run(args, prep, parts, epsilon: float) -> dict:
    import torch

    from ztfl.models.micro import MicroConfig, MicroMLP
    from ztfl.models.params import get_flat, set_flat
    from ztfl.models.training import TrainConfig, metrics_from_predictions, predict, train_local
    from ztfl.privacy import add_noise, clip_l2
    from ztfl.privacy.accountant import PrivacyLedger, calibrate
    from ztfl.privacy.params import PrivacyBudget
    from ztfl.protocol import fixedpoint
    from ztfl.protocol.config import SEMI_HONEST, RoundConfig
    from ztfl.protocol.epochs import ClientKeyring, EpochPolicy, EpochSchedule
    from ztfl.protocol.simulate import Cohort, run_round

    torch.manual_seed(args.seed)
    hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    model = MicroMLP(MicroConfig(prep.train.x.shape[1], len(prep.train.classes), hidden))
    flat = get_flat(model)
    dim = flat.size
    n = args.agents
    ids = list(range(1, n + 1))
    min_surv = args.min_survivors or n
    private = math.isfinite(epsilon)
    budget = PrivacyBudget(epsilon, args.delta) if private else None
    params = calibrate(budget, args.rounds, args.clip, 16, dim, min_surv) if private else None
    ledger = PrivacyLedger(budget) if private else None
    clip = args.clip if private else 1e6
    # Fixed point: 16 fractional bits; per-coordinate range large enough for clipped updates plus noise.
    config = RoundConfig.for_range(dim=dim, max_clients=n, threshold=max(min_surv, n // 2 + 1),
                                   clip=min(clip, 64.0), frac_bits=16, mask_bits=32, security=SEMI_HONEST,
                                   key_reuse=True)
    if private and not params.headroom_ok(n, config.clip_q, 32):
        raise ValueError("noise too large for 32-bit words: lower frac_bits or use 64-bit masks")
    cohort = Cohort.create(ids)
    policy = EpochPolicy(max_rounds=args.rounds + 1)
    keyrings = {c: ClientKeyring(policy) for c in ids}
    schedule = EpochSchedule(policy)
    rng = np.random.default_rng(args.seed + 17)
    norms = []
    for r in range(1, args.rounds + 1):
        updates, encoded = {}, {}
        for c in ids:
            set_flat(model, flat)
            res = train_local(model, parts[c - 1], TrainConfig(epochs=1, batch_size=args.batch_size, lr=args.lr,
                                                               max_batches=args.local_batches,
                                                               seed=args.seed * 1009 + r * 101 + c))
            delta = (res.weights - flat).astype(np.float64)
            norms.append(float(np.linalg.norm(delta)))
            updates[c] = clip_l2(delta, clip) if private else delta
            if private:
                words = fixedpoint.encode(updates[c], 1, config.frac_bits, config.clip_q, config.mask_bits)
                encoded[c] = add_noise(words, params, rng)
        epoch = schedule.epoch_for(r, float(r))
        keys = {c: keyrings[c].keys_for(epoch, r, float(r), config.key_reuse) for c in ids}
        run = run_round(config, cohort, updates, round_id=r, epoch_keys=keys,
                        revealed_keys=schedule.revealed_keys, encoded=encoded)
        for c in ids:
            keyrings[c].finish(run.clients[c])
        schedule.finish(run.server)
        if run.result is None:
            raise RuntimeError(f"round {r} aborted: {run.server.abort_reason}")
        if private:
            # At the gateway this is called when U3 is known, before the unmasking shares are asked for.
            ledger.spend(params, len(run.result.survivors), round_id=r)
        flat = (flat + args.server_lr * run.result.mean()).astype(np.float32)
    set_flat(model, flat)
    metrics = metrics_from_predictions(predict(model, prep.val.x), prep.val)
    out = {"epsilon_target": epsilon if private else None, "accuracy": metrics["accuracy"],
           "macro_f1": metrics["macro_f1"], "n_params": int(dim),
           "update_norm_median": float(np.median(norms)),
           "key_setups_per_agent": float(np.mean([len(k.rekeys) for k in keyrings.values()]))}
    if private:
        out.update({"epsilon_spent": ledger.epsilon_spent, "noise_multiplier": params.noise_multiplier(),
                    "noise_std_on_mean": math.sqrt(params.aggregate_variance(n)) / (2 ** 16 * n),
                    "per_client_variance": params.noise_variance})
    return out


def run(args) -> int:
    import torch

    torch.set_num_threads(1)
    start = time.monotonic()
    prep, parts = _federation(args)
    runs = []
    for text in args.epsilons.split(","):
        eps = float(text)
        t0 = time.monotonic()
        result = train_run(args, prep, parts, eps)
        result["seconds"] = time.monotonic() - t0
        runs.append(result)
    report = {"dataset": args.dataset, "agents": args.agents, "rounds": args.rounds, "delta": args.delta,
              "clip": args.clip, "hidden": args.hidden, "alpha": args.alpha, "max_rows": args.max_rows,
              "test_rows": len(prep.val), "runs": runs, "seconds": time.monotonic() - start,
              "load_average_1min": os.getloadavg()[0]}
    print(json.dumps(report) if args.json else json.dumps(report, indent=1))
    return 0
