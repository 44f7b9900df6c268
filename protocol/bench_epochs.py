"""`ztfl bench epochs`: per-round client cost with and without key reuse (CPython client).

The same cohort runs `--rounds` rounds twice, all clients in this process: once with one key
setup for the whole run (key-reuse rounds, EpochPolicy(max_rounds=rounds)) and once with
per-round key agreement (EpochPolicy.per_round() and the classic rounds, the Bonawitz / SecAgg+
baseline). Per-round figures are means over
clients of the rounds after the first (the first round pays the setup either way). X25519
operations are counted; times are wall-clock and process CPU seconds of the client code only.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np

from protocol.config import SEMI_HONEST, RoundConfig, group_size, minimum_threshold
from protocol.epochs import ClientKeyring, EpochPolicy, EpochSchedule
from protocol.simulate import Cohort, expected_sums, run_round


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--dim", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--neighbors", type=int, default=0, help="SecAgg+ degree (even); 0 = complete graph")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_policy(policy: EpochPolicy, config: RoundConfig, ids: list[int], rounds: int, seed: int) -> dict:
    cohort = Cohort.create(ids)
    keyrings = {c: ClientKeyring(policy) for c in ids}
    schedule = EpochSchedule(policy)
    rng = np.random.default_rng(seed)
    per_round = []
    exact = True
    for round_id in range(1, rounds + 1):
        epoch = schedule.epoch_for(round_id, float(round_id))
        t0, c0 = time.perf_counter(), time.process_time()
        keys = {c: keyrings[c].keys_for(epoch, round_id, float(round_id), config.key_reuse) for c in ids}
        # Key generation is client work too (X25519 base multiplications happen on first use).
        setup_wall, setup_cpu = time.perf_counter() - t0, time.process_time() - c0
        before = {c: keys[c].agreements for c in ids}
        inputs = {c: rng.normal(0, 0.05, config.dim) for c in ids}
        run = run_round(config, cohort, inputs, round_id=round_id, epoch_keys=keys,
                        revealed_keys=schedule.revealed_keys)
        for c in ids:
            keyrings[c].finish(run.clients[c])
        schedule.finish(run.server)
        expected, weight = expected_sums(config, inputs, {}, ids)
        exact &= bool(run.result is not None and np.array_equal(run.result.sums, expected)
                      and run.result.total_weight == weight)
        per_round.append({
            "client_seconds": float(np.mean(list(run.client_seconds.values()))) + setup_wall / len(ids),
            "client_cpu_seconds": float(np.mean(list(run.client_cpu_seconds.values()))) + setup_cpu / len(ids),
            "x25519_per_client": float(np.mean([keys[c].agreements - before[c] for c in ids])),
        })
    later = per_round[1:] or per_round
    return {
        "first_round": per_round[0],
        "later_rounds_mean": {k: float(np.mean([r[k] for r in later])) for k in later[0]},
        "key_setups_per_client": float(np.mean([len(k.rekeys) for k in keyrings.values()])),
        "exact": exact,
    }


def run(args) -> int:
    ids = list(range(1, args.clients + 1))
    group = group_size(args.clients, args.neighbors)
    config = RoundConfig.for_range(dim=args.dim, max_clients=args.clients,
                                   threshold=minimum_threshold(group, SEMI_HONEST), clip=4.0,
                                   neighbors=args.neighbors, security=SEMI_HONEST)
    # Key reuse (flag set: dropped clients are unmasked with round keys) against the classic
    # per-round protocol (flag clear: fresh keys every round, epoch secrets Shamir-shared).
    reuse = run_policy(EpochPolicy(max_rounds=args.rounds), replace(config, key_reuse=True), ids,
                       args.rounds, args.seed)
    fresh = run_policy(EpochPolicy.per_round(), config, ids, args.rounds, args.seed)
    a = reuse["later_rounds_mean"]["client_cpu_seconds"]
    b = fresh["later_rounds_mean"]["client_cpu_seconds"]
    report = {
        "clients": args.clients, "dim": args.dim, "rounds": args.rounds, "neighbors": args.neighbors,
        "group_size": group, "threshold": config.threshold,
        "key_reuse": reuse, "per_round_keys": fresh,
        "client_cpu_reduction": (1.0 - a / b) if b > 0 else None,
        "load_average_1min": os.getloadavg()[0],
        "exact": reuse["exact"] and fresh["exact"],
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=1))
    return 0 if report["exact"] else 1
