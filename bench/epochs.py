"""`ztfl bench epochs`: per-round client cost with and without key reuse (CPython client).

The same cohort runs `--rounds` rounds twice, all clients in this process: once with one key
setup for the whole run (key-reuse rounds, EpochPolicy(max_rounds=rounds): session-tagged frames
and pairwise consistency tags, docs/protocol.md 1.8) and once with per-round key agreement
(EpochPolicy.per_round() and the classic rounds, the Bonawitz / SecAgg+ baseline). Per-round
figures are means over clients of the rounds after the first (the first round pays the setup
either way). Times are wall-clock and process CPU seconds of the client code only.

Each session counts its operations (Ed25519 verifications and signatures, session and consistency
tags; the keys count X25519). The split of a round's client CPU time is those counts times unit
costs measured in this process just before, plus the measured cost of masking one input with the
round's keys; what is left (Shamir, AEAD, HKDF, encoding, parsing) is reported as `other`.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import time
from dataclasses import replace

import numpy as np
from nacl.signing import SigningKey

from ztfl.protocol import kdf, session
from ztfl.protocol.config import RoundConfig, group_size, minimum_threshold
from ztfl.protocol.epochs import ClientKeyring, EpochPolicy, EpochSchedule
from ztfl.protocol.prg import apply_masks, word_dtype
from ztfl.protocol.simulate import Cohort, expected_sums, run_round
from ztfl.bench.report import add_json_flag, emit, process_clock

WORK = ("ed25519_verify", "ed25519_sign", "session_tags", "consistency_tags")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--dim", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--neighbors", type=int, default=0, help="SecAgg+ degree (even); 0 = complete graph")
    parser.add_argument("--seed", type=int, default=0)
    add_json_flag(parser)


def _cpu_per_call(fn, calls: int) -> float:
    """Median over 5 batches of process CPU seconds per call."""
    samples = []
    for _ in range(5):
        c0 = time.process_time()
        for _ in range(calls):
            fn()
        samples.append((time.process_time() - c0) / calls)
    return float(np.median(samples))


def unit_costs(config: RoundConfig, keys_per_mask: int) -> dict[str, float]:
    """CPU seconds of one operation of each kind, measured here; `masking` is one client's mask
    expansion for one round (self mask plus one pairwise mask per neighbour), as the session does
    it (one thread)."""
    identity = SigningKey(hashlib.sha256(b"bench-epochs-identity").digest())
    message = bytes(52)                          # header || SHA-256(body): what frames sign
    signature = identity.sign(message).signature
    sk, pk = bytes(range(32)), kdf.x25519_public(bytes(range(1, 33)))
    akey = bytes(32)
    words = np.zeros(config.words, dtype=word_dtype(config.mask_bits))
    mask_keys = [hashlib.sha256(bytes([i])).digest()[:16] for i in range(keys_per_mask)]
    return {
        "ed25519_verify": _cpu_per_call(lambda: identity.verify_key.verify(message, signature), 60),
        "ed25519_sign": _cpu_per_call(lambda: identity.sign(message), 60),
        "x25519": _cpu_per_call(lambda: kdf.x25519(sk, pk), 60),
        "session_tags": _cpu_per_call(lambda: session.frame_tag(akey, message), 400),
        "consistency_tags": _cpu_per_call(lambda: session.consistency_tag(akey, 1, message), 400),
        "masking": _cpu_per_call(lambda: apply_masks(words, mask_keys[:1], mask_keys[1:], config.mask_bits), 3),
    }


def split(round_figures: dict, costs: dict[str, float]) -> dict[str, float]:
    """Client CPU milliseconds of one round by kind of work (counts x unit costs, masking measured)."""
    parts = {
        "signatures_ms": 1e3 * (round_figures["ed25519_verify"] * costs["ed25519_verify"]
                                + round_figures["ed25519_sign"] * costs["ed25519_sign"]),
        "x25519_ms": 1e3 * round_figures["x25519_per_client"] * costs["x25519"],
        "masking_ms": 1e3 * costs["masking"],
        "tags_ms": 1e3 * (round_figures["session_tags"] * costs["session_tags"]
                          + round_figures["consistency_tags"] * costs["consistency_tags"]),
    }
    parts["other_ms"] = 1e3 * round_figures["client_cpu_seconds"] - sum(parts.values())
    return parts


def run_policy(policy: EpochPolicy, config: RoundConfig, ids: list[int], rounds: int, seed: int) -> dict:
    cohort = Cohort.create(ids)
    keyrings = {c: ClientKeyring(policy) for c in ids}
    schedule = EpochSchedule(policy)
    graphs: dict = {}          # the gateway's neighbour graph per key epoch (a sparse graph's reveal)
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
        # A sparse graph is revealed in the first key-reuse round of an epoch and kept after it.
        fixes_graph = config.key_reuse and bool(config.neighbors) and epoch not in graphs
        run = run_round(replace(config, new_graph=fixes_graph), cohort, inputs, round_id=round_id, epoch_keys=keys,
                        revealed_keys=schedule.revealed_keys, clock=process_clock, epoch_graphs=graphs)
        for c in ids:
            keyrings[c].finish(run.clients[c])
        schedule.finish(run.server)
        expected, weight = expected_sums(config, inputs, {}, ids)
        exact &= bool(run.result is not None and np.array_equal(run.result.sums, expected)
                      and run.result.total_weight == weight)
        figures = {
            "client_seconds": float(np.mean(list(run.client_seconds.values()))) + setup_wall / len(ids),
            "client_cpu_seconds": float(np.mean(list(run.client_cpu_seconds.values()))) + setup_cpu / len(ids),
            "x25519_per_client": float(np.mean([keys[c].agreements - before[c] for c in ids])),
        }
        for name in WORK:
            figures[name] = float(np.mean([getattr(run.clients[c].work, name) for c in ids]))
        per_round.append(figures)
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
                                   threshold=minimum_threshold(group), clip=4.0, neighbors=args.neighbors)
    # Key reuse (flag set: session-tagged frames, pairwise consistency tags, dropped clients
    # unmasked with round keys) against the classic per-round protocol (flag clear: fresh keys
    # every round, every frame signed, epoch secrets Shamir-shared).
    reuse = run_policy(EpochPolicy(max_rounds=args.rounds), replace(config, key_reuse=True), ids,
                       args.rounds, args.seed)
    fresh = run_policy(EpochPolicy.per_round(), config, ids, args.rounds, args.seed)
    costs = unit_costs(config, keys_per_mask=group)
    for result in (reuse, fresh):
        result["later_rounds_split"] = split(result["later_rounds_mean"], costs)
    a = reuse["later_rounds_mean"]["client_cpu_seconds"]
    b = fresh["later_rounds_mean"]["client_cpu_seconds"]
    report = {
        "clients": args.clients, "dim": args.dim, "rounds": args.rounds, "neighbors": args.neighbors,
        "group_size": group, "threshold": config.threshold,
        "key_reuse": reuse, "per_round_keys": fresh,
        "unit_cpu_microseconds": {k: 1e6 * v for k, v in costs.items()},
        "client_cpu_reduction": (1.0 - a / b) if b > 0 else None,
        "load_average_1min": os.getloadavg()[0],
        "exact": reuse["exact"] and fresh["exact"],
    }
    emit(report, args.json)
    return 0 if report["exact"] else 1
