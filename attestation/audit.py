"""The operator's decisions about identities, in an append-only audit log in the gateway's state
directory (`attestation-audit.log`, one JSON object per line).

Written by the operator (`ztfl attest approve|revoke`) and by the gateway (each enrolment it
accepted); never rewritten. The gateway reads it again whenever the file changed, so a decision
takes effect without a restart:

    approve     the next enrolment of this id may bring a new EK or AK (only the EK `ek_sha256`
                names, when it names one); used up by that enrolment
    revoke      the device gets no seat and cannot enrol (until an approved re-enrolment)
    enrolled    the gateway admitted the first identity of this id (EK pin, AK name)
    reenrolled  the gateway admitted a new identity for this id under an approval
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ztfl.attestation")

AUDIT_FILE = "attestation-audit.log"
APPROVE, REVOKE, ENROLLED, REENROLLED = "approve", "revoke", "enrolled", "reenrolled"
OPERATOR_ACTIONS = (APPROVE, REVOKE)
ACTIONS = (APPROVE, REVOKE, ENROLLED, REENROLLED)


@dataclass(frozen=True)
class Approval:
    agent_id: str
    ek_sha256: str          # empty: any EK (still subject to the EK CA check)
    line: int               # position in the log: which approval an enrolment used


class AuditLog:
    def __init__(self, state_dir: str | Path):
        self.path = Path(state_dir) / AUDIT_FILE

    def append(self, action: str, agent_id: str, **fields: str) -> dict:
        if action not in ACTIONS:
            raise ValueError(f"audit action {action!r} is not one of {', '.join(ACTIONS)}")
        entry = {"at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "action": action, "agent_id": agent_id, **{k: v for k, v in fields.items() if v}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write() of one line with O_APPEND: concurrent writers never interleave within a line.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8"))
        finally:
            os.close(fd)
        return entry

    def entries(self) -> list[dict]:
        """Every complete line; a line still being written (no newline yet) is left for later."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for number, line in enumerate(text.split("\n")[:-1], 1):
            try:
                entry = json.loads(line)
                if entry["action"] in ACTIONS and isinstance(entry["agent_id"], str):
                    out.append(entry)
                    continue
            except (ValueError, KeyError, TypeError):
                pass
            log.warning("%s:%d: not an audit entry, ignored", self.path, number)
        return out


class OperatorDecisions:
    """Pending approvals and revocations as the audit log says, re-read when it changed."""

    def __init__(self, audit: AuditLog):
        self.audit = audit
        self._seen: tuple[int, int] | None = None
        self._approvals: dict[str, Approval] = {}
        self._revoked: set[str] = set()
        self._approved_ek: dict[str, str] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        try:
            st = os.stat(self.audit.path)
            seen = (st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            seen = (0, 0)
        with self._lock:
            if seen == self._seen:
                return
            approvals: dict[str, Approval] = {}
            revoked: set[str] = set()
            approved: dict[str, str] = {}
            for line, entry in enumerate(self.audit.entries()):
                agent_id, action = entry["agent_id"], entry["action"]
                if action == APPROVE:
                    approvals[agent_id] = Approval(agent_id, entry.get("ek_sha256", ""), line)
                elif action == REVOKE:
                    approvals.pop(agent_id, None)
                    revoked.add(agent_id)
                elif action == REENROLLED:
                    approved[agent_id] = entry.get("ek_sha256", "")
                    approvals.pop(agent_id, None)
                    revoked.discard(agent_id)
            self._approvals, self._revoked, self._approved_ek, self._seen = approvals, revoked, approved, seen

    def revoked(self, agent_id: str) -> bool:
        self.refresh()
        return agent_id in self._revoked

    def approval(self, agent_id: str) -> Approval | None:
        self.refresh()
        return self._approvals.get(agent_id)

    def approved_ek(self, agent_id: str) -> str:
        """The EK pin of the last enrolment of this id the operator approved ('' if none)."""
        self.refresh()
        return self._approved_ek.get(agent_id, "")

    def record(self, action: str, agent_id: str, **fields: str) -> None:
        self.audit.append(action, agent_id, **fields)
        self.refresh()
