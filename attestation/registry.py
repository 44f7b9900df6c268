"""The gateway's registry of enrolled identities: one record per agent id, saved as JSON.

A TPM-rooted record holds the EK and AK public areas (marshalled TPM2B_PUBLIC) and becomes
`active` only after the agent answered its credential challenge. A software-rooted record
holds the Ed25519 device key from provisioning and is marked so wherever it is reported.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

TPM_ROOTED = "tpm"
SOFTWARE_ROOTED = "software"


@dataclass(frozen=True)
class EnrolledIdentity:
    agent_id: str
    profile: str
    root: str                                  # TPM_ROOTED or SOFTWARE_ROOTED
    active: bool = False
    ek_public: bytes = b""
    ek_certificate: bytes = b""
    ak_public: bytes = b""
    ak_name: bytes = b""
    ak_qualified_name: bytes = b""
    device_public_key: bytes = b""             # raw 32-byte Ed25519 key (software-rooted)
    # Last accepted TPM clock state (reset_count, restart_count, clock) for monotonicity.
    last_clock: tuple[int, int, int] | None = None

    @property
    def software_rooted(self) -> bool:
        return self.root == SOFTWARE_ROOTED

    def to_json(self) -> dict:
        out = {}
        for key, value in asdict(self).items():
            out[key] = value.hex() if isinstance(value, bytes) else value
        return out

    @classmethod
    def from_json(cls, data: dict) -> "EnrolledIdentity":
        kwargs = {}
        for f in cls.__dataclass_fields__.values():
            if f.name not in data:
                continue
            value = data[f.name]
            if f.type == "bytes":
                value = bytes.fromhex(value)
            elif f.name == "last_clock" and value is not None:
                value = tuple(int(v) for v in value)
            kwargs[f.name] = value
        return cls(**kwargs)


@dataclass
class IdentityRegistry:
    """Thread-safe map agent id -> EnrolledIdentity; `path` (optional) is rewritten atomically
    on every change."""

    path: Path | None = None
    _records: dict[str, EnrolledIdentity] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, path: str | Path) -> "IdentityRegistry":
        path = Path(path)
        reg = cls(path=path)
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            for item in data.get("identities", []):
                ident = EnrolledIdentity.from_json(item)
                reg._records[ident.agent_id] = ident
        return reg

    def get(self, agent_id: str) -> EnrolledIdentity | None:
        with self._lock:
            return self._records.get(agent_id)

    def put(self, identity: EnrolledIdentity) -> None:
        with self._lock:
            self._records[identity.agent_id] = identity
            self._save()

    def update(self, agent_id: str, **changes) -> EnrolledIdentity:
        with self._lock:
            record = replace(self._records[agent_id], **changes)
            self._records[agent_id] = record
            self._save()
            return record

    def remove(self, agent_id: str) -> None:
        with self._lock:
            self._records.pop(agent_id, None)
            self._save()

    def find_by_ek(self, ek_public: bytes) -> EnrolledIdentity | None:
        with self._lock:
            return next((r for r in self._records.values() if r.ek_public and r.ek_public == ek_public), None)

    def all(self) -> list[EnrolledIdentity]:
        with self._lock:
            return sorted(self._records.values(), key=lambda r: r.agent_id)

    def add_software_device(self, agent_id: str, profile: str, device_public_key: bytes) -> EnrolledIdentity:
        """Register a device key from provisioning (`ztfl provision` writes them)."""
        if len(device_public_key) != 32:
            raise ValueError("an Ed25519 public key has 32 bytes")
        ident = EnrolledIdentity(agent_id, profile, SOFTWARE_ROOTED, active=True,
                                 device_public_key=bytes(device_public_key))
        self.put(ident)
        return ident

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"identities": [r.to_json() for r in
                                                  sorted(self._records.values(), key=lambda r: r.agent_id)]},
                                  indent=1), encoding="utf-8")
        os.replace(tmp, self.path)
