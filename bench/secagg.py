"""`ztfl bench secagg`: one secure-aggregation round with all clients in this process.

Clients that drop (a `--dropout` fraction) do so after ShareKeys, before sending their masked
input: the costliest case for the server, which must reconstruct their mask keys and remove
their pairwise masks. Times are CPU-bound wall-clock times of the protocol code only (frames are
encoded, signed, parsed and verified; no network). CPU seconds (all threads of the process) are
reported next to wall-clock seconds, with the load average, because the machine may be shared.
"""
from __future__ import annotations

import argparse
import math
import os

import numpy as np

from ztfl.protocol.config import ACTIVE, RoundConfig, group_size, minimum_threshold
from ztfl.protocol.prg import default_workers
from ztfl.protocol.simulate import Cohort, expected_sums, run_round
from ztfl.protocol.stages import Stage
from ztfl.bench.report import add_json_flag, emit, key_value_lines, process_clock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--dim", type=int, default=500_000)
    parser.add_argument("--dropout", type=float, default=0.1, help="fraction dropping after ShareKeys")
    parser.add_argument("--mask-bits", type=int, choices=(32, 64), default=32)
    parser.add_argument("--neighbors", type=int, default=0,
                        help="SecAgg+ degree (even); 0 = complete graph")
    parser.add_argument("--threshold", type=int, default=0, help="0 = the smallest safe threshold")
    parser.add_argument("--security", choices=("active",), default="active",
                        help="agents take part with active security only (docs/protocol.md 2.4)")
    parser.add_argument("--frac-bits", type=int, default=None, help="default 16 (32-bit) / 24 (64-bit)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="threads per session for mask expansion (default: CPU count, at most 4)")
    parser.add_argument("--seed", type=int, default=0)
    add_json_flag(parser)


def run(args) -> int:
    n = args.clients
    group = group_size(n, args.neighbors)
    threshold = args.threshold or minimum_threshold(group, ACTIVE)
    frac_bits = args.frac_bits if args.frac_bits is not None else (16 if args.mask_bits == 32 else 24)
    config = RoundConfig.for_range(dim=args.dim, max_clients=n, threshold=threshold, clip=4.0,
                                   frac_bits=frac_bits, mask_bits=args.mask_bits,
                                   neighbors=args.neighbors, security=ACTIVE)
    ids = list(range(1, n + 1))
    rng = np.random.default_rng(args.seed)
    inputs = {c: rng.normal(0.0, 0.05, size=args.dim).astype(np.float32) for c in ids}
    n_drop = int(math.floor(args.dropout * n + 1e-9))
    dropped = rng.choice(ids, size=n_drop, replace=False) if n_drop else []
    cohort = Cohort.create(ids)
    round_run = run_round(config, cohort, inputs,
                          drop_before={int(c): Stage.MASKED_INPUT_COLLECTION for c in dropped},
                          workers=args.workers, clock=process_clock)
    result = round_run.result
    finished = [c for c in ids if round_run.clients[c].stage == Stage.DONE]
    report = {
        "clients": n, "dim": args.dim, "dropout": args.dropout, "mask_bits": args.mask_bits,
        "neighbors": args.neighbors, "group_size": group, "threshold": threshold,
        "security": args.security, "frac_bits": frac_bits, "workers": args.workers,
        "survivors": len(result.survivors) if result else 0,
        "client_seconds_mean": (float(np.mean([round_run.client_seconds[c] for c in finished]))
                                if finished else None),
        "client_seconds_max": (float(np.max([round_run.client_seconds[c] for c in finished]))
                               if finished else None),
        "server_seconds": round_run.server_seconds,
        "client_cpu_seconds_mean": (float(np.mean([round_run.client_cpu_seconds[c] for c in finished]))
                                    if finished else None),
        "server_cpu_seconds": round_run.server_cpu_seconds,
        "load_average_1min": os.getloadavg()[0],
        "exact": False, "max_abs_error": None,
        "upload_bytes_per_client": int(np.mean(list(round_run.upload_bytes.values()))),
        "plaintext_bytes_per_client": 4 * args.dim,
    }
    report["upload_ratio"] = report["upload_bytes_per_client"] / report["plaintext_bytes_per_client"]
    if result is not None:
        expected, weight = expected_sums(config, inputs, {}, result.survivors)
        report["exact"] = bool(np.array_equal(result.sums, expected) and result.total_weight == weight)
        plain_mean = np.mean([inputs[c].astype(np.float64) for c in result.survivors], axis=0)
        report["max_abs_error"] = float(np.max(np.abs(result.mean() - plain_mean)))
    else:
        report["aborted"] = round_run.server.abort_reason
    emit(report, args.json, key_value_lines(28))
    return 0 if report["exact"] else 1
