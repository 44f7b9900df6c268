"""Lightweight simulated agents for scale benchmarks and fault tests: many agents in one process.

Each simulated agent speaks the real client protocol (agent.secagg.AgentAggregation over
protocol.client.ClientSession) and the real MQTT payloads (agent.wire) on its own agent topics;
what is simulated is everything around it: no training (the update is a deterministic function
of the seed and the agent id, so whoever checks the aggregate can recompute it), no model, no
TPM, and one shared MQTT connection for the whole fleet instead of one per device.

A dropping agent stops answering after ShareKeys (it never sends its masked input, the costliest
dropout for the gateway) and publishes the offline heartbeat its MQTT will would carry.

Each agent keeps its key epochs in an agent.keyrings.AgentKeyrings across rounds and applies the
DP parameters signed in the round configuration (clip, Skellam noise) under the default privacy
floor, with its own ledger in memory, as the daemon does.

Identities are certified as in a provisioned fleet, by a simulation root CA derived from the seed
(`sim_root`: never a production key): each agent sends its certificate in its hello and checks the
gateway's certificate and its peers' before it uses their keys (agent.trust), each with its own
cache of verified certificates. `write_sim_trust` gives a gateway its certificate from that root.

    python -m ztfl.agent.sim --broker mqtt://127.0.0.1:1883 --agents 500 --first-id 1 --dim 100000 \
        --seed 0 --drop 7,19 --timeout 300
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from nacl.signing import SigningKey

from ztfl.agent.keyrings import AgentKeyrings
from ztfl.agent.secagg import AgentAggregation, frame_type
from ztfl.agent.trust import check_roster, seat as seat_in
from ztfl.fednet.topics import Topics
from ztfl.fednet.transport import BrokerConfig, MqttTransport
from ztfl.fednet.messages import Envelope, Heartbeat, Hello, RoundAnnounce, RoundEnd, certificate_text
from ztfl.privacy.guard import PrivacyGuard
from ztfl.protocol import certs, wire
from ztfl.protocol.errors import ProtocolError
from ztfl.protocol.refusal import Refusal

MAX_PAYLOAD = 64 * 1024 * 1024
# The gateway stage in which a frame of this type reaches an agent (gateway.secagg.STAGE_KEYS).
STAGE_OF_FRAME = {wire.ROUND_CONFIG: "advertise", wire.ROSTER: "share", wire.GRAPH_SEEDS: "share",
                  wire.SHARES_RELAY: "masked", wire.CONSISTENCY_REQUEST: "consistency", wire.UNMASK_REQUEST: "unmask",
                  wire.UNMASK_REQUEST_TAGS: "unmask"}      # key-reuse rounds' per-client request


def stage_of(session: AgentAggregation | None, frame: bytes) -> str | None:
    """The gateway stage of a frame reaching an agent: in a round that fixes a sparse graph the
    roster opens the reveal stage, and the relayed graph seeds open ShareKeys."""
    config = session.session.config if session is not None else None
    if frame_type(frame) == wire.ROSTER and config is not None and config.reveals_graph:
        return "reveal"
    return STAGE_OF_FRAME.get(frame_type(frame))


def agent_name(i: int) -> str:
    return f"sim-{i:05d}"


def sim_identity(seed: int, i: int) -> SigningKey:
    """A stable identity per (seed, agent): the gateway side can recompute who is who."""
    return SigningKey(np.random.default_rng([seed, i, 1]).bytes(32))


def sim_device_seed(seed: int, i: int) -> bytes:
    """Agent i's provisioned Ed25519 device key (the ESP32 kind of identity), for `--attest`."""
    return np.random.default_rng([seed, i, 3]).bytes(32)


def sim_devices(seed: int, indices) -> list[dict]:
    """The devices.yaml entries `ztfl provision` would write for these agents' device keys."""
    from ztfl.attestation.software_identity import public_key_of
    return [{"agent_id": agent_name(i), "profile": "esp32", "root": "software",
             "device_public_key": public_key_of(sim_device_seed(seed, i)).hex()} for i in indices]


SIM_VALIDITY = (0, certs.MAX_U32)        # simulation certificates never expire


def sim_root(seed: int) -> SigningKey:
    """The simulation's root CA key: anyone with the seed can issue, so only for benches and tests."""
    return SigningKey(np.random.default_rng([seed, 0, 4]).bytes(32))


def sim_certificate(seed: int, federation: str, device_id: str, role: str, key: SigningKey,
                    serial: int) -> certs.Certificate:
    return certs.issue(sim_root(seed), federation=federation, device_id=device_id, role=role,
                       public_key=bytes(key.verify_key), not_before=SIM_VALIDITY[0], not_after=SIM_VALIDITY[1],
                       serial=serial)


def sim_gateway(seed: int, federation: str, gateway: str) -> tuple[SigningKey, certs.Certificate]:
    """The gateway's identity key and certificate in a simulated federation."""
    key = SigningKey(np.random.default_rng([seed, 0, 5]).bytes(32))
    return key, sim_certificate(seed, federation, gateway, "gateway", key, serial=1 << 32)


def write_sim_trust(directory, seed: int, federation: str, gateway: str) -> dict:
    """Write a gateway's trust files from the simulation root into `directory`; returns the
    `trust:` section of its gateway.yaml."""
    from pathlib import Path
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    key, cert = sim_gateway(seed, federation, gateway)
    (out / "root.pub").write_text(bytes(sim_root(seed).verify_key).hex() + "\n")
    (out / "identity.crt").write_bytes(cert.encode())
    (out / "identity.key").write_bytes(bytes(key))
    os.chmod(out / "identity.key", 0o600)
    return {"anchor": str(out / "root.pub"), "certificate": str(out / "identity.crt"),
            "identity_key": str(out / "identity.key")}


def sim_update(seed: int, i: int, dim: int) -> np.ndarray:
    """The update agent i contributes: small normal deltas, as a trained model's would be."""
    return np.random.default_rng([seed, i, 2]).normal(0.0, 0.05, size=dim).astype(np.float32)


@dataclass
class SimAgent:
    index: int
    name: str
    identity: SigningKey
    drop: bool
    certificate: bytes = b""
    trust: certs.TrustStore | None = None
    session: AgentAggregation | None = None
    announce: RoundAnnounce | None = None
    sent_masked: bool = False
    keyrings: AgentKeyrings = field(default_factory=AgentKeyrings)
    privacy: PrivacyGuard = field(default_factory=PrivacyGuard.in_memory)   # default floor, ledger in memory
    missing: int | None = None          # the round it is missing (miss_plan); back after its end


class SimFleet:
    def __init__(self, broker_url: str, indices: list[int], dim: int, seed: int = 0,
                 drop: set[int] = frozenset(), federation: str = "bench", gateway: str = "fog1",
                 client_id: str = "", heartbeat_s: float = 0.0, stall: tuple[str, ...] = (),
                 stall_only: set[int] | None = None, resume_file: str | None = None,
                 drop_plan: dict[int, tuple[int, str]] | None = None, duplicate: bool = False,
                 miss_plan: dict[int, tuple[int, str]] | None = None, attest: bool = False):
        """Fault injection for tests, all off by default:
        `heartbeat_s` > 0: heartbeat every agent (a production gateway marks silent agents offline);
        `stall[i]`: in attempt i of a round, agents (those in `stall_only`, default all) hold the
        frames of that stage unanswered, until `resume_file` exists (a gateway waits there: tests
        kill it or restart the broker at a known point);
        `drop_plan[agent index] = (round, stage)`: that agent dies when that stage's frame arrives;
        `duplicate`: every frame is received twice and published twice (QoS 1 redelivery);
        `miss_plan[agent index] = (round, stage)`: that agent goes offline when that stage's frame
        arrives and comes back online once the round ended;
        `attest`: every seated agent answers the announcement's nonce with device-key evidence
        (`sim_devices` lists the keys for the gateway); `stall[i] == "attest"` holds it."""
        self.topics = Topics(federation, gateway)
        self.dim, self.seed = dim, seed
        self.heartbeat_s, self.stall = heartbeat_s, tuple(stall)
        self.stall_only, self.resume_file = stall_only, resume_file
        self.drop_plan, self.duplicate = dict(drop_plan or {}), duplicate
        self.miss_plan = dict(miss_plan or {})
        self.held: list[tuple[SimAgent, bytes]] = []
        self.attest = attest
        self.held_evidence: list[tuple[str, bytes]] = []      # (topic, evidence) not yet sent
        self.dead: set[str] = set()
        self.next_heartbeat = 0.0
        self.stalled = 0
        self.agents = {agent_name(i): SimAgent(i, agent_name(i), sim_identity(seed, i), i in drop)
                       for i in indices}
        anchor = bytes(sim_root(seed).verify_key)
        # The announcement's structure is checked once for the whole fleet (signatures not: each
        # agent verifies those it uses with its own store), as one parse served every agent before.
        self.roster_trust = certs.TrustStore(anchor, federation)
        for a in self.agents.values():
            a.certificate = sim_certificate(seed, federation, a.name, "agent", a.identity, a.index).encode()
            a.trust = certs.TrustStore(anchor, federation)
        base = self.topics.base
        self.transport = MqttTransport(BrokerConfig(url=broker_url, client_id=client_id or f"simfleet-{indices[0]}",
                                                    keepalive_s=60),
                                       [f"{base}/broadcast/round", f"{base}/broadcast/protocol",
                                        f"{base}/broadcast/to/+/protocol", f"{base}/broadcast/revocations"],
                                       MAX_PAYLOAD)
        self.rejected = 0
        self.ended = False
        self.cpu_seconds = 0.0
        # CPU seconds of the agents' work per gateway stage (frame handled, reply built and sent),
        # plus "announce" (seating every agent): where a fleet's time goes.
        self.cpu_by_stage: dict[str, float] = {}

    def start(self) -> None:
        self.transport.start()
        for a in self.agents.values():
            hello = Hello(a.name, "x86-64-gateway", "cnn-lstm", 32, "onnxruntime", 100, "device-key",
                          bytes(a.identity.verify_key).hex(), certificate_text(a.certificate))
            # Retained, as a real agent's: a gateway that restarts still learns who we are.
            self.transport.publish(self.topics.agent(a.name, "hello"), hello.encode(), retain=True)

    def _heartbeats(self) -> None:
        for a in self.agents.values():
            if a.name in self.dead or a.missing is not None or \
                    (a.session is None and a.drop and a.announce is not None):
                continue                       # dropped out: stays silent
            state = "training" if a.session is not None else "online"
            hb = Heartbeat(a.name, state, a.announce.round if a.announce else 0, -1, 0, 0)
            self.transport.publish(self.topics.agent(a.name, "heartbeat"), hb.encode())

    def _send(self, a: SimAgent, frames) -> None:
        ann = a.announce
        for kind, frame in frames:
            if kind == "masked":
                a.sent_masked = True
            env = Envelope(ann.round, ann.attempt, ann.cohort, kind, frame).encode()
            for _ in range(2 if self.duplicate else 1):
                self.transport.publish(self.topics.agent(a.name, kind), env)

    def _deliver(self, a: SimAgent, body: bytes) -> None:
        if a.session is None:
            return
        if a.drop and frame_type(body) == wire.SHARES_RELAY:
            # Drops out here: never masks; the broker would now deliver its MQTT will.
            self._end_session(a)
            offline = Heartbeat(a.name, "offline", a.announce.round, -1, 0, 0)
            self.transport.publish(self.topics.agent(a.name, "heartbeat"), offline.encode())
            return
        stage = stage_of(a.session, body)
        dies = self.drop_plan.get(a.index) == (a.announce.round, stage)
        if dies or self.miss_plan.get(a.index) == (a.announce.round, stage):
            if dies:
                self.dead.add(a.name)
            else:
                a.missing = a.announce.round
            self._end_session(a)
            offline = Heartbeat(a.name, "offline", a.announce.round, -1, 0, 0)
            self.transport.publish(self.topics.agent(a.name, "heartbeat"), offline.encode())
            return
        attempt = a.announce.attempt
        if attempt < len(self.stall) and stage == self.stall[attempt] and \
                (self.stall_only is None or a.index in self.stall_only) and not self._resumed():
            self.stalled += 1
            self.held.append((a, body))
            return
        for _ in range(2 if self.duplicate else 1):
            self._answer(a, body)

    def _resumed(self) -> bool:
        return self.resume_file is not None and os.path.exists(self.resume_file)

    def _release_held(self) -> None:
        evidence, self.held_evidence = self.held_evidence, []
        for topic, payload in evidence:
            self.transport.publish(topic, payload)    # late: a gateway that moved on refuses it
        held, self.held = self.held, []
        for a, body in held:
            if a.session is not None:
                self._answer(a, body)

    def _answer(self, a: SimAgent, body: bytes) -> None:
        if a.session is None:
            return
        c0 = time.process_time()
        stage = stage_of(a.session, body) or "other"
        try:
            frames = a.session.receive(body)
            config = a.session.session.config
            if a.session.wants_input and config is not None:
                frames = frames + a.session.provide_input(sim_update(self.seed, a.index, config.dim), 1)
            self._send(a, frames)
        except (ProtocolError, ValueError) as exc:      # ValueError: an update the announced DP refuses
            self.rejected += 1
            print(f"{a.name}: frame refused: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            self.cpu_by_stage[stage] = self.cpu_by_stage.get(stage, 0.0) + time.process_time() - c0

    def _end_session(self, a: SimAgent) -> None:
        if a.session is not None:
            a.keyrings.finish(a.announce.cohort, a.session.session)
        a.session = None

    def _on_round(self, payload: bytes) -> None:
        doc = json.loads(payload) if payload[:1] == b"{" else {}
        if isinstance(doc, dict) and "outcome" in doc:
            end = RoundEnd.decode(payload)
            self.ended = True
            for a in self.agents.values():
                if a.announce is not None and (a.announce.round, a.announce.attempt, a.announce.cohort) == \
                        (end.round, end.attempt, end.cohort):
                    self._end_session(a)
                if a.missing is not None and a.missing == end.round:
                    a.missing = None           # back online for the next round
                    online = Heartbeat(a.name, "online", end.round, -1, 0, 0)
                    self.transport.publish(self.topics.agent(a.name, "heartbeat"), online.encode())
            return
        c0 = time.process_time()
        ann = RoundAnnounce.decode(payload)
        now = int(time.time())
        try:
            roster = check_roster(self.roster_trust, ann, now)
        except Refusal as exc:
            self.rejected += 1
            print(f"announcement refused ({exc.reason}): {exc}", file=sys.stderr)
            return
        for name, sid, _ in ann.participants:
            a = self.agents.get(name)
            if a is None or name in self.dead:
                continue
            self._end_session(a)
            a.announce = ann
            try:
                seat = seat_in(a.trust, ann, self.topics.gateway, a.name, bytes(a.identity.verify_key), now, roster)
                keys = a.keyrings.keys_for(ann.cohort, ann.keying, time.monotonic())
            except (Refusal, ValueError) as exc:
                self.rejected += 1
                print(f"{a.name}: announcement refused ({getattr(exc, 'reason', 'malformed')}): {exc}",
                      file=sys.stderr)
                continue
            a.session = AgentAggregation(sid=seat.sid, identity=a.identity, server_pk=seat.server_key,
                                         peers=seat.peers, round_id=ann.keying.protocol_round, keys=keys,
                                         key_reuse=ann.keying.key_reuse, dp=ann.dp_params,
                                         check_peer=seat.checker(a.trust), privacy=a.privacy)
            if self.attest:
                self._attest(a, ann)
        self.cpu_by_stage["announce"] = self.cpu_by_stage.get("announce", 0.0) + time.process_time() - c0

    def _on_revocations(self, payload: bytes) -> None:
        """Each agent keeps the newest genuine revocation list (as agent.daemon does)."""
        signed = certs.SignedRevocations.decode(payload)
        now = int(time.time())
        for store in [self.roster_trust] + [a.trust for a in self.agents.values()]:
            try:
                store.accept_revocations(signed, now)
            except Refusal as exc:
                self.rejected += 1
                print(f"revocation list refused ({exc.reason}): {exc}", file=sys.stderr)
                return

    def _attest(self, a: SimAgent, ann: RoundAnnounce) -> None:
        from ztfl.attestation.software_identity import sign_software_quote
        from ztfl.protocol.rounds import attempt_id
        evidence = sign_software_quote(sim_device_seed(self.seed, a.index), bytes.fromhex(ann.nonce),
                                       attempt_id(ann.round, ann.attempt), bytes(a.identity.verify_key))
        topic = self.topics.agent(a.name, "attest")
        if ann.attempt < len(self.stall) and self.stall[ann.attempt] == "attest" and \
                (self.stall_only is None or a.index in self.stall_only) and not self._resumed():
            self.stalled += 1
            self.held_evidence.append((topic, evidence.to_bytes()))
            return
        self.transport.publish(topic, evidence.to_bytes())

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            kind = self.topics.parse_broadcast_topic(topic)
            if kind == "round":
                return self._on_round(payload)
            if kind == "revocations":
                return self._on_revocations(payload)
            env = Envelope.decode(payload, MAX_PAYLOAD)
        except (Refusal, ValueError) as exc:
            self.rejected += 1
            print(f"refused {topic}: {exc}", file=sys.stderr)
            return
        prefix = f"{self.topics.base}/broadcast/to/"
        if topic.startswith(prefix):
            a = self.agents.get(topic[len(prefix):].split("/")[0])
            if a is not None and a.announce is not None and env.round == a.announce.round:
                self._deliver(a, env.body)
            return
        for a in self.agents.values():
            if a.announce is not None and env.round == a.announce.round:
                self._deliver(a, env.body)

    def run(self, timeout: float, until_round_end: bool = True) -> dict:
        c0 = time.process_time()
        deadline = time.monotonic() + timeout
        self.start()
        try:
            while not (self.ended and until_round_end) and time.monotonic() < deadline:
                msg = self.transport.get(0.2)
                if msg is not None:
                    self.handle(msg.topic, msg.payload)
                if (self.held or self.held_evidence) and self._resumed():
                    self._release_held()
                if self.heartbeat_s and time.monotonic() >= self.next_heartbeat:
                    self.next_heartbeat = time.monotonic() + self.heartbeat_s
                    self._heartbeats()
        finally:
            self.transport.stop()
        self.cpu_seconds = time.process_time() - c0
        return {"agents": len(self.agents), "ended": self.ended, "rejected": self.rejected,
                "masked_sent": sum(a.sent_masked for a in self.agents.values()),
                "key_setups": sum(a.keyrings.key_setups(c) for a in self.agents.values() for c in a.keyrings.by_cohort),
                "cpu_seconds": round(self.cpu_seconds, 3),
                "cpu_by_stage": {k: round(v, 3) for k, v in sorted(self.cpu_by_stage.items())},
                "bytes_out": self.transport.bytes_out, "bytes_in": self.transport.bytes_in,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="simulated agents (one MQTT connection for all)")
    p.add_argument("--broker", required=True)
    p.add_argument("--agents", type=int, required=True)
    p.add_argument("--first-id", type=int, default=1)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drop", default="", help="comma-separated agent indices that drop after ShareKeys")
    p.add_argument("--federation", default="bench")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--gateway", default="fog1")
    p.add_argument("--heartbeat-s", type=float, default=0.0)
    p.add_argument("--stall", default="", help="comma-separated stage per attempt in which nobody answers")
    p.add_argument("--stall-only", default="", help="comma-separated agent indices that stall (default all)")
    p.add_argument("--resume-file", default=None, help="held frames are answered once this file exists")
    p.add_argument("--drop-plan", default="", help="index:round:stage,... agents that die at that point")
    p.add_argument("--duplicate", action="store_true", help="receive and publish every frame twice")
    p.add_argument("--miss-plan", default="", help="index:round:stage,... agents offline from that point "
                                                   "until the round ends")
    p.add_argument("--attest", action="store_true", help="answer each round's nonce with device-key evidence")
    p.add_argument("--serve", action="store_true", help="keep going after a round ends (until --timeout)")
    args = p.parse_args(argv)
    indices = list(range(args.first_id, args.first_id + args.agents))
    drop = {int(x) for x in args.drop.split(",") if x}
    fleet = SimFleet(args.broker, indices, args.dim, args.seed, drop, args.federation, args.gateway,
                     heartbeat_s=args.heartbeat_s, stall=tuple(s for s in args.stall.split(",") if s),
                     stall_only={int(x) for x in args.stall_only.split(",") if x} or None,
                     resume_file=args.resume_file, duplicate=args.duplicate,
                     drop_plan={int(i): (int(r), st) for i, r, st in
                                (x.split(":") for x in args.drop_plan.split(",") if x)},
                     miss_plan={int(i): (int(r), st) for i, r, st in
                                (x.split(":") for x in args.miss_plan.split(",") if x)},
                     attest=args.attest)
    print(json.dumps(fleet.run(args.timeout, until_round_end=not args.serve)), flush=True)
    return 0 if fleet.ended else 1


if __name__ == "__main__":
    sys.exit(main())
