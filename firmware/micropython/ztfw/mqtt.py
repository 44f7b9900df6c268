"""A small MQTT 5 client for the firmware agent (plain TCP or TLS).

One class, one job, in the spirit of micropython-lib's umqtt.simple, with what the
agent needs beyond it: QoS 1 publish with PUBACK wait, payloads streamed to the
socket in chunks (a masked update is never held twice), a bound on incoming packet
size checked before allocation, and typed errors instead of asserts on broker bytes.

MQTT 5 for its Maximum Packet Size: announced on CONNECT, it makes the broker drop what
this board could not take instead of sending it (a board draining megabytes over Wi-Fi
is a board that does nothing else). The client sets no other property and reads only the
broker's Maximum Packet Size and Server Keep Alive; a PUBACK's refusal reason is counted.
"""
import socket
import struct

try:
    import select
except ImportError:
    select = None

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0
MQTT_VERSION = 5

# An MQTT 5 PUBLISH around its payload, at most, on any ztfl topic: fednet.transport's
# PUBLISH_OVERHEAD (tests/test_firmware_parity.py checks they agree).
PUBLISH_OVERHEAD = 240
MQTT_MAX_PACKET = 268435455

PROP_SESSION_EXPIRY = 0x11
PROP_SERVER_KEEP_ALIVE = 0x13
PROP_MAX_PACKET = 0x27
# Size of each MQTT 5 property's value: 1, 2 or 4 bytes, 0 a variable integer, -1 a
# length-prefixed string or binary, -2 a string pair.
_PROPERTY_SIZES = {
    0x01: 1, 0x02: 4, 0x03: -1, 0x08: -1, 0x09: -1, 0x0B: 0, 0x11: 4, 0x12: -1, 0x13: 2,
    0x15: -1, 0x16: -1, 0x17: 1, 0x18: 4, 0x19: 1, 0x1A: -1, 0x1C: -1, 0x1F: -1, 0x21: 2,
    0x22: 2, 0x23: 2, 0x24: 1, 0x25: 1, 0x26: -2, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1,
}


class MQTTError(Exception):
    """A protocol violation or refusal from the broker; `reason` says which."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def encode_remaining_length(n):
    if n < 0 or n > 268435455:
        raise MQTTError("remaining length out of range: %d" % n)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _utf8(s):
    if isinstance(s, str):
        s = s.encode()
    if len(s) > 65535:
        raise MQTTError("string too long for MQTT")
    return struct.pack("!H", len(s)) + s


def _varint(buf, pos):
    """(value, position after it) of the variable byte integer at `pos`."""
    n = 0
    shift = 0
    for _ in range(4):
        if pos >= len(buf):
            raise MQTTError("truncated variable integer")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7
    raise MQTTError("malformed variable integer")


def read_properties(buf, pos, end):
    """({id: value} of the numeric properties, position after the block) of the property
    block at `pos` (its length, then the properties), which must end by `end`."""
    length, pos = _varint(buf, pos)
    stop = pos + length
    if stop > end:
        raise MQTTError("properties run past the packet")
    out = {}
    while pos < stop:
        pid = buf[pos]
        pos += 1
        size = _PROPERTY_SIZES.get(pid)
        if size is None:
            raise MQTTError("unknown property 0x%02x" % pid)
        if size > 0:
            if pos + size > stop:
                raise MQTTError("property 0x%02x runs past its block" % pid)
            out[pid] = int.from_bytes(bytes(buf[pos:pos + size]), "big")
            pos += size
        elif size == 0:
            out[pid], pos = _varint(buf, pos)
        else:
            for _ in range(-size):
                if pos + 2 > stop:
                    raise MQTTError("property 0x%02x runs past its block" % pid)
                pos += 2 + struct.unpack("!H", bytes(buf[pos:pos + 2]))[0]
    if pos != stop:
        raise MQTTError("properties run past their block")
    return out, stop


class MQTTClient:
    """`max_packet`: the largest payload this client takes; it announces the packet that
    carries it (plus PUBLISH_OVERHEAD) as its Maximum Packet Size."""

    def __init__(self, client_id, server, port=1883, user=None, password=None,
                 keepalive=60, ssl_context=None, server_hostname=None,
                 max_packet=65536, connect_timeout=10):
        self.client_id = client_id
        self.server = server
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname or server
        self.max_packet = max_packet
        self.packet_limit = min(max_packet + PUBLISH_OVERHEAD, MQTT_MAX_PACKET)
        self.broker_max_packet = MQTT_MAX_PACKET   # from the CONNACK
        self.refused = 0                           # PUBACKs with a refusal reason (>= 0x80)
        self.last_refusal = 0
        self.connect_timeout = connect_timeout
        self.sock = None
        self.pid = 0
        self.cb = None
        self._poller = None
        self.will = None
        self.oversized = 0
        self.last_error = None

    def set_last_will(self, topic, message, retain=False):
        """Published by the broker if this client vanishes without DISCONNECT."""
        self.will = (topic, message, retain)

    # -- transport -------------------------------------------------------
    def _write(self, data):
        mv = memoryview(data)
        sent = 0
        while sent < len(mv):
            n = self.sock.write(mv[sent:])
            if n is None:
                continue
            if n <= 0:
                raise OSError("socket closed while writing")
            sent += n

    def _read_exact(self, n, into=None):
        buf = into if into is not None else bytearray(n)
        mv = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.readinto(mv[got:n])
            if not k:
                raise OSError("connection closed by broker")
            got += k
        return buf

    def _read_byte(self):
        return self._read_exact(1)[0]

    def _read_remaining_length(self):
        n = 0
        shift = 0
        for _ in range(4):
            b = self._read_byte()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
        raise MQTTError("malformed remaining length")

    def _next_pid(self):
        self.pid = self.pid % 65535 + 1
        return self.pid

    # -- session ---------------------------------------------------------
    def set_callback(self, cb):
        """cb(topic: bytes, payload: bytes) for each incoming PUBLISH."""
        self.cb = cb

    def connect(self, clean_session=True):
        addr = socket.getaddrinfo(self.server, self.port, 0, socket.SOCK_STREAM)[0][-1]
        sock = socket.socket()
        if hasattr(sock, "settimeout"):
            # Bounds connect and every later blocking read (a silent broker cannot hang us).
            sock.settimeout(self.connect_timeout)
        sock.connect(addr)
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_hostname=self.server_hostname)
        self.sock = sock
        if select is not None:
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN)
        flags = 0x02 if clean_session else 0
        props = bytes((PROP_MAX_PACKET,)) + struct.pack("!I", self.packet_limit)
        if not clean_session:
            # A kept session (MQTT 3.1.1 clean session 0) needs an expiry in MQTT 5.
            props += bytes((PROP_SESSION_EXPIRY,)) + struct.pack("!I", 0xFFFFFFFF)
        payload = _utf8(self.client_id)
        if self.will is not None:
            topic, message, retain = self.will
            flags |= 0x04 | (0x20 if retain else 0)
            payload += b"\x00" + _utf8(topic) + _utf8(message)      # no will properties
        if self.user is not None:
            flags |= 0x80
            payload += _utf8(self.user)
            if self.password is not None:
                flags |= 0x40
                payload += _utf8(self.password)
        var = (_utf8("MQTT") + bytes((MQTT_VERSION, flags)) + struct.pack("!H", self.keepalive)
               + encode_remaining_length(len(props)) + props)
        body = var + payload
        self._write(bytes((CONNECT,)) + encode_remaining_length(len(body)) + body)
        if self._read_byte() != CONNACK:
            raise MQTTError("expected CONNACK")
        n = self._read_remaining_length()
        if not 3 <= n <= self.packet_limit:
            raise MQTTError("CONNACK of length %d" % n)
        ack = self._read_exact(n)
        if ack[1] >= 0x80:
            raise MQTTError("connection refused, reason code 0x%02x" % ack[1])
        props, _ = read_properties(ack, 2, n)
        self.broker_max_packet = props.get(PROP_MAX_PACKET, MQTT_MAX_PACKET)
        self.keepalive = props.get(PROP_SERVER_KEEP_ALIVE, self.keepalive)
        return ack[0] & 1

    def disconnect(self):
        """Polite close: DISCONNECT (so the broker drops the will), then the socket."""
        if self.sock is not None:
            try:
                self._write(bytes((DISCONNECT, 0)))
            except OSError as e:
                # The link is already gone: the broker will publish the will, which is right.
                self.last_error = e
            self.close()

    def close(self):
        sock, self.sock, self._poller = self.sock, None, None
        if sock is not None:
            try:
                sock.close()
            except OSError as e:
                self.last_error = e     # closing a dead socket: nothing else to release


    def ping(self):
        self._write(bytes((PINGREQ, 0)))

    # -- publish -----------------------------------------------------------
    def publish(self, topic, payload, retain=False, qos=0):
        self.publish_stream(topic, len(payload), lambda write: write(payload), retain, qos)

    def publish_stream(self, topic, length, produce, retain=False, qos=0):
        """Publish `length` payload bytes that `produce(write)` writes in chunks."""
        if qos not in (0, 1):
            raise MQTTError("QoS %r not supported" % qos)
        t = _utf8(topic)
        remaining = len(t) + (2 if qos else 0) + 1 + length
        size = 1 + len(encode_remaining_length(remaining)) + remaining
        if size > self.broker_max_packet:
            # The broker would drop the connection: refuse before writing a byte.
            raise MQTTError("%d-byte packet above the broker's maximum %d" % (size, self.broker_max_packet))
        pid = self._next_pid() if qos else 0
        header = bytes((PUBLISH | (qos << 1) | (1 if retain else 0),)) + encode_remaining_length(remaining) + t
        if qos:
            header += struct.pack("!H", pid)
        self._write(header + b"\x00")        # no properties
        counter = [0]

        def write(chunk):
            counter[0] += len(chunk)
            if counter[0] > length:
                raise MQTTError("payload producer wrote more than announced")
            self._write(chunk)

        produce(write)
        if counter[0] != length:
            raise MQTTError("payload producer wrote %d of %d bytes" % (counter[0], length))
        if qos:
            while True:
                op = self.wait_msg()
                if op == PUBACK and self._last_ack == pid:
                    return

    # -- subscribe ---------------------------------------------------------
    def subscribe(self, topic, qos=0):
        pid = self._next_pid()
        body = struct.pack("!H", pid) + b"\x00" + _utf8(topic) + bytes((qos,))
        self._write(bytes((SUBSCRIBE,)) + encode_remaining_length(len(body)) + body)
        while True:
            op = self.wait_msg()
            if op == SUBACK and self._last_ack == pid:
                if self._last_suback >= 0x80:
                    raise MQTTError("subscription to %s refused" % topic)
                return

    # -- receive -----------------------------------------------------------
    def wait_msg(self):
        """Read one packet (blocking) and dispatch it. Returns the packet type."""
        first = self._read_byte()
        op = first & 0xF0
        n = self._read_remaining_length()
        if n > self.packet_limit:
            # The broker was told not to send this: drain a PUBLISH, refuse anything else.
            if op == PUBLISH:
                return self._skip_publish(first, n)
            raise MQTTError("incoming packet of %d bytes exceeds limit %d" % (n, self.packet_limit))
        if op == PINGRESP:
            if n != 0:
                raise MQTTError("PINGRESP with payload")
            return op
        if op == PUBACK:
            if n < 2:
                raise MQTTError("PUBACK of length %d" % n)
            body = self._read_exact(n)
            self._last_ack = struct.unpack("!H", bytes(body[:2]))[0]
            if n > 2 and body[2] >= 0x80:
                # Refused (not authorised, quota, too large...): nothing was delivered.
                self.refused += 1
                self.last_refusal = body[2]
            return op
        if op == SUBACK:
            if n < 4:
                raise MQTTError("SUBACK of length %d" % n)
            body = self._read_exact(n)
            self._last_ack = struct.unpack("!H", bytes(body[:2]))[0]
            _, pos = read_properties(body, 2, n)
            if pos != n - 1:
                raise MQTTError("SUBACK with %d reason codes (one topic per SUBSCRIBE)" % (n - pos))
            self._last_suback = body[pos]
            return op
        if op == DISCONNECT:
            reason = self._read_exact(n)[0] if n else 0
            raise MQTTError("broker disconnected, reason code 0x%02x" % reason)
        if op == PUBLISH:
            body = self._read_exact(n)
            if n < 2:
                raise MQTTError("PUBLISH too short")
            tlen = struct.unpack("!H", body[:2])[0]
            qos = (first >> 1) & 3
            pos = 2 + tlen
            if qos:
                pos += 2
            if pos >= n or qos == 3:
                raise MQTTError("malformed PUBLISH")
            topic = bytes(body[2:2 + tlen])
            _, pos = read_properties(body, pos, n)
            if qos == 1:
                pid = body[2 + tlen:4 + tlen]
                self._write(bytes((PUBACK, 2)) + bytes(pid))
            elif qos == 2:
                raise MQTTError("QoS 2 delivery not supported")
            # A view of the packet buffer (no copy): callbacks copy what they keep.
            payload = memoryview(body)[pos:]
            if self.cb is not None:
                self.cb(topic, payload)
            return op
        raise MQTTError("unexpected packet type 0x%02x" % op)

    def _skip_publish(self, first, n):
        """Drain a PUBLISH larger than the packet limit in small pieces (acknowledged, not
        delivered; its properties go with the payload): a broadcast too big for this device
        must not cost it its connection."""
        if n < 2:
            raise MQTTError("PUBLISH too short")
        tlen = struct.unpack("!H", self._read_exact(2))[0]
        qos = (first >> 1) & 3
        left = n - 2
        piece = bytearray(256)
        skip = tlen
        pid = None
        while skip:
            k = min(skip, len(piece))
            self._read_exact(k, piece)
            skip -= k
        left -= tlen
        if qos:
            if left < 2:
                raise MQTTError("malformed PUBLISH")
            pid = bytes(self._read_exact(2))
            left -= 2
        while left > 0:
            k = min(left, len(piece))
            self._read_exact(k, piece)
            left -= k
        if qos == 1:
            self._write(bytes((PUBACK, 2)) + pid)
        self.oversized += 1
        return PUBLISH

    def check_msg(self, timeout_ms=0):
        """Dispatch one packet if one arrives within timeout_ms; returns its type or None."""
        if self._poller is None:
            return self.wait_msg()
        if not self._poller.poll(timeout_ms):
            return None
        return self.wait_msg()

    _last_ack = -1
    _last_suback = 0
