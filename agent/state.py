"""An agent's local state, kept across restarts: the last round it completed and the last model
version it ran, its alert sequence number, the (round, attempt, cohort) sessions it already
uploaded to (so a reconnect never uploads twice) and the newest revocation list it accepted (so a
restart never rolls back to an older one). Written atomically as JSON.

The identity key is the provisioned one its certificate certifies (`trust.identity_key`); only an
agent without a certified identity generates its own (0600), and such an agent takes part in no
round (agent.trust)."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nacl.signing import SigningKey

from ztfl.fednet.files import atomic_write_bytes


@dataclass
class AgentState:
    gateway_pk: str = ""            # written by agents before certified identities; no longer read
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
        self.revocations_path = self.dir / "revocations.bin"
        self.state = AgentState()
        if self.path.exists():
            doc = json.loads(self.path.read_text())
            self.state = AgentState(**{k: v for k, v in doc.items() if k in AgentState.__dataclass_fields__})

    def identity(self, provisioned: SigningKey | None = None) -> SigningKey:
        """The provisioned (certified) key when there is one; else a key made once and kept here."""
        if provisioned is not None:
            return provisioned
        if self.key_path.exists():
            return SigningKey(self.key_path.read_bytes())
        key = SigningKey.generate()
        atomic_write_bytes(self.key_path, bytes(key))
        os.chmod(self.key_path, 0o600)
        return key

    def save(self) -> None:
        self.state.uploaded = self.state.uploaded[-32:]
        atomic_write_bytes(self.path, json.dumps(asdict(self.state)).encode())
