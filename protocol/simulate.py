"""Run one round with every client in this process (benchmark, demo, tests).

Frames travel as bytes through the real encoders and decoders; only the transport is absent.
A client listed in `drop_before` stops answering from that stage on (a dropout); so does a client
that aborts (RoundAborted: final for it, e.g. when its group fell below the threshold).

protocol/ reads no clock: a benchmark that wants the time spent per party passes `clock`, a
function returning (wall seconds, CPU seconds), e.g. ztfl.bench.report.process_clock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
from nacl.signing import SigningKey

from ztfl.protocol.client import ClientSession
from ztfl.protocol.config import RoundConfig
from ztfl.protocol.errors import RoundAborted
from ztfl.protocol.keys import EpochKeys
from ztfl.protocol.server import AggregateResult, ServerSession, StageOutput
from ztfl.protocol.stages import Stage


@dataclass
class Cohort:
    """Identities and epoch keys of a set of clients plus the server, reusable across rounds."""
    server_identity: SigningKey
    identities: dict[int, SigningKey]
    epoch_keys: dict[int, EpochKeys]

    @classmethod
    def create(cls, client_ids, epoch: int = 1) -> "Cohort":
        return cls(SigningKey.generate(), {c: SigningKey.generate() for c in client_ids},
                   {c: EpochKeys.generate(epoch) for c in client_ids})

    @property
    def directory(self):
        d = {c: k.verify_key for c, k in self.identities.items()}
        d[0] = self.server_identity.verify_key
        return d


Clock = Callable[[], tuple[float, float]]


def no_clock() -> tuple[float, float]:
    return 0.0, 0.0


@dataclass
class RoundRun:
    result: AggregateResult | None
    server: ServerSession
    clients: dict[int, ClientSession]
    client_seconds: dict[int, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    # CPU time of the process (all threads) over the same spans: the work done, whatever else
    # the machine is running.
    client_cpu_seconds: dict[int, float] = field(default_factory=dict)
    server_cpu_seconds: float = 0.0
    upload_bytes: dict[int, int] = field(default_factory=dict)   # MASKED_INPUT frame per client


def run_round(config: RoundConfig, cohort: Cohort, inputs: Mapping[int, np.ndarray],
              weights: Mapping[int, int] | None = None, drop_before: Mapping[int, Stage] | None = None,
              round_id: int = 1, workers: int = 1, epoch_keys: Mapping[int, EpochKeys] | None = None,
              revealed_keys: set[bytes] | None = None, encoded: Mapping[int, np.ndarray] | None = None,
              clock: Clock = no_clock, epoch_graphs: dict | None = None) -> RoundRun:
    """One full round. `drop_before[c] = stage`: client c sends nothing from that stage on.
    `workers`: threads each session may use to expand masks. `epoch_keys` (default: the cohort's)
    and `revealed_keys` (and `epoch_graphs`, for a sparse graph: the server's store of each epoch's
    neighbour graph) let several rounds share one key epoch (protocol.epochs). `encoded[c]`,
    when given, is client c's input already in the fixed-point domain (set_encoded_input).
    `clock` (default: none) times each party's work into the run's *_seconds fields."""
    drop_before = dict(drop_before or {})
    weights = weights or {}
    epoch_keys = epoch_keys if epoch_keys is not None else cohort.epoch_keys
    encoded = encoded or {}
    epoch = next(iter(epoch_keys.values())).epoch
    directory = cohort.directory
    server = ServerSession(config, cohort.server_identity, directory, epoch, round_id, workers=workers,
                           revealed_keys=revealed_keys, epoch_graphs=epoch_graphs)
    clients = {c: ClientSession(c, cohort.identities[c], directory, epoch_keys[c], round_id, workers=workers)
               for c in inputs}
    run = RoundRun(None, server, clients, {c: 0.0 for c in clients},
                   client_cpu_seconds={c: 0.0 for c in clients})
    order = Stage.order(config.reveals_graph)

    def active(c: int, stage: Stage) -> bool:
        stop = drop_before.get(c)
        return stop is None or order.index(stage) < order.index(stop)

    def deliver(out: StageOutput | bytes, stage: Stage) -> None:
        for c, session in clients.items():
            frame = out if isinstance(out, bytes) else out.frame_for(c)
            if frame is None or not active(c, stage) or session.stage.terminal:
                continue
            t0, c0 = clock()
            if stage == Stage.MASKED_INPUT_COLLECTION:
                if c in encoded:
                    session.set_encoded_input(encoded[c])
                else:
                    session.set_input(inputs[c], weights.get(c, 1))
            try:
                reply = session.receive(frame)
            except RoundAborted:
                reply = None      # final for this client (e.g. its group fell below t): to the server, a dropout
            t1, c1 = clock()
            run.client_seconds[c] += t1 - t0
            run.client_cpu_seconds[c] += c1 - c0
            if reply is None:
                continue
            if stage == Stage.MASKED_INPUT_COLLECTION:
                run.upload_bytes[c] = len(reply)
            t0, c0 = clock()
            server.receive(reply)
            t1, c1 = clock()
            run.server_seconds += t1 - t0
            run.server_cpu_seconds += c1 - c0

    out: StageOutput | bytes = server.round_config()
    while not server.stage.terminal:
        stage = server.stage
        deliver(out, stage)
        t0, c0 = clock()
        out = server.close_stage()
        t1, c1 = clock()
        run.server_seconds += t1 - t0
        run.server_cpu_seconds += c1 - c0
        if server.stage == Stage.ABORTED:
            deliver(out, stage)   # clients learn of the abort
            return run
    run.result = server.result
    return run


def expected_sums(config: RoundConfig, inputs: Mapping[int, np.ndarray], weights: Mapping[int, int],
                  survivors) -> tuple[np.ndarray, int]:
    """The plaintext reference: sum of w*q over survivors (int64) and the total weight."""
    from ztfl.protocol.fixedpoint import quantize
    total = np.zeros(config.dim, dtype=np.int64)
    weight = 0
    for c in survivors:
        w = weights.get(c, 1)
        total += quantize(inputs[c], config.frac_bits, config.clip_q) * w
        weight += w
    return total, weight
