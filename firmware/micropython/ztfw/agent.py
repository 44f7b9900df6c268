"""The ESP32 agent: the firmware twin of the CPython agent daemon (agent/daemon.py).

It announces itself (retained hello), heartbeats, keeps the global micro model, classifies
its feature records with the int8 model and publishes alerts, and takes part in rounds of
its cohort (micro model, 32-bit masks): local training runs in slices between MQTT polls,
so the early protocol stages never wait for it; SHARES_RELAY is held until the update is
ready, then the masked input is streamed to the broker.

Its epoch keys live in a keyring in RAM (docs/protocol.md 2.7): key-reuse rounds of one
gateway epoch reuse them, a reboot makes new ones, and no epoch secret is written to flash.
Rounds with differential-privacy noise are refused: the firmware does not implement the noise.
A `dp` announcement is declined, with the reason of the privacy floor (config.json
`privacy_floor`, as agent.yaml's) if its parameters break it, else dp_unsupported; a DP record
signed in ROUND_CONFIG behind an announcement without `dp` is refused as dp_announcement_mismatch.

Everything runs in one loop (`step`), with no threads: the same code runs on the board
and in the unix port.
"""
import gc
import time
from binascii import a2b_base64, hexlify, unhexlify

from ztfw import agent_wire, certs, ed25519
from ztfw.agent_wire import WireError
from ztfw.attest import AttestError, bundle_digest, bundle_evidence
from ztfw.keyring import ClientKeyring, EpochPolicy
from ztfw.micro_model import FloatMLP, MicroModelError
from ztfw.mqtt import MQTTClient, MQTTError
from ztfw.local_update import delta_source, training_steps
from ztfw.records import Records, dequantise, float_row
from ztfw.secagg_client import ClientSession, SecurityFloor, StreamedFrame
from ztfw.secagg_errors import ProtocolError, RoundKindMismatch
from ztfw.secagg_wire import ROUND_CONFIG, SHARES_RELAY
from ztfw.store import Store

NORMAL = "normal"
ALERT_SEQ_BLOCK = 64
PAYLOAD_LIMIT_BYTES = 16 * 1024     # the esp32 hardware profile's payload_limit_bytes


class ConfigError(ValueError):
    pass


def _ms():
    return time.ticks_ms()


def _since(t0):
    return time.ticks_diff(time.ticks_ms(), t0)


def der(data):
    """DER bytes of a PEM or DER file (some ports' Mbed TLS builds parse DER only)."""
    if not data.startswith(b"-----BEGIN"):
        return data
    body = b"".join(line for line in data.split(b"\n") if line and not line.startswith(b"-----"))
    return a2b_base64(body)


def _read(base_dir, name):
    with open(_path(base_dir, name), "rb") as f:
        return f.read()


def tls_context(cfg, base_dir):
    """An SSLContext that checks the broker against the fleet CA and presents the device cert."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=der(_read(base_dir, cfg["ca"])))
    ctx.load_cert_chain(der(_read(base_dir, cfg["cert"])), der(_read(base_dir, cfg["key"])))
    return ctx


def _path(base_dir, name):
    return name if name.startswith("/") else base_dir + "/" + name


def epoch_policy(cfg):
    """The longest this board reuses one key setup (`key_epoch` in config.json: max_rounds,
    max_seconds); the gateway usually starts new epochs sooner."""
    doc = cfg.get("key_epoch") or {}
    if not isinstance(doc, dict) or not set(doc) <= {"max_rounds", "max_seconds"}:
        raise ConfigError("firmware config: key 'key_epoch' takes max_rounds and max_seconds")
    try:
        return EpochPolicy(**doc)
    except ValueError as e:
        raise ConfigError("firmware config: key_epoch: %s" % e)


def privacy_floor(cfg):
    """The DP floor of config.json (`privacy_floor`: min_noise_multiplier, max_clip_norm,
    min_survivors), which decides how a round with DP is refused (docs/privacy.md)."""
    try:
        return agent_wire.PrivacyFloor(cfg.get("privacy_floor"))
    except WireError as e:
        raise ConfigError("firmware config: %s" % e)


class Clock:
    """Seconds since boot that never wrap (ticks_ms wraps; the loop reads this far more often
    than once per wrap period). The keyring's lifetime in seconds runs on it."""

    def __init__(self):
        self._last = time.ticks_ms()
        self._ms = 0

    def seconds(self):
        now = time.ticks_ms()
        self._ms += time.ticks_diff(now, self._last)
        self._last = now
        return self._ms / 1000


class Agent:
    def __init__(self, cfg, base_dir="."):
        for key in ("agent_id", "federation", "gateway", "broker", "device_key", "classes"):
            if key not in cfg:
                raise ConfigError("firmware config: missing key '%s'" % key)
        self.cfg = cfg
        self.base_dir = base_dir
        self.agent_id = cfg["agent_id"]
        self.profile = cfg.get("profile", "esp32")
        self.mask_bits = cfg.get("mask_bits", 32)
        self.variant = cfg.get("model_variant", "micro")
        self.classes = cfg["classes"]
        self.seed = unhexlify(cfg["device_key"])
        self.public = ed25519.public_key(self.seed)
        if "device_public_key" in cfg and unhexlify(cfg["device_public_key"]) != self.public:
            raise ConfigError("device_public_key does not belong to device_key")
        self.base = "ztfl/%s/%s" % (cfg["federation"], cfg["gateway"])
        self.payload_limit = cfg.get("payload_limit_bytes", PAYLOAD_LIMIT_BYTES)
        self.heartbeat_ms = int(cfg.get("heartbeat_s", 2.0) * 1000)
        self.record_ms = int(1000 / cfg.get("stream_rate_hz", 5.0))
        train = cfg.get("training", {})
        self.epochs = train.get("epochs", 1)
        self.lr = train.get("lr", 0.05)
        self.max_samples = train.get("max_samples", 0)     # 0: every record
        self.slice_ms = train.get("slice_ms", 40)
        self.records = Records(_path(base_dir, cfg.get("records", "records.bin")))
        self.store = Store(_path(base_dir, cfg.get("state", "state.json")))
        # What is flashed, digested once at start and reported with each round's evidence.
        state = cfg.get("state", "state.json")
        self.bundle = bundle_digest(base_dir, (state, state + ".tmp")) if cfg.get("attest") else None
        # In RAM only: a reboot means new keys.
        self.keyring = ClientKeyring(epoch_policy(cfg))
        self.privacy_floor = privacy_floor(cfg)
        # The least protection this board takes part with, fixed at provisioning (config.json
        # "security_floor": {"min_group": .., "min_neighbors": ..}), never taken from a round.
        self.floor = SecurityFloor(**cfg.get("security_floor", {}))
        self.clock = Clock()
        self.alert_seq = self.store.state["alert_seq"]   # every number used so far is at or below it
        self.client = None
        self.blob = None
        self.mlp = None
        self.qmodel = None
        self.model_version = -1
        self.session = None
        self.announce = None
        self.training = None
        self.trained = False
        self.held_relay = None
        self.state = "online"
        self.alerts = 0
        self.records_seen = 0
        self.rejected = 0
        self.connects = 0
        self.next_heartbeat = _ms()
        self.next_record = _ms()
        self.last_io = _ms()
        self.stats = {"train_ms": 0, "protocol_ms": 0, "keys_ms": 0, "certs_ms": 0, "uploads": 0,
                      "rounds_done": 0, "declined": 0}
        self.events = []
        self.certificate = cfg.get("certificate", "")
        self.refusals = {}
        self.trust = self._load_trust(cfg)

    def _load_trust(self, cfg):
        """The trust anchor and this board's own certificate (config keys `trust_anchor`,
        `certificate`), and the newest revocation list: the one kept from before a reboot, or
        the provisioned one. Without them the board takes part in no round."""
        if not cfg.get("trust_anchor") or not self.certificate:
            return None
        try:
            trust = certs.TrustStore(unhexlify(cfg["trust_anchor"]), cfg["federation"])
            own = certs.decode(a2b_base64(self.certificate))
            trust.check_claims(own, "agent", self.agent_id, own.not_before)
            trust.check_signature(own)
        except (ValueError, certs.CertError) as e:
            raise ConfigError("firmware config: certificate: %s" % e)
        if own.public_key != self.public:
            raise ConfigError("firmware config: the certificate certifies another key than device_key")
        trust.floor = own.not_before
        for raw in (self._stored_revocations(), a2b_base64(cfg.get("revocations", ""))):
            if raw:
                try:
                    trust.accept_revocations(raw, certs.board_time(trust.floor))
                except certs.CertError as e:
                    self._event("revocation list not used: %s" % e)
        return trust

    def _stored_revocations(self):
        try:
            with open(_path(self.base_dir, "revocations.bin"), "rb") as f:
                return f.read()
        except OSError:
            return b""

    def _refuse(self, what, e):
        """A certificate refusal: counted by reason and said on the console (the serial log)."""
        self.refusals[e.reason] = self.refusals.get(e.reason, 0) + 1
        text = "%s refused (%s): %s" % (what, e.reason, e)
        print(text)
        self._reject(text)

    # -- connection -----------------------------------------------------------------------
    def topic(self, kind):
        return "%s/agents/%s/%s" % (self.base, self.agent_id, kind)

    def connect(self):
        b = self.cfg["broker"]
        ctx = tls_context(self.cfg, self.base_dir) if b.get("tls") else None
        client = MQTTClient("agent-" + self.agent_id, b["host"], b.get("port", 8883 if ctx else 1883),
                            keepalive=b.get("keepalive", 30), ssl_context=ctx,
                            max_packet=self.payload_limit)
        client.set_last_will(self.topic("heartbeat"),
                             agent_wire.heartbeat(self.agent_id, "offline", 0, -1, 0, 0))
        client.set_callback(self._on_message)
        client.connect()
        self.client = client
        for kind in ("round", "protocol", "model-" + self.variant, "revocations"):
            client.subscribe("%s/broadcast/%s" % (self.base, kind), 1)
        client.subscribe("%s/broadcast/to/%s/+" % (self.base, self.agent_id), 1)
        self.connects += 1
        self._hello()
        self.last_io = _ms()

    def reconnect(self, attempts=0):
        """Reconnect with exponential backoff (attempts=0: until it works)."""
        delay = 500
        n = 0
        while True:
            n += 1
            if self.client is not None:
                self.client.close()
                self.client = None
            try:
                self.connect()
                return True
            except (OSError, MQTTError) as e:
                self.events.append("connect failed: %s" % e)
                if attempts and n >= attempts:
                    return False
                time.sleep_ms(delay)
                delay = min(delay * 2, 30000)

    def _publish(self, kind, payload, retain=False, qos=0):
        self.client.publish(self.topic(kind), payload, retain=retain, qos=qos)
        self.last_io = _ms()

    def _hello(self):
        msg = agent_wire.hello(self.agent_id, self.profile, self.variant, self.mask_bits, "micropython",
                               len(self.records), self.cfg.get("attestation", "device-key"),
                               hexlify(self.public).decode(), self.certificate)
        # Retained: a gateway started later still learns who we are.
        self._publish("hello", msg, retain=True, qos=1)

    def _heartbeat(self):
        self._publish("heartbeat", agent_wire.heartbeat(self.agent_id, self.state, self.store.state["last_round"],
                                                        self.model_version, self.alerts, self.records_seen))

    # -- incoming -------------------------------------------------------------------------
    def _event(self, text):
        self.events.append(text)
        if len(self.events) > 20:
            self.events.pop(0)

    def _reject(self, reason):
        self.rejected += 1
        self._event("rejected: " + reason)

    def _decline(self, msg, reason):
        """A round this board cannot take part in: said on the console (the serial log) and kept."""
        self.stats["declined"] += 1
        text = "round %d.%d %s declined: %s" % (msg.round, msg.attempt, msg.cohort, reason)
        print(text)
        self._event(text)

    def _on_message(self, topic, payload):
        prefix = self.base + "/broadcast/"
        t = topic.decode()
        if not t.startswith(prefix):
            return self._reject("foreign topic " + t)
        kind = t.rsplit("/", 1)[-1]
        try:
            if kind == "round":
                self._on_round(agent_wire.decode_round(payload))
            elif kind == "protocol":
                self._on_frame(agent_wire.Envelope(payload, self.payload_limit))
            elif kind == "model-" + self.variant:
                self._on_model(payload)
            elif kind == "revocations":
                self._on_revocations(payload)
        except WireError as e:
            self._reject("%s: %s" % (kind, e))
        except certs.CertError as e:
            self._refuse(kind, e)

    def _on_revocations(self, payload):
        """A signed revocation list (retained broadcast): kept, in RAM and on flash, if newer."""
        if self.trust is not None and self.trust.accept_revocations(payload, certs.board_time(self.trust.floor)):
            with open(_path(self.base_dir, "revocations.bin"), "wb") as f:
                f.write(payload)

    def _on_model(self, payload):
        from ztfw.micro_model import MAX_PARAMS
        blob = agent_wire.ModelBlob(payload, self.payload_limit, MAX_PARAMS)
        if blob.variant != self.variant:
            return self._reject("model variant %s is not ours" % blob.variant)
        if blob.version == self.model_version and self.mlp is not None:
            return
        sizes = blob.layer_sizes()
        if sizes[0] != self.records.n_features or sizes[-1] != len(self.classes):
            return self._reject("model %s does not fit %d features / %d classes"
                                % (sizes, self.records.n_features, len(self.classes)))
        if self.mlp is None or list(self.mlp.sizes) != sizes:
            self.mlp = None
            gc.collect()
            try:
                self.mlp = FloatMLP(sizes)
            except MicroModelError as e:
                return self._reject(str(e))
        self.blob = blob
        blob.fill_float(self.mlp.params)
        self._requantise()
        self.model_version = blob.version
        self.store.state["model_version"] = blob.version
        self.store.save()

    def _requantise(self):
        calib = []
        row = None
        for _, q in self.records.rows(0, min(32, len(self.records))):
            row = dequantise(q, float_row(len(q)))
            calib.append(row)
        self.qmodel = self.mlp.quantise(calib)
        gc.collect()

    def _on_round(self, msg):
        if isinstance(msg, agent_wire.RoundEnd):
            a = self.announce
            if a is not None and (msg.round, msg.attempt, msg.cohort) == (a.round, a.attempt, a.cohort):
                if msg.outcome == "committed":
                    self.store.state["last_round"] = msg.round
                    self.store.save()
                    self.stats["rounds_done"] += 1
                self._end_session()
            return
        sid = None
        for p in msg.participants:
            if isinstance(p, list) and len(p) == 3 and p[0] == self.agent_id:
                sid = p[1]
        if sid is None or msg.model_variant != self.variant or msg.mask_bits != self.mask_bits:
            return
        key = "%d.%d.%s" % (msg.round, msg.attempt, msg.cohort)
        if key in self.store.state["uploaded"]:
            return      # a redelivered announcement of a round we already uploaded to
        a = self.announce
        if a is not None and (a.round, a.attempt, a.cohort) == (msg.round, msg.attempt, msg.cohort):
            return      # redelivered while the session runs
        if msg.dp is not None:
            # Distributed DP counts on every participant adding its share of the noise
            # (docs/privacy.md): this board adds none, so it never joins (its floor's verdict first).
            e = agent_wire.dp_refusal(self.privacy_floor, msg.dp)
            return self._decline(msg, "%s [%s]" % (e, e.reason))
        # Every key is certified by our root before anything else: the gateway's and each participant's.
        t0 = _ms()
        try:
            if self.trust is None:
                raise certs.Uncertified("no trust anchor provisioned: no key can be checked")
            if msg.version != agent_wire.CERTIFIED_ANNOUNCE:
                raise certs.Uncertified("round announced with bare keys (version 1)")
            server_pk, directory = self.trust.check_announcement(
                msg.seats(), agent_wire.certificate_bytes(msg.server_cert, "gateway"), self.cfg["gateway"],
                certs.board_time(self.trust.floor))
            if directory.get(sid) != self.public:
                raise certs.IdentityMismatch("this board is seated under another key than its own")
        except (WireError, certs.CertError) as e:
            self.stats["certs_ms"] += _since(t0)
            if isinstance(e, WireError):
                return self._reject("round %d.%d: %s" % (msg.round, msg.attempt, e))
            return self._refuse("round %d.%d" % (msg.round, msg.attempt), e)
        self.stats["certs_ms"] += _since(t0)
        if self.mlp is None:
            return self._reject("round announced before the model arrived")
        directory[0] = server_pk
        self._end_session()     # a round whose end we never heard of
        t0 = _ms()
        # Same epoch, key reuse and a higher round id: the keys (and their agreements) of the
        # last round; anything else: new keys (protocol.epochs rules).
        keys = self.keyring.keys_for(msg.epoch, msg.protocol_round, self.clock.seconds(), msg.key_reuse)
        self.stats["keys_ms"] += _since(t0)
        self.session = ClientSession(sid, self.seed, directory, keys, msg.protocol_round,
                                     identity_public=self.public, floor=self.floor)
        self.announce = msg
        if self.cfg.get("attest"):
            # Device-key evidence over the round's nonce, bound like a TPM quote to the attestation
            # round (attempt_id, gateway/attest.py), the identity key this board is seated under
            # and its bundle digest. Off unless configured: a gateway that does not check gets none.
            try:
                evidence = bundle_evidence(self.seed, self.public, unhexlify(msg.nonce),
                                           agent_wire.attempt_id(msg.round, msg.attempt), self.public, self.bundle)
            except (ValueError, AttestError) as e:
                self._reject("cannot attest: %s" % e)
            else:
                # Raw evidence bytes, as the gateway's attest handler reads them.
                self._publish("attest", evidence, qos=1)
        self.trained = False
        self.held_relay = None
        self.state = "training"
        self.training = self._train_steps()
        self._heartbeat()

    def _on_frame(self, env):
        a = self.announce
        if self.session is None or a is None or (env.round, env.attempt, env.cohort) != (a.round, a.attempt, a.cohort):
            return      # someone else's cohort or a past round
        body = env.body
        if len(body) > 3 and body[3] == SHARES_RELAY and not self.trained:
            self.held_relay = body
            return
        self._protocol(body)

    def _protocol(self, frame):
        if agent_wire.config_signs_dp(frame) and frame[3] == ROUND_CONFIG:
            # A DP record signed behind an announcement without `dp`: refused like the CPython
            # agent (DpMismatch), before anything is answered; a genuine one makes this board a dropout.
            return self._reject("protocol frame refused: DpMismatch [%s]: the round configuration signs DP "
                                "the announcement did not mention" % agent_wire.DpMismatch.reason)
        t0 = _ms()
        try:
            reply = self.session.receive(frame)
            if frame[3] == ROUND_CONFIG:
                self._check_round_kind()        # before the advertisement leaves
        except RoundKindMismatch as e:
            # Final for the round: nothing of it is answered, so nothing is ever shared.
            self._end_session()
            return self._reject("round refused: RoundKindMismatch: %s" % e)
        except ProtocolError as e:
            self.stats["protocol_ms"] += _since(t0)
            return self._reject("protocol frame refused: %s: %s" % (type(e).__name__, e))
        self.stats["protocol_ms"] += _since(t0)
        if reply is not None:
            self._send(reply)

    def _check_round_kind(self):
        """The signed round kind must be the announced one. The keyring keeps the keys of an
        announced key-reuse round for the rest of the epoch: a classic round would Shamir-share
        their secret (docs/protocol.md 2.7), and one announced classic has single-use keys."""
        signed, announced = self.session.config.key_reuse, bool(self.announce.key_reuse)
        if signed != announced:
            raise RoundKindMismatch("ROUND_CONFIG key reuse %s differs from the announcement's %s"
                                    % (signed, announced))

    def _send(self, reply):
        a = self.announce
        kind = "masked" if isinstance(reply, StreamedFrame) else "protocol"
        t0 = _ms()
        if kind == "masked":
            head = agent_wire.envelope_prefix(a.round, a.attempt, a.cohort, kind, reply.nbytes)

            def produce(write):
                write(head)
                reply.write_to(write)

            self.client.publish_stream(self.topic(kind), len(head) + reply.nbytes, produce, qos=1)
            self.store.state["uploaded"].append("%d.%d.%s" % (a.round, a.attempt, a.cohort))
            self.store.save()
            self.stats["uploads"] += 1
        else:
            env = agent_wire.envelope_prefix(a.round, a.attempt, a.cohort, kind, len(reply)) + reply
            self.client.publish(self.topic(kind), env, qos=1)
        self.stats["protocol_ms"] += _since(t0)
        self.last_io = _ms()

    def _end_session(self):
        session = self.session
        if session is not None and session.keys is self.keyring.keys:
            # Whatever the outcome: a round that may have revealed the mask secret ends the epoch.
            self.keyring.finish(session)
        self.session = None
        self.announce = None
        self.training = None
        self.held_relay = None
        self.trained = False
        self.state = "detecting" if self.model_version >= 0 else "online"
        gc.collect()

    # -- training -------------------------------------------------------------------------
    def _train_steps(self):
        return training_steps(self.mlp, self.blob, self.records, self.announce.round, self.epochs, self.lr,
                              self.max_samples)

    def _train_slice(self):
        t0 = _ms()
        try:
            while _since(t0) < self.slice_ms:
                next(self.training)
        except StopIteration:
            self.training = None
            a = self.announce
            weight = max(1, round(len(self.records) / max(1, a.weight_unit)))
            config = self.session.config
            if config is not None:
                weight = min(weight, config.max_weight)
            self.session.set_input(delta_source(self.mlp.params, self.blob), weight, len(self.mlp.params))
            self.trained = True
            self.state = "training"   # until the round ends (the gateway knows no other in-round state)
        self.stats["train_ms"] += _since(t0)
        if self.trained:
            if self.held_relay is not None:
                frame, self.held_relay = self.held_relay, None
                self._protocol(frame)

    # -- detection ------------------------------------------------------------------------------
    def _detect_one(self):
        self.state = "detecting"
        i = self.records_seen % len(self.records)
        self.records_seen += 1
        for label, q in self.records.rows(i, 1):
            cls, score = self.qmodel.classify(q)
            name = self.classes[cls]
            if name != NORMAL:
                self.alert_seq += 1
                if self.alert_seq > self.store.state["alert_seq"]:
                    # The gateway drops a sequence number it has seen (QoS 1 redelivery), so
                    # numbers must grow across reboots; flash is written once per block of 64.
                    self.store.state["alert_seq"] = self.alert_seq + ALERT_SEQ_BLOCK - 1
                    self.store.save()
                self.alerts += 1
                self._publish("alerts", agent_wire.alert(self.agent_id, self.alert_seq, name,
                                                         round(score, 4), self.model_version))

    # -- loop ---------------------------------------------------------------------------------
    def step(self, poll_ms=20):
        """One pass: at most one incoming packet, then the periodic work."""
        self.client.check_msg(poll_ms)
        now = _ms()
        if time.ticks_diff(now, self.next_heartbeat) >= 0:
            self.next_heartbeat = time.ticks_add(now, self.heartbeat_ms)
            self._heartbeat()
        if self.training is not None:
            self._train_slice()
        elif self.session is None and self.qmodel is not None and time.ticks_diff(now, self.next_record) >= 0:
            self.next_record = time.ticks_add(now, self.record_ms)
            self._detect_one()
        if _since(self.last_io) > self.client.keepalive * 500:
            self.client.ping()
            self.last_io = _ms()

    def run(self, until=None):
        """Loop forever (or until `until(agent)` is true), reconnecting when the link drops."""
        if self.client is None:
            self.reconnect()
        while until is None or not until(self):
            try:
                self.step()
            except (OSError, MQTTError) as e:
                self.events.append("link lost: %s" % e)
                self.reconnect()
