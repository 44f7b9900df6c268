"""An agent that sends messages far larger than any legitimate one, and floods the gateway.

Every size is bounded on its way: the broker takes no packet above the largest legitimate
message (it disconnects the sender after the fixed header, before buffering the payload), every
client announces an MQTT 5 Maximum Packet Size on CONNECT (the broker does not send it more: the
CPython transport and the firmware's client alike), the gateway drops a payload above its limit
undecoded and queues at most its inbox bound, and counts what it drops by a typed refusal in
/metrics. Through the real broker, in the middle of a round: the gateway stays alive, its peak
memory grows by far less than what was thrown at it, and the round commits exactly.
"""
from __future__ import annotations

import threading
import urllib.request
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from faults.conftest import Federation, federation  # noqa: F401  (the fixture of tests/faults)
from ztfl.attestation.provision import BROKER_MAX_PACKET_BYTES, Device, Fleet, mosquitto_conf
from ztfl.fednet.transport import (LARGEST_MESSAGE_BYTES, BrokerConfig, Inbound, Inbox, MqttTransport,
                                   largest_message_bytes, publish_packet_bytes)
from ztfl.firmware_tools.micropython_host import run_json

AGENTS = 5
INBOX_BYTES = 8 * 1024 * 1024       # the gateway's inbox in this test: two largest messages
OVERSIZED = 128 * 1024 * 1024       # what the broker of old forwarded (its limit was MQTT's 256 MB)
FLOOD = 24                          # junk messages of the gateway's size limit, ~100 MB in all


def test_the_limits_are_computed_from_the_largest_model():
    from ztfl.models.spec import ModelSpec, layout
    # The largest model a gateway builds (cnn-lstm "default"; its size grows with the classes,
    # 32 assumed) and the micro model (capped) beside it: a masked input of 64-bit words.
    layouts = {v: layout(ModelSpec(v, 121, 32, "default").build()) for v in ("cnn-lstm", "micro")}
    assert largest_message_bytes(layouts) == LARGEST_MESSAGE_BYTES
    # The torch-free layers pin the numbers; they must agree with the computation.
    assert BROKER_MAX_PACKET_BYTES == publish_packet_bytes(LARGEST_MESSAGE_BYTES)
    fleet = Fleet("f", "g", [Device("pi-1", "raspberry-pi-4")])
    assert f"\nmax_packet_size {BROKER_MAX_PACKET_BYTES}\n" in mosquitto_conf(fleet, Path("fleet"))
    from ztfl.gateway.config import GatewayConfig
    assert GatewayConfig().max_payload == LARGEST_MESSAGE_BYTES
    # Eight bytes a parameter: the masked input dominates the model blob (one byte a parameter).
    small = {v: layout(ModelSpec(v, 121, 5, "small").build()) for v in ("cnn-lstm", "micro")}
    dim = sum(int(np.prod(shape)) for _, shape in small["micro"])
    assert 8 * dim < largest_message_bytes(small) < 8 * dim + 512


def test_inbox_refuses_what_exceeds_its_messages_or_bytes():
    inbox = Inbox(max_messages=3, max_bytes=100)
    assert inbox.put(Inbound("t", b"a" * 60)) and inbox.put(Inbound("t", b"b" * 40))
    assert not inbox.put(Inbound("t", b"c"))                    # 101 bytes
    assert inbox.get(0).payload == b"a" * 60 and inbox.bytes == 40
    assert inbox.put(Inbound("t", b"")) and inbox.put(Inbound("t", b""))
    assert not inbox.put(Inbound("t", b""))                     # a fourth message
    assert [inbox.get(0).payload for _ in range(3)] == [b"b" * 40, b"", b""]
    assert inbox.get(0.01) is None and inbox.bytes == 0


def _retained(url: str, messages: dict[str, int]) -> None:
    """Retained messages of these sizes, so that a client subscribing later is offered them."""
    port = int(url.rsplit(":", 1)[1])
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        for topic, size in messages.items():
            pub.publish(topic, b"x" * size, qos=1, retain=True).wait_for_publish(10)
    finally:
        pub.loop_stop()
        pub.disconnect()


def test_clients_announce_their_limit_and_keep_to_the_brokers(mosquitto):
    base = "ztfl/f/g/broadcast"
    _retained(mosquitto.url, {f"{base}/model-micro": 20_000, f"{base}/round": 1_000})
    small = MqttTransport(BrokerConfig(url=mosquitto.url, client_id="board-like"), [f"{base}/+"], 16384)
    small.start()
    try:
        got = small.get(5)
        assert got is not None and len(got.payload) == 1_000
        assert small.get(1.0) is None and small.oversized == 0      # never sent: not even drained
        assert small.broker_max_packet == publish_packet_bytes(LARGEST_MESSAGE_BYTES)
        # Above the broker's limit: refused here, the connection stays and carries the next one.
        small.publish(f"{base}/status", b"y" * LARGEST_MESSAGE_BYTES * 2)
        small.publish(f"{base}/status", b"z")
        got = small.get(5)
        assert small.unsent == 1 and small.connected and got is not None and got.payload == b"z"
    finally:
        small.stop()


_BOARD = r"""
import sys, json, time
from ztfw.mqtt import MQTTClient
d = json.loads(sys.stdin.read())
c = MQTTClient("board", "127.0.0.1", d["port"], max_packet=d["max_payload"])
got = []
c.set_callback(lambda topic, payload: got.append([topic.decode(), len(payload)]))
c.connect()
c.subscribe(d["topics"], 1)
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 1500:
    c.check_msg(100)
c.disconnect()
print(json.dumps({"got": got, "drained": c.oversized, "broker_max_packet": c.broker_max_packet}))
"""


def test_firmware_client_announces_its_limit(mosquitto):
    base = "ztfl/f/g/broadcast"
    _retained(mosquitto.url, {f"{base}/model-micro": 20_000, f"{base}/round": 1_000})
    out = run_json(_BOARD, {"port": mosquitto.port, "max_payload": 16384, "topics": f"{base}/+"}, timeout=60)
    # The 20 kB model was never sent to the board (MQTT 5 Maximum Packet Size), not drained by it.
    assert out == {"got": [[f"{base}/round", 1_000]], "drained": 0,
                   "broker_max_packet": publish_packet_bytes(LARGEST_MESSAGE_BYTES)}


def _reset_peak_rss(pid: int) -> None:
    """Start the process's peak resident set afresh (its start-up peak would hide a later one)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), bytes."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _metric(federation: Federation, name: str) -> float:
    port = (federation.state / "http.port").read_text().strip()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        lines = r.read().decode().splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith(name))


class Mallory:
    """An MQTT 5 client on an agent topic, as an agent whose certificate the broker accepted."""

    def __init__(self, url: str):
        self.port = int(url.rsplit(":", 1)[1])
        self.disconnected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_oversized_and_flooding_agent_during_a_round(federation):
    federation.configure(agents=AGENTS, rounds=1, linger_s=10,
                         broker={"url": federation.broker_url, "inbox_bytes": INBOX_BYTES})
    resume = federation.resume_file()
    federation.start_fleet(AGENTS, "--stall", "masked", "--resume-file", str(resume))
    federation.start_gateway()
    federation.wait_stage("masked", attempt=0)
    pid = federation.gateway.pid
    _reset_peak_rss(pid)
    peak_before = _peak_rss(pid)
    up_before = _metric(federation, 'ztfl_bytes_total{direction="up"}')
    refused_before = federation.status()["refusals"]
    topic = "ztfl/bench/fog1/agents/mallory/masked"

    # 1. Far above the broker's limit: the sender loses its connection, nothing is forwarded.
    mallory = Mallory(federation.broker_url)
    try:
        mallory.client.publish(topic, bytes(OVERSIZED), qos=1)
        assert mallory.disconnected.wait(30), "the broker kept a client that sent a 128 MB packet"
    finally:
        mallory.close()
    # 2. Within the broker's limit, above the gateway's (a short topic leaves room): dropped
    #    undecoded. 3. A flood of junk of the limit's size, faster than the gateway may handle it.
    mallory = Mallory(federation.broker_url)
    try:
        mallory.client.publish(topic, bytes(LARGEST_MESSAGE_BYTES + 1), qos=1).wait_for_publish(30)
        for _ in range(FLOOD):
            info = mallory.client.publish(topic, bytes(LARGEST_MESSAGE_BYTES), qos=1)
        info.wait_for_publish(60)
    finally:
        mallory.close()

    def counted(status):
        refused = {k: v - refused_before.get(k, 0) for k, v in status["refusals"].items()}
        return (refused.get("oversized") == 1
                and refused.get("malformed", 0) + refused.get("inbox_full", 0) == FLOOD)

    status = federation.wait_for(counted, "every oversized and junk message counted", timeout=120)
    assert federation.gateway.poll() is None
    up = _metric(federation, 'ztfl_bytes_total{direction="up"}') - up_before
    assert up < (FLOOD + 1) * LARGEST_MESSAGE_BYTES, "the 128 MB packet reached the gateway"
    grown = _peak_rss(pid) - peak_before
    assert grown < INBOX_BYTES + 4 * LARGEST_MESSAGE_BYTES + 48 * 1024 * 1024, \
        f"peak memory grew by {grown / 2**20:.0f} MiB under a {(OVERSIZED + FLOOD * LARGEST_MESSAGE_BYTES) / 2**20:.0f} MiB attack"
    assert status["rejected"] == 1                              # the oversized one, by the transport
    assert _metric(federation, 'ztfl_rejected_messages_total{reason="oversized"}') == 1

    # The round goes on: the held masked inputs are sent, the round commits, exactly.
    resume.write_text("go")
    federation.wait_for(lambda s: s["models"]["cnn-lstm"]["version"] == 1, "round committed", timeout=180)
    rounds = federation.check_versions()
    assert [(r["round"], r["attempt"], r["status"]) for r in rounds] == [(1, 0, "committed")]
