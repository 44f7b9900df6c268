"""The agent daemon (`ztfl agent --config agent.yaml`).

One thread runs everything that touches protocol state (messages arrive through the transport's
queue); local training runs in a worker thread so the agent keeps answering the early protocol
stages and heartbeating while it trains. Between rounds it runs detection on its record stream.

Per round (as a participant):  announce -> [attest] -> train (worker) while AdvertiseKeys /
ShareKeys run -> MASKED_INPUT once both are ready -> consistency -> unmask -> round end.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ztfl.agent.config import AgentConfig
from ztfl.models.partition import agent_partition
from ztfl.agent.keyrings import AgentKeyrings
from ztfl.agent.privacy_guard import open_guard
from ztfl.models.spec import ModelSpec, layout, tensors_to_flat
from ztfl.agent.secagg import AgentAggregation
from ztfl.agent.state import StateStore
from ztfl.fednet.topics import Topics, TopicError
from ztfl.fednet.transport import MqttTransport
from ztfl.agent.update import local_update
from ztfl.fednet.messages import (Alert, DetectorBlob, Envelope, Heartbeat, Hello, ModelBlob, RoundAnnounce, RoundEnd,
                        WireError, certificate_text, decode_pipeline)
from ztfl.fednet.trust import adopt_revocations, load_identity, save_revocations
from ztfl.agent.trust import seat as seat_in
from ztfl.hw_profiles import Profile, resolve_profile
from ztfl.models.params import set_flat
from ztfl.models.preprocess import Pipeline
from ztfl.protocol.certs import SignedRevocations, Uncertified
from ztfl.protocol.errors import ProtocolError
from ztfl.protocol.refusal import Refusal

log = logging.getLogger("ztfl.agent")


class Agent:
    def __init__(self, config: AgentConfig):
        self.config = config
        # Oversubscribed OpenMP threads spin against each other: use exactly what we were given.
        torch.set_num_threads(max(1, int(config.threads)))
        self.profile: Profile = resolve_profile(config.profile)
        self.topics = Topics(config.federation, config.gateway)
        self.store = StateStore(config.state_dir)
        self.certified = self._load_trust()           # fednet.trust.CertifiedIdentity, or None
        self.identity = self.store.identity(self.certified.key if self.certified else None)
        self.refusals: Counter = Counter()              # refused peer input by reason code
        self.privacy = open_guard(config.privacy_floor, config.state_dir)   # DP floor and own ledger
        self.table = agent_partition(config.partition())
        self.pipeline: Pipeline | None = None
        self.encoded = None
        self.spec: ModelSpec | None = None
        self.model: torch.nn.Module | None = None
        self.model_version = -1
        self.state = "online"
        self.session: AgentAggregation | None = None
        self.keyrings = AgentKeyrings(config.epoch_policy())    # in memory: a restart means new keys
        self.announce: RoundAnnounce | None = None
        self.training: threading.Thread | None = None
        self.trained: tuple[np.ndarray, int] | None = None
        self.records = 0
        self.alerts = 0
        self.next_heartbeat = 0.0
        self.next_record = 0.0
        self.rejected = 0
        self.detector: tuple[int, object] | None = None     # (model version, int8 runtime)
        self._warned_runtime = False
        self._saved_seq = self.store.state.alert_seq
        self.stopping = threading.Event()
        self.attestor = None
        self.next_enrol = 0.0
        offline = Heartbeat(config.agent_id, "offline", 0, -1, 0, 0).encode()
        self.transport = MqttTransport(config.broker.with_default_client_id(f"agent-{config.agent_id}"),
                                       self.topics.agent_subscriptions(config.agent_id),
                                       self.profile.payload_limit_bytes,
                                       will=(self.topics.agent("" + config.agent_id, "heartbeat"), offline))

    # lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self.config.tpm:
            self._open_tpm()
        self.transport.start()
        self._hello()

    def _open_tpm(self) -> None:
        from ztfl.attestation.measure import measure_agent
        from ztfl.attestation.tpm_agent import TpmAttestor
        self.attestor = TpmAttestor(self.config.tpm.tcti, Path(self.config.state_dir) / "tpm")
        # PCR 23 holds the agent's own (application-level) measurement of its code; quotes report it.
        self.attestor.extend_measurement(measure_agent(Path(__file__).resolve().parents[1]))
        # Where the kernel keeps an IMA list, quotes also carry it and the boot event log, and the
        # gateway judges the code by them (docs/attestation.md, "Measured boot and IMA").
        if self.attestor.use_kernel_measurements():
            log.info("quotes carry the boot event log and the IMA list (PCRs 0-7, 10)")

    def _enrolled(self) -> bool:
        return (Path(self.config.state_dir) / "tpm" / "enrolled").exists()

    def _maybe_enrol(self, now: float) -> None:
        if self.attestor is None or self._enrolled() or now < self.next_enrol:
            return
        self.next_enrol = now + 5.0   # resent until a challenge is answered (the gateway may start later)
        request = self.attestor.enrolment_request(self.config.agent_id, self.profile.name)
        self.transport.publish(self.topics.agent(self.config.agent_id, "enrol"), request.to_bytes())

    def _on_challenge(self, payload: bytes) -> None:
        from ztfl.attestation.errors import AttestationError
        from ztfl.attestation.messages import TAG_RECEIPT, AttestationReceipt, EnrolmentChallenge
        if self.attestor is None:
            return self._reject("enrolment challenge without a TPM")
        if payload[:4] == TAG_RECEIPT:   # how much of our IMA list the gateway holds
            try:
                return self.attestor.acknowledge(AttestationReceipt.from_bytes(payload))
            except AttestationError as exc:
                return self._reject(f"attestation receipt refused: {exc}")
        try:
            response = self.attestor.activate(self.config.agent_id, EnrolmentChallenge.from_bytes(payload))
        except (AttestationError, RuntimeError, ValueError) as exc:
            return self._reject(f"enrolment challenge refused: {exc}")
        self.transport.publish(self.topics.agent(self.config.agent_id, "enrol"), response.to_bytes())
        log.info("enrolment challenge answered (TPM credential activated)")

    def _send_quote(self, ann: RoundAnnounce) -> None:
        from ztfl.attestation.errors import AttestationError
        from ztfl.protocol.rounds import attempt_id
        try:
            evidence = self.attestor.quote(bytes.fromhex(ann.nonce), attempt_id(ann.round, ann.attempt),
                                           bytes(self.identity.verify_key))
        except (AttestationError, RuntimeError, ValueError) as exc:
            return self._reject(f"cannot quote: {exc}")
        self.transport.publish(self.topics.agent(self.config.agent_id, "attest"), evidence.to_bytes())

    def _load_trust(self):
        """The provisioned identity and trust anchor (agent.yaml `trust:`); the newest revocation
        list this agent accepted before a restart is taken back from its state directory."""
        if self.config.trust is None:
            log.warning("no trust: section: this agent cannot check certificates and refuses every round")
            return None
        now = int(time.time())
        certified = load_identity(self.config.trust, self.config.federation, "agent", self.config.agent_id, now)
        adopt_revocations(certified.trust, self.store.revocations_path, now)
        return certified

    def _hello(self) -> None:
        msg = Hello(self.config.agent_id, self.profile.name, self.profile.model_variant, self.profile.mask_bits,
                    self.profile.runtime, len(self.table), self.profile.attestation,
                    bytes(self.identity.verify_key).hex(),
                    certificate_text(self.certified.certificate_bytes) if self.certified else "")
        # Retained: a gateway that starts (or restarts) after us still learns who we are.
        self.transport.publish(self.topics.agent(self.config.agent_id, "hello"), msg.encode(), retain=True)

    def run_forever(self) -> int:
        self.start()
        seen_connects = self.transport.connects
        try:
            while not self.stopping.is_set():
                msg = self.transport.get(0.05)
                if msg is not None:
                    self.handle(msg.topic, msg.payload)
                # Dropped on the network thread (oversized, inbox full): counted as rejections.
                self.rejected += sum(self.transport.take_refusals().values())
                if self.transport.connects != seen_connects:
                    seen_connects = self.transport.connects
                    self._hello()
                self._tick(time.monotonic())
        finally:
            self.transport.stop()
        return 0

    # messages ----------------------------------------------------------------------------------
    def _reject(self, reason: str) -> None:
        self.rejected += 1
        log.warning("rejected message: %s", reason)

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            kind = self.topics.parse_broadcast_topic(topic)
        except TopicError as exc:
            return self._reject(str(exc))
        try:
            if kind == "pipeline":
                self._on_pipeline(payload)
            elif kind == f"model-{self.profile.model_variant}":
                self._on_model(ModelBlob.decode(payload, self.profile.payload_limit_bytes))
            elif kind == f"detector-{self.profile.model_variant}":
                self._on_detector(DetectorBlob.decode(payload, self.profile.payload_limit_bytes))
            elif kind == "round":
                self._on_round(payload)
            elif kind == "protocol":
                self._on_frame(Envelope.decode(payload, self.profile.payload_limit_bytes))
            elif kind == "attest" and topic == self.topics.to_agent(self.config.agent_id, "attest"):
                self._on_challenge(payload)
            elif kind == "revocations":
                self._on_revocations(payload)
        except Refusal as exc:
            self._refuse(exc, topic)

    def _refuse(self, exc: Refusal, what: str) -> None:
        self.refusals[exc.reason] += 1
        self._reject(f"{what} ({exc.reason}): {exc}")

    def _on_revocations(self, payload: bytes) -> None:
        """A signed revocation list (retained broadcast): kept if genuine and newer, and saved so
        that a restart does not roll back to an older one."""
        if self.certified is None:
            return
        signed = SignedRevocations.decode(payload)
        if self.certified.trust.accept_revocations(signed, int(time.time())):
            save_revocations(self.store.revocations_path, signed)
            log.info("revocation list %d adopted: %d serials revoked", signed.revocations.number,
                     len(signed.revocations.revoked))

    def _on_pipeline(self, payload: bytes) -> None:
        try:
            self.pipeline = decode_pipeline(payload)
        except WireError as exc:
            return self._reject(str(exc))
        self.encoded = self.pipeline.encode(self.table)
        self.spec = ModelSpec(self.profile.model_variant, self.pipeline.n_features, self.pipeline.n_classes,
                              self.config.model_size)
        self.model = self.spec.build()
        log.info("pipeline received: %d features, %d classes", self.pipeline.n_features, self.pipeline.n_classes)

    def _on_model(self, blob: ModelBlob) -> None:
        if self.model is None:
            return self._reject("model before pipeline")
        if blob.variant != self.profile.model_variant:
            return self._reject(f"model variant {blob.variant} is not ours")
        try:
            flat = tensors_to_flat(blob.tensors, layout(self.model))
            set_flat(self.model, flat)
        except ValueError as exc:
            return self._reject(f"model does not fit: {exc}")
        self.model_version = blob.version
        self.store.state.model_version = blob.version
        self.store.save()
        log.info("global model v%d loaded", blob.version)

    def _on_detector(self, blob: DetectorBlob) -> None:
        """The int8 ONNX export of a global model version, which detection runs."""
        from ztfl.models.export.runtime import IDSRuntime, RuntimeLoadError
        if self.profile.runtime != "onnxruntime" and not self._warned_runtime:
            self._warned_runtime = True
            log.warning("profile runtime %s: the federation ships int8 ONNX, detection runs it on onnxruntime",
                        self.profile.runtime)
        path = Path(self.config.state_dir) / f"detector-v{blob.version}.int8.onnx"
        path.write_bytes(blob.onnx)
        try:
            runtime = IDSRuntime.open(path)
        except (RuntimeLoadError, ValueError, OSError) as exc:
            return self._reject(f"detector v{blob.version} does not load: {exc}")
        if self.detector is None or self.detector[0] < blob.version:
            self.detector = (blob.version, runtime)
            for old in Path(self.config.state_dir).glob("detector-v*.onnx"):
                if old != path:
                    old.unlink(missing_ok=True)

    def _on_round(self, payload: bytes) -> None:
        if b'"outcome"' in payload:
            end = RoundEnd.decode(payload)
            if self.announce and (end.round, end.attempt, end.cohort) == \
                    (self.announce.round, self.announce.attempt, self.announce.cohort):
                log.info("round %d.%d %s: %s", end.round, end.attempt, end.cohort, end.outcome)
                if end.outcome == "committed":
                    self.store.state.last_round = end.round
                    self.store.save()
                self._end_session()
            return
        ann = RoundAnnounce.decode(payload)
        me = [p for p in ann.participants if isinstance(p, list) and len(p) == 3 and p[0] == self.config.agent_id]
        if not me or ann.model_variant != self.profile.model_variant or ann.mask_bits != self.profile.mask_bits:
            return
        key = f"{ann.round}.{ann.attempt}.{ann.cohort}"
        if key in self.store.state.uploaded:
            return  # a redelivered announcement of a round we already uploaded to
        if self.encoded is None or self.model is None:
            return self._reject("round announced before pipeline and model arrived")
        current = self.announce
        if current is not None and (current.round, current.attempt, current.cohort) == \
                (ann.round, ann.attempt, ann.cohort):
            return  # redelivered while the session runs
        self._end_session()               # a round whose end we never heard of
        try:
            # Every key in the announcement is certified by our root before any is used (agent.trust).
            if self.certified is None:
                raise Uncertified("no trust anchor configured: no key can be checked")
            trust = self.certified.trust
            seat = seat_in(trust, ann, self.config.gateway, self.config.agent_id,
                           bytes(self.identity.verify_key), int(time.time()))
            dp = ann.dp_params
            keys = self.keyrings.keys_for(ann.cohort, ann.keying, time.monotonic())
            self.session = AgentAggregation(sid=seat.sid, identity=self.identity, server_pk=seat.server_key,
                                            peers=seat.peers, round_id=ann.keying.protocol_round, keys=keys,
                                            key_reuse=ann.keying.key_reuse, dp=dp, check_peer=seat.checker(trust),
                                            privacy=self.privacy)
        except Refusal as exc:
            return self._refuse(exc, f"round {ann.round}.{ann.attempt} {ann.cohort}")
        except (ValueError, TypeError) as exc:
            return self._reject(f"bad round announcement: {exc}")
        self.announce = ann
        self.trained = None
        self.state = "training"
        self._heartbeat()
        if self.attestor is not None:
            self._send_quote(ann)      # no quote, no seat
        self.training = threading.Thread(target=self._train, args=(ann,), daemon=True)
        self.training.start()
        log.info("round %d.%d: seated in %s as %d", ann.round, ann.attempt, ann.cohort, me[0][1])

    def _train(self, ann: RoundAnnounce) -> None:
        from ztfl.models.params import get_flat
        base = get_flat(self.model)
        budget = self.profile.training
        delta = local_update(self.spec, base, self.encoded, epochs=self.config.train_epochs or budget.epochs,
                             batch_size=budget.batch_size, lr=self.config.lr, max_batches=self.config.max_batches,
                             seed=self.config.seed + ann.round, time_budget_s=budget.time_cap_s,
                             adversarial="fgsm" if self.profile.adversarial_training else None).delta
        weight = max(1, min(round(len(self.encoded) / max(1, ann.weight_unit)), 0xFFFFFFFF))
        if self.config.record_updates_dir:
            out = Path(self.config.record_updates_dir)
            out.mkdir(parents=True, exist_ok=True)
            np.save(out / f"{self.config.agent_id}-r{ann.round}.{ann.attempt}.npy", delta, allow_pickle=False)
            (out / f"{self.config.agent_id}-r{ann.round}.{ann.attempt}.weight").write_text(str(weight))
        # Keyed by the session: a late result of an earlier attempt is never used for a later one.
        self.trained = ((ann.round, ann.attempt, ann.cohort), delta, weight)

    def _on_frame(self, env: Envelope) -> None:
        ann = self.announce
        if self.session is None or ann is None or (env.round, env.attempt, env.cohort) != \
                (ann.round, ann.attempt, ann.cohort):
            return  # someone else's cohort or a past round
        try:
            self._send(self.session.receive(env.body))
        except Refusal as exc:
            self._refuse(exc, f"protocol frame ({type(exc).__name__})")
        except ValueError as exc:
            self._reject(f"protocol frame refused: {type(exc).__name__}: {exc}")

    def _send(self, frames) -> None:
        ann = self.announce
        for kind, frame in frames:
            env = Envelope(ann.round, ann.attempt, ann.cohort, kind, frame).encode()
            self.transport.publish(self.topics.agent(self.config.agent_id, kind), env)
            if kind == "masked":
                self.store.state.uploaded.append(f"{ann.round}.{ann.attempt}.{ann.cohort}")
                self.store.save()

    def _end_session(self) -> None:
        if self.session is not None:
            # Whatever the outcome: a round that may have revealed the mask secret ends the epoch.
            self.keyrings.finish(self.announce.cohort, self.session.session)
        self.session = None
        self.announce = None
        self.state = "detecting" if self.model_version >= 0 else "online"

    # periodic work -----------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        hb = Heartbeat(self.config.agent_id, self.state, self.store.state.last_round, self.model_version,
                       self.alerts, self.records)
        self.transport.publish(self.topics.agent(self.config.agent_id, "heartbeat"), hb.encode())
        if self.store.state.alert_seq != self._saved_seq:
            # Persist the alert sequence so alerts after a restart are not taken for duplicates.
            self._saved_seq = self.store.state.alert_seq
            self.store.save()

    def _tick(self, now: float) -> None:
        self._maybe_enrol(now)
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + self.config.heartbeat_s
            self._heartbeat()
        ann = self.announce
        if self.session is not None and self.trained is not None and self.session.wants_input \
                and self.trained[0] == (ann.round, ann.attempt, ann.cohort):
            _, delta, weight = self.trained
            try:
                self._send(self.session.provide_input(delta, weight))
            except (ProtocolError, ValueError) as exc:
                self._reject(f"local update refused: {type(exc).__name__}: {exc}")
        if self.session is None and self.detector is not None and self.encoded is not None and now >= self.next_record:
            self.next_record = now + 1.0 / self.config.stream_rate_hz
            self._detect_one()

    def _detect_one(self) -> None:
        """Replay of the local partition as a record stream: classify one record, alert on attacks."""
        self.state = "detecting"
        i = self.records % len(self.encoded)
        self.records += 1
        version, runtime = self.detector
        logits = runtime.logits(self.encoded.x[i:i + 1])[0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        cls = int(probs.argmax())
        label = self.pipeline.classes[cls]
        if label != "normal":
            self.store.state.alert_seq += 1
            self.alerts += 1
            alert = Alert(self.config.agent_id, self.store.state.alert_seq, label, round(float(probs[cls]), 4),
                          version)
            self.transport.publish(self.topics.agent(self.config.agent_id, "alerts"), alert.encode())
