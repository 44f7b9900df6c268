"""A gateway announces a key-reuse round and signs a classic ROUND_CONFIG.

The announcement decides what the agent's keyring does with the round's keys: a key-reuse round's
are kept for the rest of the epoch. The signed configuration decides what the session does: a
classic round Shamir-shares the mask secret s_sk with the group. Together, a board would deal
shares of the secret it then keeps using. Both agents (the CPython agent's AgentAggregation, the
firmware agent in the real MicroPython unix port) refuse the round at its configuration with
RoundKindMismatch, before even the advertisement leaves: the epoch secret is never shared, the
kept keys are still fresh for the epoch's next round, and the other agents' round goes on.

The frames come from the real ServerSession holding the gateway's identity key: it signs what
it is given, here a classic configuration for a cohort told to reuse its keys.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from ztfl.agent.secagg import AgentAggregation
from ztfl.fednet.messages import Envelope, RoundAnnounce
from ztfl.firmware_tools.micropython_host import command, environment
from ztfl.firmware_tools.records import encode_records, write_device_dir
from ztfl.protocol import wire
from ztfl.protocol.client import ClientSession
from ztfl.protocol.config import RoundConfig, minimum_threshold
from ztfl.protocol.epochs import ClientKeyring, EpochPolicy
from ztfl.protocol.errors import ProtocolError
from ztfl.protocol.server import ServerSession
from ztfl.protocol.simulate import Cohort
from ztfl.protocol.stages import Stage

IDS = (1, 2, 3, 4, 5, 6)            # groups of 6: above the agents' default floor of 5
VICTIM = 1
EPOCH, ROUND = 9, 4
POLICY = EpochPolicy(max_rounds=10)
CLASSIC = RoundConfig(dim=12, threshold=minimum_threshold(len(IDS)), max_clients=len(IDS), max_weight=4)


def frame_type(frame: bytes) -> int:
    return wire.peek(frame).type


def drive(server: ServerSession, answer) -> dict[int, list[bytes]]:
    """One round: each frame the server addresses to client c goes to `answer(c, frame)`, whose
    reply (bytes or None) goes back to the server. Returns the frames each client sent."""
    sent: dict[int, list[bytes]] = {c: [] for c in IDS}
    out = server.round_config()
    for _ in Stage.order()[:-1]:
        for c in IDS:
            frame = out if isinstance(out, bytes) else out.frame_for(c)
            if frame is None:
                continue
            reply = answer(c, frame)
            if reply is not None:
                sent[c].append(reply)
                server.receive(reply)
        out = server.close_stage()
        if server.stage == Stage.ABORTED:
            break
    return sent


class Honest:
    """The other agents: the protocol's client, on keys of the (classic) round they are told of."""

    def __init__(self, cohort: Cohort):
        rng = np.random.default_rng(1)
        self.sessions = {}
        for c in IDS:
            keys = ClientKeyring(POLICY).keys_for(EPOCH, ROUND, 0.0, key_reuse=False)
            self.sessions[c] = ClientSession(c, cohort.identities[c], cohort.directory, keys, ROUND)
            self.sessions[c].set_input(rng.normal(0, 0.1, CLASSIC.dim), 2)

    def answer(self, c: int, frame: bytes) -> bytes | None:
        return self.sessions[c].receive(frame)


def test_bare_session_shares_the_secret_of_keys_it_keeps():
    """What the attack gets from a client that trusts the signed configuration alone: the
    protocol's session deals shares of s_sk (its earlier-round check does not fire on the first
    round of an epoch) and the keyring, told of key reuse, keeps the keys afterwards."""
    cohort = Cohort.create(IDS)
    honest = Honest(cohort)
    keyring = ClientKeyring(POLICY)
    keys = keyring.keys_for(EPOCH, ROUND, 0.0, key_reuse=True)       # what the announcement said
    victim = ClientSession(VICTIM, cohort.identities[VICTIM], cohort.directory, keys, ROUND)
    victim.set_input(np.zeros(CLASSIC.dim), 1)
    honest.sessions[VICTIM] = victim
    server = ServerSession(CLASSIC, cohort.server_identity, cohort.directory, EPOCH, ROUND)
    sent = drive(server, honest.answer)
    assert wire.SHARE_KEYS in [frame_type(f) for f in sent[VICTIM]] and victim.dealt_shares
    assert not keyring.finish(victim)                                  # a survivor: not "exposed"
    assert keyring.keys_for(EPOCH, ROUND + 1, 1.0, key_reuse=True) is keys   # reused, secret dealt


def test_cpython_agent_refuses_before_anything_leaves():
    cohort = Cohort.create(IDS)
    honest = Honest(cohort)
    keyring = ClientKeyring(POLICY)
    keys = keyring.keys_for(EPOCH, ROUND, 0.0, key_reuse=True)
    agent = AgentAggregation(VICTIM, cohort.identities[VICTIM], bytes(cohort.server_identity.verify_key),
                             {c: bytes(cohort.identities[c].verify_key) for c in IDS if c != VICTIM},
                             ROUND, keys, key_reuse=True)
    refusals = []

    def answer(c, frame):
        if c != VICTIM:
            return honest.answer(c, frame)
        try:
            replies = agent.receive(frame)
        except ProtocolError as exc:
            refusals.append(type(exc).__name__)
            return None
        assert len(replies) <= 1
        return replies[0][1] if replies else None

    server = ServerSession(CLASSIC, cohort.server_identity, cohort.directory, EPOCH, ROUND)
    sent = drive(server, answer)
    assert refusals and refusals[0] == "RoundKindMismatch"
    assert sent[VICTIM] == [] and not agent.session.dealt_shares      # not even the advertisement
    assert server.result is not None and VICTIM not in server.result.survivors   # the round went on
    assert not keyring.finish(agent.session)
    kept = keyring.keys_for(EPOCH, ROUND + 1, 1.0, key_reuse=True)
    assert kept is keys and kept.uses == 2                             # the epoch's next round, fresh


# The firmware agent with its MQTT link replaced by a recorder; the session is opened as
# Agent._on_round opens it once the announcement's certificates check out. One JSON line in,
# one JSON line out (prefixed "@"), per frame from the broker.
_BOARD = r"""
import sys, json
from binascii import hexlify, unhexlify
from ztfw import agent_wire
from ztfw.agent import Agent
from ztfw.secagg_client import ClientSession


class Link:
    keepalive = 30

    def __init__(self):
        self.sent = []

    def publish(self, topic, payload, retain=False, qos=0):
        self.sent.append([topic, hexlify(bytes(payload)).decode()])

    def publish_stream(self, topic, length, produce, retain=False, qos=0):
        parts = []
        produce(lambda chunk: parts.append(bytes(chunk)))
        self.publish(topic, b"".join(parts))


def say(doc):
    print("@" + json.dumps(doc))


d = json.loads(sys.stdin.readline())
board = Agent(d["config"], d["dir"])
board.client = Link()
ann = agent_wire.decode_round(unhexlify(d["announce"]))
keys = board.keyring.keys_for(ann.epoch, ann.protocol_round, 0, ann.key_reuse)
directory = {int(k): unhexlify(v) for k, v in d["directory"].items()}
session = ClientSession(d["sid"], board.seed, directory, keys, ann.protocol_round,
                        identity_public=board.public, floor=board.floor)
board.session = session
board.announce = ann
say({"ready": True})
while True:
    line = sys.stdin.readline()
    if not line.strip():
        break
    before = len(board.client.sent)
    board._on_frame(agent_wire.Envelope(unhexlify(line.strip()), board.payload_limit))
    say({"sent": board.client.sent[before:]})
kept = board.keyring.keys_for(ann.epoch, ann.protocol_round + 1, 1, True)
say({"events": board.events, "dealt_shares": session.dealt_shares, "in_round": board.session is not None,
     "kept": kept is keys, "uses": kept.uses, "exposed": board.keyring.exposed})
"""


class Board:
    """The firmware agent in the unix port, fed the frames the broker would deliver to it."""

    def __init__(self, work, setup: dict):
        script = work / "board.py"
        script.write_text(_BOARD)
        self.proc = subprocess.Popen(command(script), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=environment(), text=True)
        assert self._say(json.dumps(setup)) == {"ready": True}

    def _say(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        for out in self.proc.stdout:
            if out.startswith("@"):
                return json.loads(out[1:])
        raise AssertionError(f"the board exited: {self.proc.stderr.read()[-2000:]}")

    def deliver(self, envelope: bytes) -> list:
        return self._say(envelope.hex())["sent"]

    def finish(self) -> dict:
        summary = self._say("")
        self.proc.wait(timeout=30)
        return summary


@pytest.fixture
def board_dir(tmp_path):
    from ztfl.attestation.software_identity import new_device_key
    seed, public = new_device_key()
    rng = np.random.default_rng(2)
    records = encode_records(rng.random((8, 4)).astype(np.float32), rng.integers(0, 2, 8))
    config = {"agent_id": "esp32-1", "federation": "f", "gateway": "g", "device_key": seed.hex(),
              "device_public_key": public.hex(), "classes": ["normal", "dos"],
              "broker": {"host": "127.0.0.1", "port": 1, "tls": False}, "payload_limit_bytes": 16384}
    return write_device_dir(tmp_path / "board", config, records), seed, config


def test_firmware_agent_refuses_before_anything_leaves(board_dir, tmp_path):
    from nacl.signing import SigningKey
    device_dir, seed, config = board_dir
    cohort = Cohort.create(IDS)
    cohort.identities[VICTIM] = SigningKey(seed)        # the board's own device key
    honest = Honest(cohort)
    ann = RoundAnnounce(3, 0, "micro-32", "micro", 32, 0, "00" * 32,
                        [[f"a{c}", c, bytes(cohort.identities[c].verify_key).hex()] for c in IDS],
                        CLASSIC.threshold, "ab" * 32, {"masked": 60.0}, epoch=EPOCH, protocol_round=ROUND,
                        key_reuse=True)
    board = Board(tmp_path, {"config": config, "dir": str(device_dir), "sid": VICTIM, "announce": ann.encode().hex(),
                             "directory": {str(c): bytes(k).hex() for c, k in cohort.directory.items()}})
    published = []

    def answer(c, frame):
        if c != VICTIM:
            return honest.answer(c, frame)
        sent = board.deliver(Envelope(ann.round, ann.attempt, ann.cohort, "protocol", frame).encode())
        published.extend(sent)
        assert len(sent) <= 1
        return Envelope.decode(bytes.fromhex(sent[0][1]), 1 << 24).body if sent else None

    try:
        server = ServerSession(CLASSIC, cohort.server_identity, cohort.directory, EPOCH, ROUND)
        drive(server, answer)
        summary = board.finish()
    finally:
        if board.proc.poll() is None:
            board.proc.kill()
    assert published == [] and not summary["dealt_shares"]             # nothing left the board
    assert any("RoundKindMismatch" in e for e in summary["events"]) and not summary["in_round"]
    assert summary["kept"] and summary["uses"] == 2 and not summary["exposed"]
    assert server.result is not None and VICTIM not in server.result.survivors
