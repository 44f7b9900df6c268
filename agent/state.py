"""An agent's local state, kept across restarts: its identity key, the gateway key it pinned,
the last round it completed and the last model version it ran, its alert sequence number, and
the (round, attempt, cohort) sessions it already uploaded to (so a reconnect never uploads twice).
Written atomically as JSON next to a 0600 key file."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nacl.signing import SigningKey

from ztfl.fednet.files import atomic_write_bytes


@dataclass
class AgentState:
    gateway_pk: str = ""
    last_round: int = 0
    model_version: int = -1
    alert_seq: int = 0
    uploaded: list = field(default_factory=list)     # ["round.attempt.cohort", ...], newest last


class StateStore:
    def __init__(self, state_dir: str | Path):
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "agent-state.json"
        self.key_path = self.dir / "identity.key"
        self.state = AgentState()
        if self.path.exists():
            doc = json.loads(self.path.read_text())
            self.state = AgentState(**{k: v for k, v in doc.items() if k in AgentState.__dataclass_fields__})

    def identity(self) -> SigningKey:
        if self.key_path.exists():
            return SigningKey(self.key_path.read_bytes())
        key = SigningKey.generate()
        atomic_write_bytes(self.key_path, bytes(key))
        os.chmod(self.key_path, 0o600)
        return key

    def save(self) -> None:
        self.state.uploaded = self.state.uploaded[-32:]
        atomic_write_bytes(self.path, json.dumps(asdict(self.state)).encode())
