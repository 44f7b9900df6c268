"""`ztfl bench gateway`: one secure-aggregation round of N simulated agents through mosquitto.

Identities are certified by the simulation root CA of the seed (agent.sim.sim_root): the agents'
certificates come with their hellos and are relayed in the announcement with the gateway's own,
and every agent checks them before it uses a key.

The gateway side is this process: the gateway's own cohort state machine (gateway.cohort.CohortRun
with per-stage deadlines, gateway.secagg over protocol.server.ServerSession), MQTT transport,
topics and envelopes. What it leaves out of a production round is model evaluation, versioning
and the detector export, which do not depend on N. The agents are agent.sim fleets in
`--procs` subprocesses (the real client protocol, one MQTT connection per fleet).

Above 40 agents the round uses SecAgg+ neighbourhoods (`--neighbors`, default the even number
at or above 2 log2 N) with the smallest threshold active security allows in a neighbourhood;
the complete graph costs every agent N - 1 pairwise masks.

Reported: seconds and gateway CPU seconds per stage, the round's wall-clock time, the gateway's
CPU seconds and peak RSS, the fleets' CPU seconds, payload bytes into and out of the broker, and
whether the aggregate equals the plaintext sum of the survivors' quantised updates exactly.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from nacl.signing import SigningKey, VerifyKey

from ztfl.agent.sim import sim_gateway, sim_update
from ztfl.fednet.topics import Topics
from ztfl.fednet.transport import BrokerConfig, MqttTransport
from ztfl.fednet.messages import CERTIFIED_ANNOUNCE, Envelope, Heartbeat, Hello, RoundAnnounce, RoundEnd, certificate_text
from ztfl.gateway.cohort import CohortRun, CohortState, Participant
from ztfl.gateway.secagg import CLIP, FRAC_BITS, CohortAggregation
from ztfl.protocol.config import ACTIVE, RoundConfig, minimum_threshold
from ztfl.protocol.refusal import Refusal
from ztfl.protocol.fixedpoint import quantize
from ztfl.protocol.server import ServerSession
from ztfl.protocol.rounds import attempt_id
from ztfl.bench.report import add_json_flag, emit, key_value_lines

FEDERATION = "bench"
MAX_PAYLOAD = 64 * 1024 * 1024
# The bench measures how long stages take; deadlines only end a round whose agents are gone.
DEADLINES = {"attest": 5.0, "advertise": 900.0, "share": 900.0, "masked": 900.0, "consistency": 900.0,
             "unmask": 900.0}


def default_neighbors(n: int) -> int:
    if n <= 40:
        return 0
    k = 2 * math.ceil(math.log2(n))
    return k + (k % 2)


class SparseAggregation(CohortAggregation):
    """The gateway's aggregation handle with a SecAgg+ neighbourhood degree (the same round
    configuration as gateway.secagg builds, plus `neighbors`)."""

    def __init__(self, round_id: int, epoch: int, mask_bits: int, dim: int, threshold: int, max_clients: int,
                 identities: dict[int, bytes], server_identity: SigningKey, neighbors: int):
        frac = FRAC_BITS[mask_bits]
        n = max(2, max_clients)
        config = RoundConfig(dim=dim, threshold=threshold, max_clients=n, mask_bits=mask_bits, frac_bits=frac,
                             clip_q=int(round(CLIP * 2 ** frac)), max_weight=self.max_weight(mask_bits, n),
                             neighbors=neighbors, security=ACTIVE)
        self.server = ServerSession(config, server_identity,
                                    {sid: VerifyKey(pk) for sid, pk in identities.items()}, epoch, round_id)
        self.members = frozenset(identities)
        self.fell_out: dict[int, str] = {}


class BenchCohortRun(CohortRun):
    neighbors: int = 0

    def _begin_aggregation(self, now: float):
        seated = {p.sid: p for p in self.participants.values() if p.evidence_ok}
        self.aggregation = SparseAggregation(
            round_id=self.round, epoch=attempt_id(self.round, self.attempt), mask_bits=self.mask_bits,
            dim=self.dim, threshold=self.threshold, max_clients=len(self.participants),
            identities={sid: p.identity_pk for sid, p in seated.items()}, server_identity=self.server_identity,
            neighbors=self.neighbors)
        self._move(CohortState.AGGREGATING)
        self.stage_deadline = now + self.deadlines_s[self.aggregation.deadline_key]
        return self.aggregation.start()


def _spawn_fleets(broker_url: str, n: int, procs: int, dim: int, seed: int, dropped: set[int]) -> list:
    fleets = []
    chunks = np.array_split(np.arange(1, n + 1), max(1, min(procs, n)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for chunk in chunks:
        if not len(chunk):
            continue
        first, count = int(chunk[0]), len(chunk)
        drop = ",".join(str(i) for i in sorted(dropped) if first <= i < first + count)
        fleets.append(subprocess.Popen(
            [sys.executable, "-m", "ztfl.agent.sim", "--broker", broker_url, "--agents", str(count),
             "--first-id", str(first), "--dim", str(dim), "--seed", str(seed), "--federation", FEDERATION,
             "--drop", drop], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    return fleets


def _process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of another process of ours (the broker), from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_round_through_broker(broker_url: str, local_agents: int, dim: int, dropout: float,
                             external_agents: int = 0, neighbors: int | None = None, procs: int = 2,
                             seed: int = 0, timeout: float = 3600, broker_pid: int | None = None) -> dict:
    """Run one round; `external_agents` are simulated agents started elsewhere (another board)
    with indices above `local_agents` that the round waits for as well. `broker_pid`: the
    broker's process, when it runs here, to report its CPU seconds."""
    load_before = os.getloadavg()[0]
    topics = Topics(FEDERATION, "fog1")
    total = local_agents + external_agents
    neighbors = default_neighbors(total) if neighbors is None else neighbors
    group = total if not neighbors or neighbors >= total - 1 else neighbors + 1
    threshold = minimum_threshold(group, ACTIVE)
    rng = np.random.default_rng(seed)
    n_drop = int(math.floor(dropout * local_agents + 1e-9))
    dropped = {int(i) for i in rng.choice(np.arange(1, local_agents + 1), size=n_drop, replace=False)} if n_drop \
        else set()
    transport = MqttTransport(BrokerConfig(url=broker_url, client_id="bench-gateway", keepalive_s=60),
                              [topics.agents_wildcard()], MAX_PAYLOAD)
    transport.start()
    fleets = _spawn_fleets(broker_url, local_agents, procs, dim, seed, dropped)
    deadline = time.monotonic() + timeout
    hellos: dict[str, bytes] = {}
    certificates: dict[str, str] = {}
    offline: set[str] = set()
    rejected = 0
    try:
        while len(hellos) < total:
            if time.monotonic() > deadline or any(f.poll() not in (None, 0) for f in fleets):
                raise RuntimeError(f"only {len(hellos)} of {total} agents said hello")
            msg = transport.get(0.2)
            if msg is not None and msg.topic.endswith("/hello"):
                h = Hello.decode(msg.payload)
                hellos[h.agent_id] = bytes.fromhex(h.identity_pk)
                certificates[h.agent_id] = h.certificate
        names = sorted(hellos)
        participants = {a: Participant(a, sid, hellos[a], 100) for sid, a in enumerate(names, start=1)}
        server_key, server_cert = sim_gateway(seed, FEDERATION, "fog1")
        run = BenchCohortRun(1, 0, "cnn-lstm", 32, participants, threshold, DEADLINES, False, dim, server_key)
        run.neighbors = neighbors
        c_start, t_start = time.process_time(), time.monotonic()
        broker_cpu_start = _process_cpu_seconds(broker_pid)
        run.start(t_start)
        ann = RoundAnnounce(1, 0, run.name, "cnn-lstm", 32, 0, "00" * 32,
                            [[p.agent_id, p.sid, certificates[p.agent_id]] for p in participants.values()],
                            threshold, os.urandom(32).hex(), DEADLINES, 1,
                            bytes(run.server_identity.verify_key).hex(), version=CERTIFIED_ANNOUNCE,
                            server_cert=certificate_text(server_cert.encode()))
        transport.publish(topics.broadcast("round"), ann.encode())
        stages: dict[str, dict] = {}
        stage, stage_t, stage_c = "announce", time.monotonic(), time.process_time()
        while not run.closed:
            if time.monotonic() > deadline:
                raise RuntimeError(f"round not closed within {timeout} s (stage {stage})")
            msg = transport.get(0.05)
            while msg is not None:
                try:
                    agent_id, kind = topics.parse_agent_topic(msg.topic)
                    if kind == "heartbeat" and Heartbeat.decode(msg.payload).state == "offline":
                        offline.add(agent_id)
                    elif kind in ("protocol", "masked"):
                        env = Envelope.decode(msg.payload, MAX_PAYLOAD)
                        run.receive(agent_id, env.body)
                except Refusal:
                    rejected += 1
                msg = transport.get(0)
            now = time.monotonic()
            for out in run.tick(now, offline):
                env = Envelope(1, 0, run.name, out.stage, out.frame).encode()
                if out.to is None:
                    transport.publish(topics.broadcast("protocol"), env)
                else:
                    transport.publish(topics.to_agent(names[out.to - 1], "protocol"), env)
            current = run.aggregation.stage_key if run.aggregation and not run.closed else None
            if current != stage:
                stages[stage] = {"seconds": round(now - stage_t, 3),
                                 "gateway_cpu_seconds": round(time.process_time() - stage_c, 3)}
                stage, stage_t, stage_c = current, now, time.process_time()
        round_seconds = time.monotonic() - t_start
        round_cpu = time.process_time() - c_start
        broker_cpu_end = _process_cpu_seconds(broker_pid)
        transport.publish(topics.broadcast("round"),
                          RoundEnd(1, 0, run.name, "committed" if run.state is CohortState.DONE else "aborted",
                                   0, run.reason).encode())
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        fleet_reports = []
        for f in fleets:
            out, err = f.communicate(timeout=max(30.0, deadline - time.monotonic()))
            lines = out.strip().splitlines()
            fleet_reports.append(json.loads(lines[-1]) if lines else {"error": err[-500:]})
            if err.strip():
                fleet_reports[-1]["stderr_tail"] = err.strip().splitlines()[-3:]
    finally:
        for f in fleets:
            if f.poll() is None:
                f.kill()
                f.wait()
        transport.stop()
    stages.pop(None, None)
    report = {
        "agents": total, "dim": dim, "dropout": dropout, "dropped": len(dropped), "neighbors": neighbors,
        "threshold": threshold, "mask_bits": 32, "state": run.state.value, "reason": run.reason,
        "round_seconds": round(round_seconds, 3), "stages": stages,
        "gateway_cpu_seconds": round(round_cpu, 3), "gateway_peak_rss_mb": round(peak_rss_mb, 1),
        "fleet_cpu_seconds": round(sum(r.get("cpu_seconds", 0.0) for r in fleet_reports), 3),
        "fleet_peak_rss_mb": [r.get("peak_rss_mb") for r in fleet_reports],
        # The agents' CPU seconds per stage they answered ("announce": being seated).
        "fleet_cpu_by_stage": {k: round(sum(r.get("cpu_by_stage", {}).get(k, 0.0) for r in fleet_reports), 3)
                               for k in sorted({k for r in fleet_reports for k in r.get("cpu_by_stage", {})})},
        "broker_cpu_seconds": (round(broker_cpu_end - broker_cpu_start, 3)
                               if broker_cpu_start is not None and broker_cpu_end is not None else None),
        "broker_bytes_in": transport.bytes_out + sum(r.get("bytes_out", 0) for r in fleet_reports),
        "broker_bytes_out": transport.bytes_in + sum(r.get("bytes_in", 0) for r in fleet_reports),
        "gateway_rejected": rejected, "agents_rejected": sum(r.get("rejected", 0) for r in fleet_reports),
        "agents_refusals_sample": [line for r in fleet_reports for line in r.get("stderr_tail", [])][:3],
        # Other jobs' load shows in both; this run's own processes add about 2 to the second.
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
        "survivors": 0, "exact": False,
    }
    if run.state is CohortState.DONE:
        result = run.aggregation.server.result
        config = run.aggregation.server.config
        survivors = sorted(result.survivors)
        expected = np.zeros(dim, dtype=np.int64)
        for sid in survivors:
            index = int(names[sid - 1].split("-")[1])
            expected += quantize(sim_update(seed, index, dim), config.frac_bits, config.clip_q)
        report["survivors"] = len(survivors)
        report["exact"] = bool(np.array_equal(result.sums, expected) and result.total_weight == len(survivors))
        report["dropped_agents_excluded"] = not ({sid for sid, a in enumerate(names, 1)
                                                  if int(a.split("-")[1]) in dropped} & set(survivors))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--dim", type=int, default=100_000)
    parser.add_argument("--dropout", type=float, default=0.05, help="fraction dropping after ShareKeys")
    parser.add_argument("--neighbors", type=int, default=-1, help="SecAgg+ degree; -1: 2 log2 N above 40 agents")
    parser.add_argument("--procs", type=int, default=2, help="processes the simulated agents are spread over")
    parser.add_argument("--broker", default="", help="mqtt://host:port; default a private mosquitto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600)
    add_json_flag(parser)


def run(args) -> int:
    from ztfl.services import start_mosquitto
    broker = None
    url = args.broker
    if not url:
        broker = start_mosquitto()
        url = broker.url
    try:
        report = run_round_through_broker(url, args.agents, args.dim, args.dropout,
                                          neighbors=None if args.neighbors < 0 else args.neighbors,
                                          procs=args.procs, seed=args.seed, timeout=args.timeout,
                                          broker_pid=broker.proc.pid if broker is not None else None)
    finally:
        if broker is not None:
            broker.stop()
    emit(report, args.json, key_value_lines(24))
    return 0 if report["exact"] else 1
