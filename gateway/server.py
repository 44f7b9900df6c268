"""The fog gateway: tracks agents, runs rounds cohort by cohort, versions the global models.

Round orchestration (one thread, driven by `step()`):

    WAITING --(enough agents online)--> RUNNING --(every cohort closed)--> commit | abort
       ^                                                                       |
       `------------------ next round, or the same round's next attempt -------'

A round commits when at least one cohort aggregated: each model variant with a decoded
aggregate gets a new version (file written atomically, then one SQLite transaction). A round
where every cohort failed is aborted and retried after `retry_delay_s` (up to `max_attempts`).

Per cohort the gateway keeps its key epochs (gateway.epochs: which epoch and protocol round id
each attempt uses, whether keys are reused) and, with distributed DP configured, its privacy
ledger (gateway.dp): a cohort whose budget is spent sits out (mode stop), and when no cohort can
run any more for that reason the gateway stops.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from functools import partial
from pathlib import Path

import numpy as np
from nacl.signing import SigningKey

from ztfl.models.partition import train_validation
from ztfl.models.spec import ModelSpec, flat_to_tensors, layout
from ztfl.fednet.topics import CloudTopics, Topics, require_sender
from ztfl.fednet.transport import MqttTransport
from ztfl.fednet.messages import (CERTIFIED_ANNOUNCE, CLOUD_MODEL_FIELDS, Alert, Envelope, Heartbeat, Hello, ModelBlob,
                        RoundAnnounce, RoundEnd, VectorMessage, WireError, DetectorBlob, dp_document)
from ztfl.attestation.errors import EnrolmentError
from ztfl.gateway.cohort import CohortRun, CohortState, Participant, cohort_name, threshold_for
from ztfl.gateway.config import GatewayConfig
from ztfl.gateway.epochs import KeyEpochs
from ztfl.gateway.secagg import FRAC_BITS, clip_q
from ztfl.gateway.liveness import AgentTable
from ztfl.gateway.metrics import GatewayMetrics, StatusServer
from ztfl.gateway.registry import ModelVersion, Registry
from ztfl.models.params import set_flat
from ztfl.models.preprocess import Pipeline
from ztfl.models.training import evaluate
from ztfl.protocol.errors import WrongRound
from ztfl.protocol.refusal import Refusal

log = logging.getLogger("ztfl.gateway")
STATE_WRITE_FAILED = 3      # exit code: the state directory could not be written


class Gateway:
    def __init__(self, config: GatewayConfig):
        self.config = config
        self.topics = Topics(config.federation, config.gateway)
        self.state_dir = Path(config.state_dir)
        self.registry = Registry(self.state_dir)
        self.metrics = GatewayMetrics()
        self.agents = AgentTable(offline_after_s=3 * config.heartbeat_s + 2)
        self.certificates = None                     # gateway.trust.GatewayCertificates, with `trust:`
        if config.trust is not None:
            from ztfl.gateway.trust import GatewayCertificates
            self.certificates = GatewayCertificates(config.trust, config.federation, config.gateway, int(time.time()))
        self.identity = self.certificates.identity.key if self.certificates else self._load_identity()
        self.attestation = None
        if config.require_attestation:
            from ztfl.gateway.attest import GatewayAttestation
            self.attestation = GatewayAttestation(self.state_dir, config.software_devices,
                                                  config.allow_software_rooted, config.attestation)
        self._prepare_data()
        self.models: dict[str, np.ndarray] = {}
        self.versions: dict[str, ModelVersion] = {}
        self._load_models()
        self.round = self.registry.last_committed_round() + 1
        self.attempt = self.registry.next_attempt(self.round)
        self.cohorts: dict[str, CohortRun] = {}
        self.cloud = CloudTopics(config.federation) if config.parent else None
        self.cloud_models: dict[str, tuple[int, np.ndarray]] = {}
        self.awaiting: dict | None = None          # parent mode: round waiting for the cloud's model
        self.round_started = 0.0
        self.next_start = 0.0
        self.history: list[dict] = []
        self.sids: dict[str, int] = {}
        self.roots: dict[str, str] = {}              # agent -> root of trust of its seat this round
        self.challenges: dict[str, tuple[bytes, bytes, float]] = {}   # agent -> open (request, challenge, expiry)
        self._status: dict = {}
        self.done = False
        self.stop_requested = False                  # SIGTERM: stop now, also with --serve or lingering
        self.failed = False
        self.stopped = ""                            # why the gateway stopped before its last round
        self.key_epochs = KeyEpochs(self.state_dir, config.epoch_policy)
        self.privacy = None
        if config.uses_privacy():
            from ztfl.gateway.dp import PrivacyBook
            self.privacy = PrivacyBook(self.state_dir, config.privacy_spec, config.rounds)
        self.bytes_up = self.bytes_down = 0          # payload bytes through this gateway
        self._round_bytes = (0, 0)
        subscriptions = [self.topics.agents_wildcard()]
        if self.cloud is not None:
            subscriptions.append(self.cloud.broadcast("+"))
        broker = config.broker.with_default_client_id(f"gateway-{config.federation}-{config.gateway}")
        self.transport = MqttTransport(broker, subscriptions, config.max_payload)
        self.http = StatusServer(config.http_host, config.http_port, self.metrics, lambda: self._status)

    # setup -------------------------------------------------------------------------------------
    def _load_identity(self) -> SigningKey:
        path = self.state_dir / "identity.key"
        if path.exists():
            return SigningKey(path.read_bytes())
        key = SigningKey.generate()
        from ztfl.fednet.files import atomic_write_bytes
        atomic_write_bytes(path, bytes(key))
        path.chmod(0o600)
        return key

    def _prepare_data(self) -> None:
        spec = self.config.partition()
        train, val = train_validation(spec)
        self.pipeline = Pipeline.fit(train)
        self.val = self.pipeline.encode(val)
        self.pipeline_json = json.dumps(self.pipeline.to_dict()).encode()
        (self.state_dir / "pipeline.json").write_bytes(self.pipeline_json)
        self.specs = {v: ModelSpec(v, self.pipeline.n_features, self.pipeline.n_classes, self.config.model_size)
                      for v in ("cnn-lstm", "micro")}
        self.layouts = {v: layout(s.build()) for v, s in self.specs.items()}

    def _load_models(self) -> None:
        for path in self.registry.remove_uncommitted_files():
            log.warning("removed %s: left by a write or a round that never committed", path)
        latest = self.registry.latest_models()
        for variant, spec in self.specs.items():
            if variant in latest:
                self.versions[variant] = latest[variant]
                self.models[variant] = self.registry.load_model(latest[variant])
            else:
                from ztfl.models.params import get_flat
                flat = get_flat(spec.build(seed=self.config.seed))
                self.versions[variant] = self.registry.commit_initial_model(variant, flat)
                self.models[variant] = flat
        log.info("models loaded: %s", {v: mv.version for v, mv in self.versions.items()})

    def start(self) -> None:
        self.transport.start()
        self.http.start()
        (self.state_dir / "http.port").write_text(str(self.http.port))
        self._connects_seen = self.transport.connects
        self._publish_retained()
        if self.registry.last_committed_round() >= self.config.rounds:
            self.done = True
        # A round left running by a crash is closed as aborted; its next attempt starts fresh.
        for r in self.registry.rounds():
            if r["status"] == "running":
                self.registry.abort_round(r["round"], r["attempt"], "gateway restarted")
        self.attempt = self.registry.next_attempt(self.round)
        self._refresh_status()

    def stop(self) -> None:
        self.transport.stop()
        self.http.stop()
        self.registry.close()

    def _publish_model(self, variant: str) -> None:
        mv = self.versions[variant]
        blob = ModelBlob(mv.version, variant, mv.sha256, flat_to_tensors(self.models[variant], self.layouts[variant]))
        payload = blob.encode()
        self.metrics.bytes.labels("down").inc(len(payload))
        self.bytes_down += len(payload)
        # One retained topic per variant: a late-joining agent gets its model at once.
        self.transport.publish(self.topics.broadcast(f"model-{variant}"), payload, retain=True)
        if variant == "cnn-lstm":
            self._publish_detector(variant, mv.version)

    def _publish_detector(self, variant: str, version: int) -> None:
        """Export the int8 ONNX detector once here rather than on every agent."""
        import tempfile
        from ztfl.models.export.onnx_export import export_int8
        model = self.specs[variant].build()
        set_flat(model, self.models[variant])
        with tempfile.TemporaryDirectory() as tmp:
            path = export_int8(model, self.pipeline, Path(tmp) / "detector.int8.onnx")
            payload = DetectorBlob(version, path.read_bytes()).encode()
            if self.attestation is not None:
                # Agents must run a model file this gateway distributed (runtime policy).
                self.attestation.record_model(path.read_bytes())
        self.bytes_down += len(payload)
        self.transport.publish(self.topics.broadcast(f"detector-{variant}"), payload, retain=True)

    # message handling --------------------------------------------------------------------------
    def _refuse(self, reason: str, detail: str) -> None:
        """Count a refused peer message by its refusal's reason code, and log why."""
        self.metrics.count_refusal(reason)
        log.warning("refused message (%s): %s", reason, detail)

    def handle(self, topic: str, payload: bytes) -> None:
        self.metrics.bytes.labels("up").inc(len(payload))
        self.bytes_up += len(payload)
        try:
            if self.cloud is not None and topic.startswith(self.cloud.base + "/broadcast/model-"):
                return self._on_cloud_model(payload)
            agent_id, kind = self.topics.parse_agent_topic(topic)
            if kind == "hello":
                self._on_hello(agent_id, Hello.decode(payload))
            elif kind == "heartbeat":
                msg = Heartbeat.decode(payload)
                require_sender(agent_id, msg.agent_id, "heartbeat")
                self.agents.heartbeat(msg)
            elif kind == "alerts":
                msg = Alert.decode(payload)
                require_sender(agent_id, msg.agent_id, "alert")
                if self.agents.alert(msg):
                    self.metrics.alerts.labels(agent_id, msg.label).inc()
            elif kind in ("protocol", "masked"):
                self._on_frame(agent_id, payload)
            elif kind == "attest":
                self._on_attest(agent_id, payload)
            elif kind == "enrol":
                self._on_enrol(agent_id, payload)
        except Refusal as exc:
            self._refuse(exc.reason, f"{topic}: {exc}")

    def _on_hello(self, agent_id: str, msg: Hello) -> None:
        require_sender(agent_id, msg.agent_id, "hello")
        pk = self.agents.identity_of(msg)
        refusal = self.certificates.refusal(msg, pk, int(time.time())) if self.certificates else None
        if refusal is not None:
            self._refuse(refusal.reason, f"{agent_id}: {refusal}")    # counted; no seat (_eligible)
        if self.attestation is not None:
            refusal = self.attestation.refusal_before_round(agent_id, msg.attestation)
            if refusal is not None:
                # Counted once per announcement; the agent stays out of every cohort (_eligible).
                self.metrics.attestation.labels(self.attestation.root_of(agent_id) or "unknown", "refused",
                                                refusal.reason).inc()
                self._refuse(refusal.reason, f"{agent_id}: {refusal}")
        self.agents.hello(msg, pk)
        self.registry.upsert_agent(agent_id, msg.profile, msg.model_variant, msg.mask_bits, msg.samples)
        log.info("agent %s (%s, %s/%d-bit) announced %d samples", agent_id, msg.profile,
                 msg.model_variant, msg.mask_bits, msg.samples)

    def _cohort_of(self, agent_id: str) -> CohortRun | None:
        for run in self.cohorts.values():
            if agent_id in run.participants:
                return run
        return None

    def _on_frame(self, agent_id: str, payload: bytes) -> None:
        env = Envelope.decode(payload, self.config.max_payload)
        run = self._cohort_of(agent_id)
        if run is None or (env.round, env.attempt, env.cohort) != (run.round, run.attempt, run.name):
            raise WrongRound(f"frame for round {env.round}.{env.attempt} {env.cohort}, "
                             f"current {self.round}.{self.attempt}")
        run.receive(agent_id, env.body)

    def _on_enrol(self, agent_id: str, payload: bytes) -> None:
        if self.attestation is None:
            raise EnrolmentError("enrolment sent to a gateway without attestation")
        # An agent resends its request until it answers, so a copy may cross the challenge in
        # flight: it gets the open challenge again, as a new secret would fail the first answer.
        request, challenge, expiry = self.challenges.pop(agent_id, (b"", None, 0.0))
        if request != payload or time.monotonic() >= expiry:
            challenge = self.attestation.on_enrol(agent_id, payload)
            expiry = time.monotonic() + self.attestation.authority.challenge_ttl_s
        if challenge is not None:
            self.challenges[agent_id] = (payload, challenge, expiry)
            self._send(self.topics.to_agent(agent_id, "attest"), challenge)

    def _on_attest(self, agent_id: str, payload: bytes) -> None:
        run = self._cohort_of(agent_id)
        if run is None or self.attestation is None:
            raise WrongRound("attestation outside a round")
        verdict = self.attestation.verify(agent_id, run.round, run.attempt,
                                          run.participants[agent_id].identity_pk, payload)
        if verdict.receipt:
            # How much of its IMA list this gateway holds: the agent sends only what follows.
            self._send(self.topics.to_agent(agent_id, "attest"), verdict.receipt)
        self.metrics.attestation.labels(verdict.root, "seated" if verdict.ok else "refused", verdict.reason).inc()
        if verdict.ok:
            self.roots[agent_id] = verdict.root
        else:
            self._refuse(verdict.reason, f"{agent_id}: {verdict.message}")
        run.attested(agent_id, verdict.ok, verdict.message)

    # rounds ------------------------------------------------------------------------------------
    def _sid(self, agent_id: str) -> int:
        if agent_id not in self.sids:
            self.sids[agent_id] = len(self.sids) + 1
        return self.sids[agent_id]

    def _start_round(self, now: float) -> None:
        groups: dict[tuple[str, int], list] = {}
        for info in self._eligible():
            groups.setdefault((info.hello.model_variant, info.hello.mask_bits), []).append(info)
        self.cohorts = {}
        self.roots = {}
        self.registry.begin_round(self.round, self.attempt)
        self.round_started = now
        self._round_bytes = (self.bytes_up, self.bytes_down)
        privacy_refusals: dict[str, str] = {}
        for (variant, bits), members in sorted(groups.items()):
            name = cohort_name(variant, bits)
            if len(members) < self.config.min_cohort or variant not in self.models:
                log.info("round %d: cohort %s has %d agents, below %d: sits out", self.round,
                         name, len(members), self.config.min_cohort)
                continue
            members.sort(key=lambda a: a.hello.agent_id)
            participants = {a.hello.agent_id: Participant(a.hello.agent_id, self._sid(a.hello.agent_id),
                                                          a.identity_pk, a.hello.samples) for a in members}
            dim = self.models[variant].size
            threshold = threshold_for(len(participants), self.config.threshold_fraction)
            dp = self.privacy.cohort(name) if self.privacy is not None else None
            if dp is not None:
                params = dp.params_for(dim, FRAC_BITS[bits])
                refusal = dp.refusal_before_round(len(participants), clip_q(bits), bits)
                if refusal:
                    log.warning("round %d: cohort %s sits out: %s", self.round, name, refusal)
                    privacy_refusals[name] = refusal
                    continue
                # A round with fewer survivors than the noise counts on aborts before unmasking.
                threshold = max(threshold, params.min_survivors)
            try:
                plan = self.key_epochs.cohort(name).plan(self.round, self.attempt, now)
            except ValueError as exc:
                log.error("round %d.%d: cohort %s sits out: %s", self.round, self.attempt, name, exc)
                continue
            quoted = any(self._needs_quote(a) for a in members)
            run = CohortRun(self.round, self.attempt, variant, bits, participants, threshold,
                            self.config.deadlines_s.by_stage(), quoted,
                            dim=dim, server_identity=self.identity,
                            nonce=(self.attestation.issue_nonce(self.round, self.attempt) if quoted
                                   else os.urandom(32)),
                            epoch=plan.epoch, protocol_round=plan.protocol_round, key_reuse=plan.key_reuse,
                            revealed_keys=self.key_epochs.cohort(name).revealed,
                            dp=params if dp is not None else None)
            if dp is not None:
                run.release_check = partial(self._release, run)
            run.start(now)
            self.cohorts[run.name] = run
            announce = RoundAnnounce(self.round, self.attempt, run.name, variant, bits,
                                     self.versions[variant].version, self.versions[variant].sha256,
                                     self._seats(participants),
                                     run.threshold, run.nonce.hex(), self.config.deadlines_s.by_stage(),
                                     weight_unit=run.weight_unit,
                                     server_pk=bytes(self.identity.verify_key).hex(),
                                     # Left out for cohorts without key epochs: agents that predate
                                     # the fields (firmware) refuse unknown ones.
                                     epoch=plan.epoch if plan.announced else None,
                                     protocol_round=plan.protocol_round if plan.announced else None,
                                     key_reuse=plan.key_reuse if plan.announced else None,
                                     dp=dp_document(params) if dp is not None else None,
                                     # Certified: each seat's certificate as its hello carried it.
                                     version=CERTIFIED_ANNOUNCE if self.certificates else None,
                                     server_cert=self.certificates.certificate_text if self.certificates else None)
            self._send(self.topics.broadcast("round"), announce.encode())
            log.info("round %d.%d: cohort %s with %d agents, threshold %d, epoch %d, protocol round %d%s%s",
                     self.round, self.attempt, run.name, len(participants), run.threshold, plan.epoch,
                     plan.protocol_round, ", key reuse" if plan.key_reuse else "", ", DP" if dp else "")
        if not self.cohorts and privacy_refusals and \
                all(self.privacy.cohort(n).stopped for n in privacy_refusals):
            return self._stop_for_privacy(privacy_refusals)
        if not self.cohorts:
            self._close_round(now)

    def _seats(self, participants: dict) -> list:
        """The announcement's participant entries: certificates when certified, else bare keys."""
        if self.certificates is None:
            return [[p.agent_id, p.sid, p.identity_pk.hex()] for p in participants.values()]
        return [[p.agent_id, p.sid, self.agents.agents[p.agent_id].hello.certificate] for p in participants.values()]

    def _release(self, run: CohortRun, survivors: int) -> str:
        """The privacy ledger's word on releasing this cohort's sum (before any unmasking share)."""
        refusal = self.privacy.spend(run.name, survivors, run.round, run.attempt)
        state = self.privacy.cohort(run.name)
        if refusal:
            log.error("round %d.%d: cohort %s refused before unmasking, nothing released: %s", run.round,
                      run.attempt, run.name, refusal)
            return refusal
        run.privacy_spent = dict(state.last_round)
        log.info("round %d.%d: cohort %s releases a sum of %d survivors: epsilon spent %.6g of %g", run.round,
                 run.attempt, run.name, survivors, state.last_round["epsilon_after"], state.budget.epsilon)
        return ""

    def _stop_for_privacy(self, refusals: dict[str, str]) -> None:
        """Every cohort that could run has spent its privacy budget: no round may release more."""
        self.stopped = "; ".join(f"{n}: {r}" for n, r in sorted(refusals.items()))
        self.registry.abort_round(self.round, self.attempt, f"stopped: {self.stopped}", {"cohorts": {}})
        self.metrics.rounds.labels("stopped").inc()
        log.error("gateway stops before round %d: %s", self.round, self.stopped)
        self.done = True

    def _eligible(self) -> list:
        """Online agents that can take a seat: when they must present evidence, enrolled (an agent
        that is not enrolled yet cannot produce a quote we would accept) and not refused up front
        (a device-key board without a provisioned key, or one the policy does not admit); with
        certificates, only agents whose certificate is still valid and not revoked."""
        now = int(time.time())
        return [i for i in self.agents.online()
                if not (self.certificates is not None and self.certificates.refusal(i.hello, i.identity_pk, now))
                and not (self._needs_quote(i) and
                        (not self.attestation.enrolled(i.hello.agent_id) or
                         self.attestation.refusal_before_round(i.hello.agent_id, i.hello.attestation)))]

    def _needs_quote(self, info) -> bool:
        """With attestation on, every agent presents evidence each round: a TPM quote, or for
        device-key boards (ESP32) a signature by the provisioned device key."""
        return self.attestation is not None

    def _send(self, topic: str, payload: bytes) -> None:
        self.metrics.bytes.labels("down").inc(len(payload))
        self.bytes_down += len(payload)
        self.transport.publish(topic, payload)

    def _dispatch(self, run: CohortRun, outgoing) -> None:
        # Stages may address every client with a frame of its own: look agents up once.
        agent_of = {p.sid: a for a, p in run.participants.items()} if outgoing else {}
        for out in outgoing:
            env = Envelope(run.round, run.attempt, run.name, out.stage, out.frame).encode()
            if out.to is None:
                self._send(self.topics.broadcast("protocol"), env)
            else:
                self._send(self.topics.to_agent(agent_of[out.to], "protocol"), env)

    def _close_round(self, now: float) -> None:
        keys = {}
        for run in self.cohorts.values():
            if run.aggregation is not None:
                agents = {p.sid: a for a, p in run.participants.items()}
                keys[run.name] = self.key_epochs.finish(run.name, run.aggregation.server, agents)
                self.metrics.key_setups.labels(run.name).inc(len(keys[run.name]["new_keys"]))
        done = [r for r in self.cohorts.values() if r.state is CohortState.DONE]
        detail = {"cohorts": {}, "seconds": round(now - self.round_started, 3),
                  # Bytes of this round's messages; the new model's broadcast counts in the next round.
                  "bytes_up": self.bytes_up - self._round_bytes[0],
                  "bytes_down": self.bytes_down - self._round_bytes[1]}
        for run in self.cohorts.values():
            self.registry.record_participants(self.round, self.attempt, run.name, run.outcomes())
            dropped = [a for a, (o, _) in run.outcomes().items() if o == "dropped"]
            self.metrics.dropouts.inc(len(dropped))
            detail["cohorts"][run.name] = {
                "mask_bits": run.mask_bits, "variant": run.variant, "state": run.state.value,
                "reason": run.reason, "participants": sorted(run.participants), "dropped": sorted(dropped),
                "aggregated": sorted(a for a, (o, _) in run.outcomes().items() if o == "aggregated"),
                # Root of trust of each attested seat; software-rooted ones proved a key, not code.
                "roots": {a: self.roots[a] for a in sorted(run.participants) if a in self.roots},
                "weight": run.result_weight,
                # Epoch, protocol round, key reuse; who advertised new keys, kept theirs, or lost its epoch.
                "keys": keys.get(run.name),
                "privacy": run.privacy_spent}
        if not done:
            reason = "; ".join(f"{r.name}: {r.reason}" for r in self.cohorts.values()) or "no cohort could form"
            self.registry.abort_round(self.round, self.attempt, reason, detail)
            self.metrics.rounds.labels("aborted").inc()
            log.warning("round %d.%d aborted: %s", self.round, self.attempt, reason)
            for run in self.cohorts.values():
                self._send(self.topics.broadcast("round"),
                           RoundEnd(self.round, self.attempt, run.name, "aborted",
                                    self.versions[run.variant].version, run.reason).encode())
            self.attempt += 1
            self.cohorts = {}
            if self.attempt >= self.config.max_attempts:
                log.error("round %d failed %d attempts: giving up", self.round, self.attempt)
                self.failed = self.done = True
            self.next_start = now + self.config.retry_delay_s
            return
        updates = {}
        for variant in sorted({r.variant for r in done}):
            runs = [r for r in done if r.variant == variant]
            # Cohorts of one variant combine by samples (each cohort's weight unit may differ).
            samples = [r.samples_aggregated for r in runs]
            delta = sum(r.result_mean.astype(np.float64) * n for r, n in zip(runs, samples)) / sum(samples)
            updates[variant] = (delta, int(sum(samples)))
        if self.cloud is not None:
            self._report_up(updates, detail, now)
            return
        new_models = {v: (self.models[v].astype(np.float64) + d).astype(np.float32) for v, (d, _) in updates.items()}
        for variant in {r.variant for r in done if r.dp is not None}:
            from ztfl.gateway.dp import clamp_variances
            if clamp_variances(new_models[variant], self.layouts[variant]):
                log.info("round %d: negative BatchNorm variances of %s after the noise clamped to 0", self.round,
                         variant)
        self._commit(new_models, detail, now)

    def _report_up(self, updates: dict, detail: dict, now: float) -> None:
        """Parent mode: send each variant's fog aggregate to the cloud, then wait for its model."""
        for variant, (delta, samples) in updates.items():
            msg = VectorMessage({"gateway": self.config.gateway, "round": self.round, "variant": variant,
                                 "base_version": self.versions[variant].version, "samples": samples},
                                delta.astype(np.float32))
            self.transport.publish(self.cloud.from_gateway(self.config.gateway, "aggregate"), msg.encode())
        self.awaiting = {"variants": set(updates), "detail": detail,
                         "deadline": now + self.config.parent.wait_s}
        log.info("round %d.%d: aggregates of %s sent to the cloud", self.round, self.attempt, sorted(updates))

    def _on_cloud_model(self, payload: bytes) -> None:
        msg = VectorMessage.decode(payload, self.config.max_payload, CLOUD_MODEL_FIELDS)
        variant, version = msg.header["variant"], msg.header["version"]
        if variant not in self.models or msg.vector.size != self.models[variant].size:
            raise WireError(f"cloud model for {variant} does not fit this gateway's model")
        self.cloud_models[variant] = (version, msg.vector)

    def _check_cloud(self, now: float) -> None:
        wanted = self.awaiting
        ready = {v: self.cloud_models.get(v) for v in wanted["variants"]}
        if all(r is not None and r[0] == self.versions[v].version + 1 for v, r in ready.items()):
            self.awaiting = None
            wanted["detail"]["cloud"] = True
            self._commit({v: r[1] for v, r in ready.items()}, wanted["detail"], now)
        elif now >= wanted["deadline"]:
            self.awaiting = None
            for run in self.cohorts.values():
                self._send(self.topics.broadcast("round"),
                           RoundEnd(self.round, self.attempt, run.name, "aborted",
                                    self.versions[run.variant].version, "no model from the cloud").encode())
            self.cohorts = {}
            self.registry.abort_round(self.round, self.attempt, "no model from the cloud", wanted["detail"])
            self.metrics.rounds.labels("aborted").inc()
            self.attempt += 1
            self.next_start = now + self.config.retry_delay_s

    def _commit(self, new_models: dict[str, np.ndarray], detail: dict, now: float) -> None:
        new_versions = []
        for variant, new in sorted(new_models.items()):
            metrics = self._evaluate(variant, new)
            version = self.versions[variant].version + 1
            path, digest = self.registry.write_model_file(variant, version, new)
            new_versions.append((ModelVersion(variant, version, self.round, digest, path, metrics), new))
        detail["metrics"] = {mv.variant: mv.metrics for mv, _ in new_versions}
        self.registry.commit_round(self.round, self.attempt, [mv for mv, _ in new_versions], detail)
        for mv, vector in new_versions:
            self.versions[mv.variant], self.models[mv.variant] = mv, vector
            self.metrics.accuracy.labels(mv.variant).set(mv.metrics["accuracy"])
            self.metrics.macro_f1.labels(mv.variant).set(mv.metrics["macro_f1"])
            self._publish_model(mv.variant)
        for run in self.cohorts.values():
            self._send(self.topics.broadcast("round"),
                       RoundEnd(self.round, self.attempt, run.name,
                                "committed" if run.state is CohortState.DONE else "aborted",
                                self.versions[run.variant].version, run.reason).encode())
        self.metrics.rounds.labels("committed").inc()
        self.metrics.round.set(self.round)
        log.info("round %d.%d committed: %s", self.round, self.attempt,
                 {mv.variant: (mv.version, round(mv.metrics["accuracy"], 4)) for mv, _ in new_versions})
        self.cohorts = {}
        self.round += 1
        self.attempt = 0
        self.next_start = now + self.config.round_interval_s
        if self.round > self.config.rounds:
            self.done = True

    def _evaluate(self, variant: str, flat: np.ndarray) -> dict:
        model = self.specs[variant].build()
        set_flat(model, flat)
        m = evaluate(model, self.val)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "binary_accuracy": m["binary_accuracy"]}

    def _publish_retained(self) -> None:
        self.transport.publish(self.topics.broadcast("pipeline"), self.pipeline_json, retain=True)
        revocations = self.certificates.republish() if self.certificates else None
        if revocations is not None:
            self.transport.publish(self.topics.broadcast("revocations"), revocations, retain=True)
        for variant in self.models:
            self._publish_model(variant)

    def step(self, timeout: float = 0.1) -> None:
        if self.transport.connects != self._connects_seen:
            # A broker restarted without persistence forgot our retained messages: publish again.
            self._connects_seen = self.transport.connects
            self._publish_retained()
        msg = self.transport.get(timeout)
        handled = 0
        while msg is not None:
            self.handle(msg.topic, msg.payload)
            handled += 1
            # At most one inbox's worth a step: a flood cannot keep the rounds from ticking.
            msg = self.transport.get(0) if handled < self.transport.inbox.max_messages else None
        for reason, count in self.transport.take_refusals().items():
            for _ in range(count):      # dropped on the network thread: oversized, inbox full
                self.metrics.count_refusal(reason)
        now = time.monotonic()
        self.agents.refresh(now)
        revocations = self.certificates.revocations_update(int(time.time()), now) if self.certificates else None
        if revocations is not None:
            self.transport.publish(self.topics.broadcast("revocations"), revocations, retain=True)
        if self.done:
            self._refresh_status()
            return
        if self.awaiting is not None:
            self._check_cloud(now)
        elif not self.cohorts:
            # min_agents gates only the first round: later rounds go on with whoever is online.
            eligible = self._eligible()
            fleet_ready = self.round > 1 or len(eligible) >= self.config.min_agents
            if now >= self.next_start and fleet_ready and eligible:
                self._start_round(now)
        else:
            offline = {a for a, i in self.agents.agents.items() if i.disconnected}
            for run in list(self.cohorts.values()):
                if not run.closed:
                    self._dispatch(run, run.tick(now, offline))
            if all(r.closed for r in self.cohorts.values()):
                self._close_round(now)
        self._refresh_status()

    def _refresh_status(self) -> None:
        for state in ("online", "training", "detecting", "offline"):
            self.metrics.agents.labels(state).set(sum(1 for a in self.agents.agents.values() if a.state == state))
        key_epochs = self.key_epochs.status(time.monotonic())
        for name, k in key_epochs.items():
            if "epoch" in k:
                self.metrics.key_epoch.labels(name).set(k["epoch"])
            if "age_s" in k:
                self.metrics.key_epoch_age.labels(name).set(k["age_s"])
                self.metrics.key_epoch_rounds.labels(name).set(k["rounds_in_epoch"])
        privacy = self.privacy.status() if self.privacy is not None else {}
        for name, p in privacy.items():
            self.metrics.epsilon_spent.labels(name).set(p["epsilon_spent"])
            self.metrics.epsilon_budget.labels(name).set(p["epsilon_budget"])
        self._status = {
            "federation": self.config.federation, "gateway": self.config.gateway,
            "round": self.round, "attempt": self.attempt, "done": self.done,
            "rounds_target": self.config.rounds,
            "cohorts": {n: {"state": r.state.value, "participants": len(r.participants),
                            "mask_bits": r.mask_bits,
                            "stage": r.aggregation.stage_key if r.aggregation else "attest",
                            "epoch": r.epoch_id, "protocol_round": r.protocol_round_id,
                            "key_reuse": r.key_reuse, "dp": r.dp is not None}
                        for n, r in self.cohorts.items()},
            "key_epochs": key_epochs,
            "privacy": privacy,
            "stopped": self.stopped,
            "models": {v: {"version": mv.version, "sha256": mv.sha256, **mv.metrics}
                       for v, mv in self.versions.items()},
            "agents": {a: {"state": i.state, "profile": i.hello.profile,
                           "root": self.attestation.root_of(a) if self.attestation else None, "cohort":
                           cohort_name(i.hello.model_variant, i.hello.mask_bits),
                           "alerts": i.alerts_total, "alerts_by_label": dict(i.alerts),
                           "records": i.records_total, "model_version": i.model_version}
                       for a, i in sorted(self.agents.agents.items())},
            "rejected": self.transport.oversized,
            "refusals": dict(sorted(self.metrics.refusals.items())),
        }

    def run_forever(self, stop_when_done: bool = True) -> int:
        self.start()
        try:
            while not ((self.done and stop_when_done) or self.stop_requested):
                self.step()
            # Agents report their final state (heartbeats) while the status stays readable.
            end = time.monotonic() + self.config.linger_s
            while time.monotonic() < end and not self.stop_requested:
                self.step()
        except (OSError, sqlite3.Error) as exc:
            # A full disk or a read-only state directory: model files are renamed into place
            # before the registry commits, so what is committed is intact; stop rather than go
            # on with a state that cannot be recorded.
            log.error("cannot write the gateway state in %s (%s: %s): disk full or read-only? "
                      "Committed model versions are intact; the round is redone after a restart",
                      self.state_dir, type(exc).__name__, exc)
            return STATE_WRITE_FAILED
        finally:
            self.stop()
        return 1 if self.failed else 0
