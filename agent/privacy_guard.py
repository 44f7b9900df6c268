"""The daemon's privacy guard (privacy.guard): the floor of agent.yaml `privacy_floor:` and the
agent's own privacy ledger, kept in its state directory (`privacy-ledger.json`) and written
atomically before each noisy input leaves, so that a crash can never forget a contribution."""
from __future__ import annotations

from pathlib import Path

from ztfl.fednet.files import atomic_write_bytes
from ztfl.privacy.floor import PrivacyFloor
from ztfl.privacy.guard import PrivacyGuard, new_ledger

LEDGER_FILE = "privacy-ledger.json"


def open_guard(floor: PrivacyFloor, state_dir: str | Path) -> PrivacyGuard:
    """The guard with the ledger this agent kept so far (ValueError if that file is unreadable:
    the privacy already spent would be unknown)."""
    path = Path(state_dir) / LEDGER_FILE
    data = path.read_bytes() if path.exists() else None
    try:
        ledger = new_ledger(floor, data, lambda blob: atomic_write_bytes(path, blob))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return PrivacyGuard(floor, ledger)
