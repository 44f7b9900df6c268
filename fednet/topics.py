"""MQTT topic names (docs/wire.md is the reference).

Agent -> gateway: ztfl/<federation>/<gateway>/agents/<agent-id>/<kind>
Gateway -> agents: ztfl/<federation>/<gateway>/broadcast/<kind> (everyone) and
                   ztfl/<federation>/<gateway>/broadcast/to/<agent-id>/<kind> (one agent)
Gateway -> cloud:  ztfl/<federation>/cloud/gateways/<gateway>/<kind>
Cloud -> gateways: ztfl/<federation>/cloud/broadcast/<kind>
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ztfl.protocol.refusal import Refusal

# What an agent publishes about itself.
AGENT_KINDS = ("hello", "heartbeat", "alerts", "enrol", "attest", "protocol", "masked")
# What the gateway publishes to all agents or to one.
BROADCAST_KINDS = ("round", "model-cnn-lstm", "model-micro", "detector-cnn-lstm", "pipeline", "protocol",
                   "attest", "status", "revocations")

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class TopicError(Refusal, ValueError):
    """A topic that is not ours or names an invalid id."""

    reason = "topic"


class Impersonation(TopicError):
    """A payload speaks for another agent than the one whose topic it arrived on."""

    reason = "impersonation"


def require_sender(topic_agent: str, claimed: str, what: str) -> None:
    """The broker's ACL ties each agent to its own topics: a payload there must name that agent."""
    if claimed != topic_agent:
        raise Impersonation(f"{what} for {claimed} on {topic_agent}'s topic")


def check_id(value: str, what: str = "id") -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise TopicError(f"invalid {what} {value!r}: 1-64 of [A-Za-z0-9_.-], starting alphanumeric")
    return value


@dataclass(frozen=True)
class Topics:
    federation: str
    gateway: str

    def __post_init__(self):
        check_id(self.federation, "federation")
        check_id(self.gateway, "gateway")

    @property
    def base(self) -> str:
        return f"ztfl/{self.federation}/{self.gateway}"

    def agent(self, agent_id: str, kind: str) -> str:
        return f"{self.base}/agents/{check_id(agent_id, 'agent id')}/{kind}"

    def agents_wildcard(self) -> str:
        return f"{self.base}/agents/+/+"

    def broadcast(self, kind: str) -> str:
        return f"{self.base}/broadcast/{kind}"

    def to_agent(self, agent_id: str, kind: str) -> str:
        return f"{self.base}/broadcast/to/{check_id(agent_id, 'agent id')}/{kind}"

    def agent_subscriptions(self, agent_id: str) -> list[str]:
        return [f"{self.base}/broadcast/+", f"{self.base}/broadcast/to/{check_id(agent_id)}/+"]

    def parse_agent_topic(self, topic: str) -> tuple[str, str]:
        """(agent id, kind) of an agent->gateway topic, or TopicError."""
        prefix = f"{self.base}/agents/"
        if not topic.startswith(prefix):
            raise TopicError(f"not an agent topic of {self.base}: {topic!r}")
        parts = topic[len(prefix):].split("/")
        if len(parts) != 2 or parts[1] not in AGENT_KINDS:
            raise TopicError(f"unknown agent topic {topic!r}")
        return check_id(parts[0], "agent id"), parts[1]

    def parse_broadcast_topic(self, topic: str) -> str:
        """The kind of a gateway->agent topic (either to everyone or to one agent)."""
        prefix = f"{self.base}/broadcast/"
        if not topic.startswith(prefix):
            raise TopicError(f"not a broadcast topic of {self.base}: {topic!r}")
        kind = topic.rsplit("/", 1)[-1]
        if kind not in BROADCAST_KINDS:
            raise TopicError(f"unknown broadcast kind in {topic!r}")
        return kind


@dataclass(frozen=True)
class CloudTopics:
    federation: str

    def __post_init__(self):
        check_id(self.federation, "federation")

    @property
    def base(self) -> str:
        return f"ztfl/{self.federation}/cloud"

    def from_gateway(self, gateway: str, kind: str) -> str:
        return f"{self.base}/gateways/{check_id(gateway, 'gateway')}/{kind}"

    def gateways_wildcard(self) -> str:
        return f"{self.base}/gateways/+/+"

    def broadcast(self, kind: str) -> str:
        return f"{self.base}/broadcast/{kind}"

    def parse_gateway_topic(self, topic: str) -> tuple[str, str]:
        prefix = f"{self.base}/gateways/"
        if not topic.startswith(prefix):
            raise TopicError(f"not a gateway topic: {topic!r}")
        parts = topic[len(prefix):].split("/")
        if len(parts) != 2:
            raise TopicError(f"bad gateway topic {topic!r}")
        return check_id(parts[0], "gateway"), parts[1]
