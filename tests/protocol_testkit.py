"""Helpers for the protocol tests: a small cohort driven step by step through real frames."""
from __future__ import annotations

import numpy as np

from ztfl.protocol.client import ClientSession
from ztfl.protocol.config import RoundConfig
from ztfl.protocol.server import ServerSession
from ztfl.protocol.simulate import Cohort
from ztfl.protocol.stages import Stage


class Round:
    """A server and its clients, advanced one stage at a time, keeping every frame sent."""

    def __init__(self, n: int = 5, threshold: int = 4, dim: int = 6, epoch: int = 1, round_id: int = 7,
                 cohort: Cohort | None = None, epoch_graphs: dict | None = None, **config_kw):
        self.ids = list(range(1, n + 1))
        self.cohort = cohort or Cohort.create(self.ids, epoch)
        self.config = RoundConfig(dim=dim, threshold=threshold, max_clients=n, max_weight=10, **config_kw)
        self.server = ServerSession(self.config, self.cohort.server_identity, self.cohort.directory,
                                    epoch, round_id, epoch_graphs=epoch_graphs)
        self.clients = {c: ClientSession(c, self.cohort.identities[c], self.cohort.directory,
                                         self.cohort.epoch_keys[c], round_id)
                        for c in self.ids}
        rng = np.random.default_rng(n * 1000 + dim)
        self.inputs = {c: rng.uniform(-2, 2, size=dim) for c in self.ids}
        self.weights = {c: int(rng.integers(1, 10)) for c in self.ids}
        for c in self.ids:
            self.clients[c].set_input(self.inputs[c], self.weights[c])
        self.to_clients = {c: self.server.round_config() for c in self.ids}   # pending server frames
        self.replies: dict[Stage, dict[int, bytes]] = {}
        self.history: dict[Stage, dict[int, bytes]] = {}

    def step(self, drop=()):
        """Clients answer their pending frame (except `drop`), the server closes the stage."""
        stage = self.server.stage
        self.history[stage] = dict(self.to_clients)
        replies = {}
        for c, frame in self.to_clients.items():
            if c in drop or frame is None:
                continue
            reply = self.clients[c].receive(frame)
            if reply is not None:
                replies[c] = reply
                self.server.receive(reply)
        self.replies[stage] = replies
        out = self.server.close_stage()
        self.to_clients = {c: out.frame_for(c) for c in self.ids if out.frame_for(c) is not None}
        return out

    def run(self, drops: dict[Stage, set] | None = None):
        drops = drops or {}
        gone: set = set()
        while not self.server.stage.terminal:
            gone |= set(drops.get(self.server.stage, ()))
            self.step(drop=gone)
            if self.server.stage == Stage.ABORTED:
                for c, frame in self.to_clients.items():
                    if c not in gone and not self.clients[c].stage.terminal:
                        self.clients[c].receive(frame)
        return self.server.result

    def expected(self, survivors):
        from ztfl.protocol.simulate import expected_sums
        return expected_sums(self.config, self.inputs, self.weights, survivors)


def drive(server: ServerSession, clients: dict, drop_before: dict | None = None):
    """One round through `server`, stage after stage until it ends (the graph reveal included when
    the round has one), with CPython ClientSessions and firmware clients side by side (a firmware
    client's receive returns (reply, error name)). `drop_before[c] = stage`: client c gets nothing
    from that stage on. A firmware client refusing an honest frame fails the test."""
    drop_before = drop_before or {}
    order = Stage.order(server.config.reveals_graph)
    out = server.round_config()
    while not server.stage.terminal:
        stage = server.stage
        for c, client in clients.items():
            stop = drop_before.get(c)
            frame = out if isinstance(out, bytes) else out.frame_for(c)
            if frame is None or (stop is not None and order.index(stage) >= order.index(stop)):
                continue
            reply = client.receive(frame)
            if isinstance(reply, tuple):
                reply, error = reply
                assert error is None, f"client {c} refused the {stage.value} frame: {error}"
            if reply is not None:
                server.receive(reply)
        out = server.close_stage()
    return out
