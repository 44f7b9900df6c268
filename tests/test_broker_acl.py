"""The broker `ztfl provision` configures, run for real (mosquitto with TLS and the ACL):
each device writes only under its own agent topics and reads only its gateway's broadcasts;
without a certificate from the fleet CA nobody connects, and a device `ztfl provision revoke`
revoked no longer connects once the broker loads the new CRL."""
from __future__ import annotations

import queue
import ssl
import threading

import paho.mqtt.client as mqtt
import pytest

from ztfl.attestation.provision import Device, Fleet, listener_options, provision, revoke
from ztfl.services import start_mosquitto

FED, GW = "plant", "fog1"
BASE = f"ztfl/{FED}/{GW}"
NOT_AUTHORISED = 0x87


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    out = tmp_path_factory.mktemp("pki")
    provision(Fleet(FED, GW, [Device("pi-01", "raspberry-pi-4"), Device("pi-02", "raspberry-pi-4"),
                              Device("esp-01", "esp32")]), out)
    return out


@pytest.fixture
def broker(pki, tmp_path):
    svc = start_mosquitto(workdir=tmp_path / "broker", allow_anonymous=False, extra_config=listener_options(pki))
    yield svc
    svc.stop()


class Client:
    """A paho MQTT 5 client with synchronous helpers; records what it receives."""

    def __init__(self, port: int, name: str, cert: str | None, key: str | None, ca: str):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{name}", protocol=mqtt.MQTTv5)
        ctx = ssl.create_default_context(cafile=ca)
        if cert:
            ctx.load_cert_chain(cert, key)
        self.c.tls_set_context(ctx)
        self.connected = threading.Event()
        self.connect_rc = None
        self.acks: dict[int, "queue.Queue"] = {}
        self.messages: "queue.Queue[tuple[str, bytes]]" = queue.Queue()
        self.c.on_connect = self._on_connect
        self.c.on_publish = lambda c, u, mid, rc, props: self._ack(mid, rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self._ack(mid, rcs[0])
        self.c.on_message = lambda c, u, msg: self.messages.put((msg.topic, msg.payload))
        self.port = port

    def _on_connect(self, client, userdata, flags, rc, props):
        self.connect_rc = rc
        self.connected.set()

    def _ack(self, mid, rc):
        self.acks.setdefault(mid, queue.Queue()).put(rc)

    def connect(self) -> None:
        self.c.connect("127.0.0.1", self.port)
        self.c.loop_start()
        assert self.connected.wait(5), "no CONNACK"
        assert not self.connect_rc.is_failure, self.connect_rc

    def publish(self, topic: str, payload: bytes) -> int:
        info = self.c.publish(topic, payload, qos=1)
        return int(self.acks.setdefault(info.mid, queue.Queue()).get(timeout=5).value)

    def subscribe(self, topic: str) -> int:
        _, mid = self.c.subscribe(topic, qos=1)
        return int(self.acks.setdefault(mid, queue.Queue()).get(timeout=5).value)

    def received(self, wait: float = 0.5) -> list[tuple[str, bytes]]:
        got = []
        try:
            while True:
                got.append(self.messages.get(timeout=wait))
        except queue.Empty:
            return got

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def device(pki, broker, name) -> Client:
    d = pki / "devices" / name
    c = Client(broker.port, name, str(d / "cert.pem"), str(d / "key.pem"), str(d / "ca.pem"))
    c.connect()
    return c


def gateway(pki, broker) -> Client:
    g = pki / "gateway"
    c = Client(broker.port, GW, str(g / f"{GW}.pem"), str(g / f"{GW}.key"), str(pki / "ca" / "ca.pem"))
    c.connect()
    return c


def test_device_writes_only_under_its_own_agent_topics(pki, broker):
    gw, pi1 = gateway(pki, broker), device(pki, broker, "pi-01")
    try:
        assert gw.subscribe(f"{BASE}/agents/#") == 1
        assert pi1.publish(f"{BASE}/agents/pi-01/heartbeat", b"mine") == 0
        assert pi1.publish(f"{BASE}/agents/pi-02/heartbeat", b"impersonation") == NOT_AUTHORISED
        assert pi1.publish(f"ztfl/{FED}/fog2/agents/pi-01/heartbeat", b"other gateway") == NOT_AUTHORISED
        assert gw.received() == [(f"{BASE}/agents/pi-01/heartbeat", b"mine")]
    finally:
        gw.close(), pi1.close()


def test_device_cannot_publish_on_the_broadcast_topics(pki, broker):
    gw, pi1, pi2 = gateway(pki, broker), device(pki, broker, "pi-01"), device(pki, broker, "pi-02")
    try:
        assert pi2.subscribe(f"{BASE}/broadcast/+") == 1
        assert pi2.subscribe(f"{BASE}/broadcast/to/pi-02/+") == 1
        assert pi1.publish(f"{BASE}/broadcast/round", b"fake round") == NOT_AUTHORISED
        assert pi1.publish(f"{BASE}/broadcast/to/pi-02/protocol", b"fake share") == NOT_AUTHORISED
        assert gw.publish(f"{BASE}/broadcast/round", b"round 1") == 0
        assert gw.publish(f"{BASE}/broadcast/to/pi-02/protocol", b"for pi-02") == 0
        assert sorted(pi2.received()) == [(f"{BASE}/broadcast/round", b"round 1"),
                                          (f"{BASE}/broadcast/to/pi-02/protocol", b"for pi-02")]
    finally:
        gw.close(), pi1.close(), pi2.close()


def test_device_reads_only_its_gateways_broadcasts(pki, broker):
    gw, pi1, pi2 = gateway(pki, broker), device(pki, broker, "pi-01"), device(pki, broker, "pi-02")
    try:
        # mosquitto 2.0 may grant a subscription pattern and still checks read access for every
        # message it would deliver: what matters is that nothing foreign arrives.
        for pattern in (f"{BASE}/broadcast/to/pi-02/#", f"{BASE}/agents/#", f"ztfl/{FED}/fog2/broadcast/+",
                        "#"):
            assert pi1.subscribe(pattern) in (1, NOT_AUTHORISED)
        assert gw.publish(f"{BASE}/broadcast/to/pi-02/protocol", b"not for pi-01") == 0
        assert pi2.publish(f"{BASE}/agents/pi-02/masked", b"pi-02's upload") == 0
        assert gw.publish(f"{BASE}/broadcast/round", b"for everyone") == 0
        assert set(pi1.received()) == {(f"{BASE}/broadcast/round", b"for everyone")}
    finally:
        gw.close(), pi1.close(), pi2.close()


def attempt(port: int, cert: str | None, key: str | None, ca: str) -> str:
    """Drive one connection attempt by hand: 'connected', or 'refused' once the broker drops it."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="attempt", protocol=mqtt.MQTTv5)
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    c.tls_set_context(ctx)
    outcome: list[str] = []
    c.on_connect = lambda cl, u, flags, rc, props: outcome.append("refused" if rc.is_failure else "connected")
    c.on_disconnect = lambda cl, u, flags, rc, props: outcome.append("refused")
    try:
        c.connect("127.0.0.1", port)
        for _ in range(50):
            if outcome:
                break
            # TLS 1.3 reports a refused client certificate on the first read, inside the loop.
            if c.loop(timeout=0.2) != mqtt.MQTT_ERR_SUCCESS and not outcome:
                outcome.append("refused")
    except (ssl.SSLError, OSError):
        outcome.append("refused")
    finally:
        c.disconnect()
    return outcome[0] if outcome else "no answer"


def test_client_without_certificate_cannot_connect(pki, broker):
    ca = str(pki / "ca" / "ca.pem")
    d = pki / "devices" / "pi-01"
    assert attempt(broker.port, str(d / "cert.pem"), str(d / "key.pem"), ca) == "connected"
    assert attempt(broker.port, None, None, ca) == "refused"


def test_certificate_from_another_ca_cannot_connect(pki, broker, tmp_path):
    rogue = tmp_path / "rogue"
    provision(Fleet(FED, GW, [Device("pi-01", "raspberry-pi-4")]), rogue)
    d = rogue / "devices" / "pi-01"
    # Same CN as a real device, but issued by a CA the broker does not trust.
    assert attempt(broker.port, str(d / "cert.pem"), str(d / "key.pem"), str(pki / "ca" / "ca.pem")) == "refused"


def test_revoked_device_cannot_connect(tmp_path):
    out = tmp_path / "pki"
    provision(Fleet(FED, GW, [Device("pi-01", "raspberry-pi-4"), Device("pi-02", "raspberry-pi-4")]), out)
    ca = str(out / "ca" / "ca.pem")
    revoke(out, None, ["pi-02"])
    svc = start_mosquitto(workdir=tmp_path / "broker", allow_anonymous=False, extra_config=listener_options(out))
    try:
        for name, outcome in (("pi-01", "connected"), ("pi-02", "refused")):
            d = out / "devices" / name
            assert attempt(svc.port, str(d / "cert.pem"), str(d / "key.pem"), ca) == outcome, name
    finally:
        svc.stop()
