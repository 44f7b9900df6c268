"""Prometheus metrics and the JSON status endpoint of a gateway, on one small HTTP server.

GET /metrics -> Prometheus text format; GET /status -> the status document `ztfl status` shows.

Refused peer messages are counted in one place, `count_refusal`, by the refusal's reason code
(protocol.refusal): the `reason` label of `ztfl_rejected_messages` and the `refusals` of /status.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class GatewayMetrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.rounds = Counter("ztfl_rounds", "rounds by outcome", ["outcome"], registry=r)
        self.round = Gauge("ztfl_round", "last committed round", registry=r)
        self.agents = Gauge("ztfl_agents", "agents by state", ["state"], registry=r)
        self.alerts = Counter("ztfl_alerts", "alerts received", ["agent", "label"], registry=r)
        self.rejected = Counter("ztfl_rejected_messages", "messages rejected, by refusal reason code", ["reason"],
                                registry=r)
        self.refusals: dict[str, int] = {}     # the same counts, for /status
        self.attestation = Counter("ztfl_attestation", "attestation verdicts by root of trust (tpm, software)",
                                   ["root", "verdict", "reason"], registry=r)
        self.dropouts = Counter("ztfl_dropouts", "participants that dropped out of a round", registry=r)
        self.bytes = Counter("ztfl_bytes", "payload bytes through the gateway", ["direction"], registry=r)
        self.accuracy = Gauge("ztfl_model_accuracy", "validation accuracy of the latest model",
                              ["variant"], registry=r)
        self.macro_f1 = Gauge("ztfl_model_macro_f1", "validation macro-F1 of the latest model",
                              ["variant"], registry=r)
        self.epsilon_spent = Gauge("ztfl_privacy_epsilon_spent", "distributed DP: cumulative epsilon spent",
                                   ["cohort"], registry=r)
        self.epsilon_budget = Gauge("ztfl_privacy_epsilon_budget", "distributed DP: the epsilon budget",
                                    ["cohort"], registry=r)
        self.key_epoch = Gauge("ztfl_key_epoch", "key epoch id in use", ["cohort"], registry=r)
        self.key_epoch_age = Gauge("ztfl_key_epoch_age_seconds", "age of the key epoch in use",
                                   ["cohort"], registry=r)
        self.key_epoch_rounds = Gauge("ztfl_key_epoch_rounds", "protocol rounds run in the key epoch in use",
                                      ["cohort"], registry=r)
        self.key_setups = Counter("ztfl_key_setups", "agents that advertised mask keys new to the gateway",
                                  ["cohort"], registry=r)

    def count_refusal(self, reason: str) -> None:
        """One refused peer message, by the reason code of its Refusal class."""
        self.rejected.labels(reason).inc()
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StatusServer:
    """Serves /metrics and /status on a loopback (or configured) port, in a daemon thread."""

    def __init__(self, host: str, port: int, metrics: GatewayMetrics, status: Callable[[], dict]):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/metrics":
                    body, ctype = metrics.render(), CONTENT_TYPE_LATEST
                elif self.path == "/status":
                    body, ctype = json.dumps(outer.status()).encode(), "application/json"
                else:
                    self.send_error(404)
                    return
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up waiting; nothing to clean up

            def log_message(self, *args):
                return

        self.status = status
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
