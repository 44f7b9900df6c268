"""Certificates a gateway must not get a round accepted with, sent on the wire through a real
mosquitto to agents that check them: simulated CPython agents (agent.sim: the real client code,
agent.trust) and the ESP32 firmware in the real MicroPython unix port.

The test plays a gateway holding a genuine gateway certificate that seats, next to the victims,
a peer whose certificate was revoked (the signed revocation list is on the retained broadcast
topic), one that expired, one issued for another federation, peers certified by a root of its own
(Sybils), and finally signs with a key certified as an agent. Each announcement is refused with
its typed reason, and no victim publishes anything but its hello and heartbeats: no key, no
share, no masked input.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import paho.mqtt.client as paho
from nacl.signing import SigningKey

from ztfl.agent.sim import agent_name, sim_gateway, sim_identity, sim_root
from ztfl.fednet.messages import CERTIFIED_ANNOUNCE, RoundAnnounce, certificate_text
from ztfl.firmware_tools.micropython_host import firmware_device_config, start_firmware_agent
from ztfl.firmware_tools.records import encode_records, write_device_dir
from ztfl.protocol import certs

SEED, FED, GW = 0, "bench", "fog1"
BASE = f"ztfl/{FED}/{GW}"
FOREVER = (0, certs.MAX_U32)


def issue(device_id: str, role: str, key: SigningKey, serial: int, federation: str = FED,
          validity: tuple[int, int] = FOREVER, root: SigningKey | None = None) -> bytes:
    return certs.issue(root or sim_root(SEED), federation=federation, device_id=device_id, role=role,
                       public_key=bytes(key.verify_key), not_before=validity[0], not_after=validity[1],
                       serial=serial).encode()


class Watcher:
    """Everything the victims publish (what the gateway sees), and a publisher for the test."""

    def __init__(self, port: int):
        self.seen: list[tuple[str, bytes]] = []
        ready = threading.Event()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="malicious-gateway")
        self.c.on_connect = lambda cl, u, f, rc, p=None: (cl.subscribe(f"{BASE}/agents/#", 1), ready.set())
        self.c.on_message = lambda cl, u, m: self.seen.append((m.topic, bytes(m.payload)))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert ready.wait(5)

    def publish(self, kind: str, payload: bytes, retain: bool = False) -> None:
        self.c.publish(f"{BASE}/broadcast/{kind}", payload, qos=1, retain=retain).wait_for_publish(5)

    def kinds(self, agent: str) -> set[str]:
        return {t.rsplit("/", 1)[1] for t, _ in self.seen if t.split("/")[4] == agent}

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def wait_for(path, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in {path.name}:\n{content[-3000:]}")


def announce(watcher: Watcher, attempt: int, variant: str, seats: list, server_cert: bytes | None,
             server_key: SigningKey) -> None:
    ann = RoundAnnounce(1, attempt, f"{variant}-32", variant, 32, 0, "00" * 32, seats, 2, "00" * 32,
                        {"masked": 60.0}, 1, bytes(server_key.verify_key).hex(),
                        version=CERTIFIED_ANNOUNCE if server_cert else None,
                        server_cert=certificate_text(server_cert) if server_cert else None)
    watcher.publish("round", ann.encode())


def test_revoked_expired_foreign_and_sybil_certificates_are_refused_on_the_wire(mosquitto, tmp_path):
    gw_key, gw_cert = sim_gateway(SEED, FED, GW)
    watcher = Watcher(mosquitto.port)
    # The revocation list (signed by an intermediate the root certified), retained before anyone connects.
    inter = SigningKey.generate()
    inter_cert = certs.Certificate.decode(issue(GW, "intermediate", inter, 900))
    now = int(time.time())
    watcher.publish("revocations", certs.SignedRevocations(inter_cert, certs.sign_revocations(
        inter, number=1, issued_at=now, next_update=now + 3600, revoked=[901])).encode(), retain=True)

    board_key = SigningKey.generate()
    rng = np.random.default_rng(0)
    cfg = firmware_device_config("esp-1", FED, GW, "127.0.0.1", mosquitto.port, ["normal", "dos"],
                                 bytes(board_key), bytes(board_key.verify_key), heartbeat_s=0.5,
                                 trust={"certificate": certificate_text(issue("esp-1", "agent", board_key, 800)),
                                        "trust_anchor": bytes(sim_root(SEED).verify_key).hex()})
    board = start_firmware_agent(write_device_dir(tmp_path / "esp-1", cfg, encode_records(
        rng.random((8, 6)).astype(np.float32), rng.integers(0, 2, 8))), tmp_path / "esp-1.log")
    fleet_log = tmp_path / "fleet.log"
    fleet = subprocess.Popen([sys.executable, "-m", "ztfl.agent.sim", "--broker", mosquitto.url, "--agents", "2",
                              "--dim", "4", "--serve", "--timeout", "120", "--federation", FED],
                             stdout=subprocess.DEVNULL, stderr=open(fleet_log, "wb"))
    victims = [agent_name(1), agent_name(2)]
    try:
        deadline = time.monotonic() + 30
        while not all("hello" in watcher.kinds(a) for a in victims + ["esp-1"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all("hello" in watcher.kinds(a) for a in victims + ["esp-1"]), watcher.seen
        time.sleep(0.5)                     # the retained revocation list is delivered on subscribing

        own = [[a, i + 1, certificate_text(issue(a, "agent", sim_identity(SEED, i + 1), i + 1))]
               for i, a in enumerate(victims)]
        board_seat = [["esp-1", 1, cfg["certificate"]]]
        sybil_root = SigningKey.generate()          # a CA the gateway made itself
        peers = {
            "certificate_revoked": lambda d: issue(d, "agent", SigningKey.generate(), 901),
            "certificate_expired": lambda d: issue(d, "agent", SigningKey.generate(), 902,
                                                   validity=(now - 7200, now - 3600)),
            "certificate_federation": lambda d: issue(d, "agent", SigningKey.generate(), 903, federation="other"),
            "certificate_issuer": lambda d: issue(d, "agent", SigningKey.generate(), 904, root=sybil_root),
        }
        for attempt, (reason, make) in enumerate(peers.items()):
            peer = [["peer-9", 9, certificate_text(make("peer-9"))]]
            announce(watcher, attempt, "cnn-lstm", own + peer, gw_cert.encode(), gw_key)
            wait_for(fleet_log, f"({reason})")
            announce(watcher, attempt, "micro", board_seat + peer, gw_cert.encode(), gw_key)
            wait_for(tmp_path / "esp-1.log", f"round 1.{attempt} refused ({reason})")

        # A forged root signature (the anchor's key id, signed by the gateway): the board checks every
        # signature at once; the CPython clients check it before a peer's key is first used
        # (tests/adversary/test_sybil.py).
        honest = certs.Certificate.decode(issue("peer-9", "agent", SigningKey.generate(), 905))
        forged = honest.encode()[:-64] + gw_key.sign(honest.signed_bytes()).signature
        announce(watcher, 10, "micro", board_seat + [["peer-9", 9, certificate_text(forged)]], gw_cert.encode(),
                 gw_key)
        wait_for(tmp_path / "esp-1.log", "round 1.10 refused (certificate_signature)")

        # The gateway's round key certified as an agent, not as a gateway; then bare keys (version 1).
        agent_cert = issue(victims[0], "agent", sim_identity(SEED, 1), 1)
        announce(watcher, 11, "cnn-lstm", own, agent_cert, sim_identity(SEED, 1))
        wait_for(fleet_log, "(certificate_role)")
        announce(watcher, 11, "micro", board_seat, agent_cert, sim_identity(SEED, 1))
        wait_for(tmp_path / "esp-1.log", "round 1.11 refused (certificate_role)")
        bare = [[a, i + 1, bytes(sim_identity(SEED, i + 1).verify_key).hex()] for i, a in enumerate(victims)]
        announce(watcher, 12, "cnn-lstm", bare, None, gw_key)
        wait_for(fleet_log, "(uncertified)")
        announce(watcher, 12, "micro", [["esp-1", 1, bytes(board_key.verify_key).hex()]], None, gw_key)
        wait_for(tmp_path / "esp-1.log", "round 1.12 refused (uncertified)")

        time.sleep(1.0)
        for victim in victims + ["esp-1"]:
            assert watcher.kinds(victim) <= {"hello", "heartbeat"}, (victim, watcher.kinds(victim))
        assert board.poll() is None and fleet.poll() is None
    finally:
        for proc in (board, fleet):
            proc.terminate()
            proc.wait(timeout=10)
        watcher.close()
