"""A small MQTT 3.1.1 client for the firmware agent (plain TCP or TLS).

One class, one job, in the spirit of micropython-lib's umqtt.simple, with what the
agent needs beyond it: QoS 1 publish with PUBACK wait, payloads streamed to the
socket in chunks (a masked update is never held twice), a bound on incoming packet
size checked before allocation, and typed errors instead of asserts on broker bytes.
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


class MQTTClient:
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
        payload = _utf8(self.client_id)
        if self.will is not None:
            topic, message, retain = self.will
            flags |= 0x04 | (0x20 if retain else 0)
            payload += _utf8(topic) + _utf8(message)
        if self.user is not None:
            flags |= 0x80
            payload += _utf8(self.user)
            if self.password is not None:
                flags |= 0x40
                payload += _utf8(self.password)
        var = _utf8("MQTT") + bytes((4, flags)) + struct.pack("!H", self.keepalive)
        body = var + payload
        self._write(bytes((CONNECT,)) + encode_remaining_length(len(body)) + body)
        head = self._read_exact(4)
        if head[0] != CONNACK or head[1] != 2:
            raise MQTTError("expected CONNACK, got %r" % bytes(head))
        if head[3] != 0:
            raise MQTTError("connection refused, return code %d" % head[3])
        return head[2] & 1

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
        pid = self._next_pid() if qos else 0
        remaining = len(t) + length + (2 if qos else 0)
        header = bytes((PUBLISH | (qos << 1) | (1 if retain else 0),)) + encode_remaining_length(remaining) + t
        if qos:
            header += struct.pack("!H", pid)
        self._write(header)
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
        body = struct.pack("!H", pid) + _utf8(topic) + bytes((qos,))
        self._write(bytes((SUBSCRIBE,)) + encode_remaining_length(len(body)) + body)
        while True:
            op = self.wait_msg()
            if op == SUBACK and self._last_ack == pid:
                if self._last_suback == 0x80:
                    raise MQTTError("subscription to %s refused" % topic)
                return

    # -- receive -----------------------------------------------------------
    def wait_msg(self):
        """Read one packet (blocking) and dispatch it. Returns the packet type."""
        first = self._read_byte()
        op = first & 0xF0
        n = self._read_remaining_length()
        if n > self.max_packet:
            if op == PUBLISH:
                return self._skip_publish(first, n)
            raise MQTTError("incoming packet of %d bytes exceeds limit %d" % (n, self.max_packet))
        if op == PINGRESP:
            if n != 0:
                raise MQTTError("PINGRESP with payload")
            return op
        if op == PUBACK:
            if n != 2:
                raise MQTTError("PUBACK of length %d" % n)
            self._last_ack = struct.unpack("!H", self._read_exact(2))[0]
            return op
        if op == SUBACK:
            if n != 3:
                raise MQTTError("SUBACK of length %d (one topic per SUBSCRIBE)" % n)
            body = self._read_exact(3)
            self._last_ack = struct.unpack("!H", body[:2])[0]
            self._last_suback = body[2]
            return op
        if op == PUBLISH:
            body = self._read_exact(n)
            if n < 2:
                raise MQTTError("PUBLISH too short")
            tlen = struct.unpack("!H", body[:2])[0]
            qos = (first >> 1) & 3
            pos = 2 + tlen
            if qos:
                pos += 2
            if pos > n or qos == 3:
                raise MQTTError("malformed PUBLISH")
            topic = bytes(body[2:2 + tlen])
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
        """Drain a PUBLISH larger than max_packet in small pieces (acknowledged, not delivered):
        a broadcast too big for this device must not cost it its connection."""
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
