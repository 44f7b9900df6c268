"""MQTT 5 transport shared by the agent, the gateway and the cloud tier.

One paho-mqtt client per process: QoS 1, a persistent session (clean start off, a session
expiry interval) so the broker keeps queued messages across short disconnects, automatic
reconnect with exponential backoff, optional TLS. Incoming messages are size-checked on the
network thread (before anyone decodes them) and handed to the owner through a queue, so that
every protocol state machine runs on one thread.
"""
from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from dataclasses import dataclass, field, replace
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ztfl.config import setting

log = logging.getLogger("ztfl.transport")


class TransportError(RuntimeError):
    """The broker could not be reached or refused us."""


def broker_address(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of an mqtt:// or mqtts:// url; a ValueError says what is wrong with it."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"must be mqtt:// or mqtts://, got {url!r}")
    tls = parsed.scheme == "mqtts"
    return parsed.hostname or "127.0.0.1", parsed.port or (8883 if tls else 1883), tls


@dataclass(frozen=True)
class BrokerConfig:
    """The `broker:` section of every role's configuration (checked when the file is loaded)."""
    url: str = setting("mqtt://127.0.0.1:1883", check=broker_address)
    client_id: str = ""
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = setting(15, at_least=0, at_most=65535)              # MQTT's 16-bit field
    session_expiry_s: int = setting(3600, at_least=0, at_most=0xFFFFFFFF)
    reconnect_min_s: int = setting(1, at_least=1)
    reconnect_max_s: int = setting(16, at_least=1)

    @property
    def host_port(self) -> tuple[str, int, bool]:
        try:
            return broker_address(self.url)
        except ValueError as exc:
            raise TransportError(f"broker url {exc}") from None

    def with_default_client_id(self, client_id: str) -> "BrokerConfig":
        """This broker config, with `client_id` unless it names its own."""
        return self if self.client_id else replace(self, client_id=client_id)


@dataclass
class Inbound:
    topic: str
    payload: bytes
    received: float = field(default_factory=time.monotonic)


class MqttTransport:
    """A connected MQTT 5 client whose messages arrive in `self.inbox`.

    `subscriptions` are (re)subscribed on every connect: a broker restart without persistence
    forgets the session, and subscribing again is idempotent.
    """

    def __init__(self, config: BrokerConfig, subscriptions: list[str], max_payload: int,
                 will: tuple[str, bytes] | None = None):
        self.config = config
        self.subscriptions = list(subscriptions)
        self.max_payload = max_payload
        self.inbox: queue.Queue[Inbound] = queue.Queue()
        self.oversized = 0
        self.connects = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self._connected = threading.Event()
        host, port, tls = config.host_port
        self._host, self._port = host, port
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id,
                                  protocol=mqtt.MQTTv5)
        if tls:
            self.client.tls_set(ca_certs=config.ca_file, certfile=config.cert_file,
                                keyfile=config.key_file, cert_reqs=ssl.CERT_REQUIRED)
        if config.username:
            self.client.username_pw_set(config.username, config.password)
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=False)
        self.client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)
        # Unlimited in-flight queue: QoS 1 messages published while offline wait for the reconnect.
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # paho callbacks (network thread) -------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("broker refused connection: %s", reason_code)
            return
        self.connects += 1
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        log.info("connected to %s:%d (session present: %s)", self._host, self._port,
                 flags.session_present)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connected.clear()
        log.info("disconnected from broker: %s; reconnecting with backoff", reason_code)

    def _on_message(self, client, userdata, msg):
        size = len(msg.payload)
        self.bytes_in += size
        if size > self.max_payload:
            # Rejected before decoding: a peer cannot make us allocate for a huge payload.
            self.oversized += 1
            log.warning("dropped %d-byte message on %s: above the %d-byte limit", size, msg.topic,
                        self.max_payload)
            return
        self.inbox.put(Inbound(msg.topic, bytes(msg.payload)))

    # public API ------------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        self.client.connect_async(self._host, self._port, keepalive=self.config.keepalive_s,
                                  clean_start=False, properties=props)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.stop()
            raise TransportError(f"no connection to {self.config.url} within {timeout} s")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def subscribe(self, topic: str) -> None:
        if topic not in self.subscriptions:
            self.subscriptions.append(topic)
        if self.connected:
            self.client.subscribe(topic, qos=1)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.bytes_out += len(payload)
        # QoS 1: paho keeps the message until PUBACK and resends it after a reconnect.
        self.client.publish(topic, payload, qos=1, retain=retain)

    def get(self, timeout: float) -> Inbound | None:
        try:
            return self.inbox.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def stop(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
