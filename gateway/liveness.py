"""What the gateway knows about each agent: its announcement, its identity key, when it was last
heard from, its state (online / training / detecting / offline) and its alert counts.

The first hello pins the agent's identity key: a hello with another key is refused
(IdentityChanged) until the agent is enrolled again."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from ztfl.fednet.messages import Alert, Heartbeat, Hello, WireError
from ztfl.protocol.refusal import Refusal

STATES = ("online", "training", "detecting", "offline")
IDENTITY_KEY_BYTES = 32


class IdentityChanged(Refusal):
    """A hello announces another identity key than the one pinned by the agent's first hello."""

    reason = "identity"


@dataclass
class AgentInfo:
    hello: Hello
    identity_pk: bytes
    last_seen: float
    state: str = "online"
    round: int = 0
    model_version: int = -1
    alerts: Counter = field(default_factory=Counter)
    last_alert_seq: int = -1
    records_total: int = 0
    disconnected: bool = False    # its MQTT will arrived: the broker saw the connection die

    @property
    def alerts_total(self) -> int:
        return sum(self.alerts.values())


class AgentTable:
    def __init__(self, offline_after_s: float):
        self.offline_after_s = offline_after_s
        self.agents: dict[str, AgentInfo] = {}

    def identity_of(self, msg: Hello) -> bytes:
        """The identity key a hello announces, if it is well formed and the one pinned for the agent."""
        try:
            pk = bytes.fromhex(msg.identity_pk)
        except ValueError:
            pk = b""
        if len(pk) != IDENTITY_KEY_BYTES:
            raise WireError(f"{msg.agent_id}: identity key is not {IDENTITY_KEY_BYTES} hex bytes")
        known = self.agents.get(msg.agent_id)
        if known is not None and known.identity_pk != pk:
            raise IdentityChanged(f"{msg.agent_id} announced a different identity key")
        return pk

    def hello(self, msg: Hello, identity_pk: bytes, now: float | None = None) -> AgentInfo:
        now = time.monotonic() if now is None else now
        info = self.agents.get(msg.agent_id)
        if info is None:
            info = self.agents[msg.agent_id] = AgentInfo(msg, identity_pk, now)
        info.hello, info.identity_pk, info.last_seen, info.state = msg, identity_pk, now, "online"
        info.disconnected = False
        return info

    def heartbeat(self, msg: Heartbeat, now: float | None = None) -> AgentInfo | None:
        info = self.agents.get(msg.agent_id)
        if info is None:
            return None
        info.last_seen = time.monotonic() if now is None else now
        info.state = msg.state if msg.state in STATES else "online"
        info.disconnected = msg.state == "offline"
        info.round, info.model_version, info.records_total = msg.round, msg.model_version, msg.records_total
        return info

    def alert(self, msg: Alert) -> bool:
        """Count an alert once: QoS 1 may redeliver, so a sequence number at or below the last
        one seen is a duplicate."""
        info = self.agents.get(msg.agent_id)
        if info is None or msg.seq <= info.last_alert_seq:
            return False
        info.last_alert_seq = msg.seq
        info.alerts[msg.label] += 1
        return True

    def refresh(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for info in self.agents.values():
            if now - info.last_seen > self.offline_after_s:
                info.state = "offline"

    def online(self) -> list[AgentInfo]:
        return [a for a in self.agents.values() if a.state != "offline"]

    def mark_offline(self, agent_id: str) -> None:
        if agent_id in self.agents:
            self.agents[agent_id].state = "offline"
