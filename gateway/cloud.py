"""The cloud tier: combines the fog gateways' aggregates into the federation's global model.

Each gateway in parent mode sends, per round and model variant, the weighted-mean update its
cohorts decoded and the number of samples behind it. The cloud waits until every expected gateway
reported (or `wait_s` after the first report), averages the updates by samples, applies them to
its model, versions it (same registry as a gateway: atomic files + SQLite) and publishes it back
down (retained), where each gateway adopts it as its next global model.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ztfl.models.partition import train_validation
from ztfl.models.spec import ModelSpec
from ztfl.fednet.topics import CloudTopics, TopicError
from ztfl.fednet.transport import MqttTransport
from ztfl.fednet.messages import AGGREGATE_FIELDS, VectorMessage
from ztfl.gateway.cloud_config import CloudConfig
from ztfl.protocol.refusal import Refusal
from ztfl.gateway.registry import ModelVersion, Registry
from ztfl.models.params import get_flat, set_flat
from ztfl.models.preprocess import Pipeline
from ztfl.models.training import evaluate

log = logging.getLogger("ztfl.cloud")


class Cloud:
    def __init__(self, config: CloudConfig):
        self.config = config
        self.topics = CloudTopics(config.federation)
        self.registry = Registry(config.state_dir)
        train, val = train_validation(config.partition())
        pipeline = Pipeline.fit(train)
        self.val = pipeline.encode(val)
        self.specs = {v: ModelSpec(v, pipeline.n_features, pipeline.n_classes, config.model_size)
                      for v in ("cnn-lstm", "micro")}
        latest = self.registry.latest_models()
        self.models, self.versions = {}, {}
        for variant, spec in self.specs.items():
            if variant in latest:
                self.versions[variant] = latest[variant]
                self.models[variant] = self.registry.load_model(latest[variant])
            else:
                # Same seed as the gateways: every tier starts from the same version 0.
                flat = get_flat(spec.build(seed=config.seed))
                self.versions[variant] = self.registry.commit_initial_model(variant, flat)
                self.models[variant] = flat
        self.pending: dict[tuple[int, str], dict[str, tuple[np.ndarray, int]]] = {}
        self.first_seen: dict[tuple[int, str], float] = {}
        self.rejected = 0
        self.transport = MqttTransport(config.broker.with_default_client_id(f"cloud-{config.federation}"),
                                       [self.topics.gateways_wildcard()], config.max_payload)

    def _publish(self, variant: str) -> None:
        mv = self.versions[variant]
        msg = VectorMessage({"variant": variant, "version": mv.version, "round": mv.round, "sha256": mv.sha256},
                            self.models[variant])
        self.transport.publish(self.topics.broadcast(f"model-{variant}"), msg.encode(), retain=True)

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            gateway, kind = self.topics.parse_gateway_topic(topic)
            if kind != "aggregate":
                raise TopicError(f"unknown kind {kind}")
            msg = VectorMessage.decode(payload, self.config.max_payload, AGGREGATE_FIELDS)
        except Refusal as exc:
            self.rejected += 1
            log.warning("rejected %s: %s", topic, exc)
            return
        h = msg.header
        variant = h["variant"]
        if (h["gateway"] != gateway or gateway not in self.config.gateways or variant not in self.models
                or msg.vector.size != self.models[variant].size or h["samples"] < 1
                or h["base_version"] != self.versions[variant].version):
            self.rejected += 1
            log.warning("rejected aggregate from %s for %s round %d (base v%d, ours v%d)", gateway, variant,
                        h["round"], h["base_version"], self.versions.get(variant, ModelVersion("", -1, 0, "", Path(), {})).version)
            return
        key = (h["round"], variant)
        self.pending.setdefault(key, {})[gateway] = (msg.vector, h["samples"])  # a resend replaces
        self.first_seen.setdefault(key, time.monotonic())

    def _combine(self, now: float) -> None:
        for key in list(self.pending):
            reports = self.pending[key]
            if set(reports) >= set(self.config.gateways) or now - self.first_seen[key] >= self.config.wait_s:
                rnd, variant = key
                total = sum(n for _, n in reports.values())
                delta = sum(v.astype(np.float64) * n for v, n in reports.values()) / total
                new = (self.models[variant].astype(np.float64) + delta).astype(np.float32)
                model = self.specs[variant].build()
                set_flat(model, new)
                m = evaluate(model, self.val)
                metrics = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "gateways": sorted(reports),
                           "samples": total}
                version = self.versions[variant].version + 1
                path, digest = self.registry.write_model_file(variant, version, new)
                mv = ModelVersion(variant, version, rnd, digest, path, metrics)
                self.registry.begin_round(rnd, self.registry.next_attempt(rnd))
                self.registry.commit_round(rnd, self.registry.next_attempt(rnd) - 1, [mv], {"metrics": {variant: metrics}})
                self.versions[variant], self.models[variant] = mv, new
                self._publish(variant)
                log.info("round %d: %s v%d from %s (%d samples), accuracy %.4f", rnd, variant, version,
                         sorted(reports), total, metrics["accuracy"])
                del self.pending[key], self.first_seen[key]

    def run_forever(self) -> int:
        self.transport.start()
        for variant in self.models:
            self._publish(variant)
        seen = self.transport.connects
        try:
            while self.versions["cnn-lstm"].round < self.config.rounds:
                msg = self.transport.get(0.1)
                while msg is not None:
                    self.handle(msg.topic, msg.payload)
                    msg = self.transport.get(0)
                if self.transport.connects != seen:
                    seen = self.transport.connects
                    for variant in self.models:
                        self._publish(variant)
                self._combine(time.monotonic())
            time.sleep(1.0)   # let the last retained model go out
        finally:
            self.transport.stop()
            self.registry.close()
        return 0
