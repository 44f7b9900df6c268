"""MQTT 5 transport shared by the agent, the gateway and the cloud tier.

One paho-mqtt client per process: QoS 1, a persistent session (clean start off, a session
expiry interval) so the broker keeps queued messages across short disconnects, automatic
reconnect with exponential backoff, optional TLS. Incoming messages are size-checked on the
network thread (before anyone decodes them) and handed to the owner through a queue, so that
every protocol state machine runs on one thread.

Sizes are bounded end to end, so that no peer can make a process allocate without limit:
the client announces an MQTT 5 Maximum Packet Size on CONNECT (the broker then never sends it
a larger packet), drops a payload above its limit, and queues at most `inbox_messages` messages
and `inbox_bytes` payload bytes; what does not fit is dropped and counted by a typed refusal
(`take_refusals`). The broker's own limit comes from the largest legitimate message
(`largest_message_bytes`, `LARGEST_MESSAGE_BYTES`), and a payload above the broker's announced
limit is not sent at all (the broker would drop the connection, and a persistent session would
resend it after every reconnect).
"""
from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ztfl.config import setting
from ztfl.fednet.messages import WireError
from ztfl.fednet.topics import AGENT_KINDS, BROADCAST_KINDS, Topics

log = logging.getLogger("ztfl.transport")

MQTT_MAX_PACKET = 268_435_455       # the largest packet MQTT can frame: no limit at all
# The longest topic a ztfl message travels on: .../broadcast/to/<agent>/<kind>, ids of 64
# characters (fednet.topics), the longest kind. Cloud-tier topics are shorter.
_LONGEST_ID = "x" * 64
MAX_TOPIC_BYTES = len(Topics(_LONGEST_ID, _LONGEST_ID).to_agent(_LONGEST_ID, max(AGENT_KINDS + BROADCAST_KINDS,
                                                                                 key=len)))
# An MQTT 5 PUBLISH around its payload and topic: type byte, remaining length (at most 4 bytes),
# topic length, packet id (QoS 1), property length (our clients set no properties).
_PUBLISH_FRAMING = 1 + 4 + 2 + 2 + 1
PUBLISH_OVERHEAD = _PUBLISH_FRAMING + MAX_TOPIC_BYTES
# The largest legitimate message of the largest model a gateway builds: cnn-lstm at model size
# "default" for a pipeline of up to 32 classes (every supported dataset has fewer), whose masked
# input of 64-bit words is 8 bytes a parameter. `largest_message_bytes` of that model's layout;
# tests/adversary/test_oversized_messages.py recomputes it.
LARGEST_MESSAGE_BYTES = 4_062_596


class TransportError(RuntimeError):
    """The broker could not be reached or refused us."""


class OversizedMessage(WireError):
    """A payload above this client's limit: dropped on the network thread, never decoded."""

    reason = "oversized"


class InboxFull(WireError):
    """A message that arrived while the inbox held its limit of messages or bytes: dropped."""

    reason = "inbox_full"


def publish_packet_bytes(payload_bytes: int, topic_bytes: int = MAX_TOPIC_BYTES) -> int:
    """The size of the MQTT 5 PUBLISH packet carrying `payload_bytes`, at most, on a topic of
    `topic_bytes` (default: any ztfl topic; what a Maximum Packet Size must allow for it)."""
    return min(MQTT_MAX_PACKET, _PUBLISH_FRAMING + topic_bytes + payload_bytes)


def largest_message_bytes(layouts: Mapping[str, Sequence[tuple[str, tuple[int, ...]]]]) -> int:
    """The largest payload that rounds over these models put on the broker (model variant ->
    models.spec.layout), built with the real encoders: an agent's masked input of 64-bit words
    (8 bytes a parameter, the weight word and an Ed25519 signature) in its envelope, or the
    gateway's model blob (a byte a parameter and the tensor table, its scales printed at their
    longest). A fog aggregate for the cloud tier (4 bytes a parameter) is smaller than either."""
    import numpy as np
    from nacl.signing import SigningKey

    from ztfl.fednet.messages import MAX_U32, Envelope, ModelBlob
    from ztfl.protocol import wire
    longest_scale = len(repr(2.2250738585072014e-308)) - len(repr(1.0))    # the blob of zeros says 1.0
    key = SigningKey(bytes(32))
    sizes = [0]
    for variant, table in layouts.items():
        tensors = {name: np.zeros(shape, np.float32) for name, shape in table}
        dim = sum(t.size for t in tensors.values())
        frame = wire.MaskedInput(0xFFFF, MAX_U32, MAX_U32, 64, np.zeros(dim + 1, np.uint64)).encode(key)
        sizes.append(len(Envelope(MAX_U32, 0xFFFF, f"{variant}-64", "masked", frame).encode()))
        blob = ModelBlob(MAX_U32, variant, "0" * 64, tensors).encode()
        sizes.append(len(blob) + longest_scale * len(tensors))
    return max(sizes)


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
    # The MQTT 5 Maximum Packet Size announced on CONNECT; absent: what the role's payload limit
    # needs (publish_packet_bytes). The inbox: messages received and not yet handled, at most.
    max_packet_bytes: int | None = setting(None, at_least=PUBLISH_OVERHEAD, at_most=MQTT_MAX_PACKET)
    inbox_messages: int = setting(4096, at_least=1)
    inbox_bytes: int = setting(64 * 1024 * 1024, at_least=1)

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


class Inbox:
    """Messages from the network thread to the owner's thread, at most `max_messages` of them
    and `max_bytes` payload bytes at once: `put` refuses what does not fit."""

    def __init__(self, max_messages: int, max_bytes: int):
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: deque[Inbound] = deque()
        self._ready = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Inbound) -> bool:
        with self._ready:
            if len(self._items) >= self.max_messages or self.bytes + len(item.payload) > self.max_bytes:
                return False
            self._items.append(item)
            self.bytes += len(item.payload)
            self._ready.notify()
            return True

    def get(self, timeout: float) -> Inbound | None:
        with self._ready:
            if not self._items:
                self._ready.wait(max(0.0, timeout))
            if not self._items:
                return None
            item = self._items.popleft()
            self.bytes -= len(item.payload)
            return item


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
        if config.inbox_bytes < max_payload:
            raise TransportError(f"broker inbox_bytes {config.inbox_bytes} cannot hold one message of the "
                                 f"{max_payload}-byte payload limit")
        self.max_packet = config.max_packet_bytes or publish_packet_bytes(max_payload)
        self.broker_max_packet = MQTT_MAX_PACKET       # the broker's own limit, from its CONNACK
        self.inbox = Inbox(config.inbox_messages, config.inbox_bytes)
        self.oversized = 0
        self.dropped = 0                               # inbox full
        self.unsent = 0                                # above the broker's limit: never sent
        self._refusals: Counter[str] = Counter()
        self._refusals_lock = threading.Lock()
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
        self.broker_max_packet = getattr(properties, "MaximumPacketSize", MQTT_MAX_PACKET)
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
            return self._refuse(OversizedMessage(f"{size}-byte message on {msg.topic}: above the "
                                                 f"{self.max_payload}-byte limit"))
        if not self.inbox.put(Inbound(msg.topic, bytes(msg.payload))):
            # Never block here: this thread also answers the broker's keep-alive.
            self.dropped += 1
            self._refuse(InboxFull(f"{size}-byte message on {msg.topic}: {len(self.inbox)} messages, "
                                   f"{self.inbox.bytes} bytes waiting"))

    def _refuse(self, refusal: WireError) -> None:
        with self._refusals_lock:
            self._refusals[refusal.reason] += 1
        log.warning("dropped (%s): %s", refusal.reason, refusal)

    # public API ------------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.MaximumPacketSize = self.max_packet
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
        if publish_packet_bytes(len(payload), len(topic.encode())) > self.broker_max_packet:
            # The broker would drop the connection, and the session would resend it forever.
            self.unsent += 1
            log.error("not sent: %d-byte message on %s is above the broker's maximum packet size %d "
                      "(raise max_packet_size in mosquitto.conf)", len(payload), topic, self.broker_max_packet)
            return
        self.bytes_out += len(payload)
        # QoS 1: paho keeps the message until PUBACK and resends it after a reconnect.
        self.client.publish(topic, payload, qos=1, retain=retain)

    def get(self, timeout: float) -> Inbound | None:
        return self.inbox.get(timeout)

    def take_refusals(self) -> dict[str, int]:
        """Messages dropped on the network thread since the last call, by refusal reason code."""
        with self._refusals_lock:
            taken, self._refusals = dict(self._refusals), Counter()
        return taken

    def stop(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
