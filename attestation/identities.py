"""The fleet's protocol CA: the offline root that certifies every identity key, the online
intermediate that signs revocation lists, and the ledger of what was issued (docs/deployment.md
"Provisioning").

The CA directory (`ztfl provision --ca-dir`, by default a sibling of the output tree) holds what
must never reach a device or the gateway, and belongs offline once provisioning is done:

  root.key        Ed25519 seed of the root (0600): signs identity certificates and the intermediate's
  root.pub        its public key in hex: the trust anchor every bundle gets a copy of
  issued.json     per device id the serials of its identity and TLS certificates, and the revoked ones

The TLS CA of the broker's listener (an X.509 EC P-256 key: mosquitto and the boards' TLS stacks
verify X.509) is another key in the same directory (attestation.provision): a leak of one does
not give the other.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey

from ztfl.protocol import certs

DAY_S = 86400
BACKDATE_S = 300                 # not_before a few minutes back: clocks of the fleet differ slightly


class CaDirError(ValueError):
    """The CA directory is unusable (inside the output tree, unreadable, of another federation)."""


def write_file(path: Path, data: bytes | str, private: bool = False) -> None:
    """Create or replace a file; private ones are 0600 from the start, never readable for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def default_ca_dir(out: Path) -> Path:
    return Path(out).resolve().parent / f"{Path(out).resolve().name}-ca"


def check_apart(ca_dir: Path, out: Path) -> None:
    """The CA must not be written into (or around) the tree whose parts are copied to devices."""
    ca, tree = Path(ca_dir).resolve(), Path(out).resolve()
    if ca == tree or ca.is_relative_to(tree) or tree.is_relative_to(ca):
        raise CaDirError(f"--ca-dir {ca} must lie outside --out {tree} (and not contain it): "
                         "the root key must never be copied with the bundles")


@dataclass
class ProtocolCa:
    """The root key and the ledger of one CA directory."""
    ca_dir: Path
    federation: str
    root: SigningKey
    ledger: dict = field(default_factory=dict)

    @classmethod
    def open(cls, ca_dir: Path, federation: str) -> "ProtocolCa":
        """The CA of `ca_dir`, created on first use."""
        ca_dir = Path(ca_dir)
        key_path, ledger_path = ca_dir / "root.key", ca_dir / "issued.json"
        if key_path.exists():
            seed = key_path.read_bytes()
            if len(seed) != 32:
                raise CaDirError(f"{key_path} is not a 32-byte Ed25519 seed")
            root = SigningKey(seed)
            ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else {}
        else:
            root = SigningKey.generate()
            write_file(key_path, bytes(root), private=True)
            write_file(ca_dir / "root.pub", bytes(root.verify_key).hex() + "\n")
            ledger = {}
        ledger.setdefault("federation", federation)
        if ledger["federation"] != federation:
            raise CaDirError(f"{ca_dir} is the CA of federation {ledger['federation']}, not {federation}")
        for key, empty in (("next_serial", 1), ("devices", {}), ("revoked", [])):
            ledger.setdefault(key, empty)
        return cls(ca_dir, federation, root, ledger)

    @property
    def anchor(self) -> bytes:
        return bytes(self.root.verify_key)

    def anchor_text(self) -> str:
        return self.anchor.hex() + "\n"

    def issue(self, device_id: str, role: str, public_key: bytes, days: int, now: int) -> certs.Certificate:
        serial = self.ledger["next_serial"]
        self.ledger["next_serial"] = serial + 1
        record = self.ledger["devices"].setdefault(device_id, {"identity": [], "tls": []})
        record["identity"].append(serial)
        return certs.issue(self.root, federation=self.federation, device_id=device_id, role=role,
                           public_key=public_key, not_before=max(0, now - BACKDATE_S),
                           not_after=min(certs.MAX_U32, now + days * DAY_S), serial=serial)

    def record_tls(self, device_id: str, serial: int) -> None:
        record = self.ledger["devices"].setdefault(device_id, {"identity": [], "tls": []})
        record["tls"].append(str(serial))       # X.509 serials run to 159 bits: kept as text

    def revoke(self, device_ids: list[str]) -> None:
        unknown = [d for d in device_ids if d not in self.ledger["devices"]]
        if unknown:
            raise CaDirError(f"no certificate was issued to {', '.join(unknown)} by the CA in {self.ca_dir}")
        revoked = set(self.ledger["revoked"]) | set(device_ids)
        self.ledger["revoked"] = sorted(revoked)

    def revoked_serials(self, kind: str) -> list:
        """Every `identity` (ints) or `tls` (text) serial of the revoked devices."""
        return [s for d in self.ledger["revoked"] for s in self.ledger["devices"][d][kind]]

    def save(self) -> None:
        write_file(self.ca_dir / "issued.json", json.dumps(self.ledger, indent=1, sort_keys=True), private=True)


def new_identity(ca: ProtocolCa, device_id: str, role: str, days: int, now: int) -> tuple[SigningKey, bytes]:
    """A fresh identity key and its certificate's bytes."""
    key = SigningKey.generate()
    return key, ca.issue(device_id, role, bytes(key.verify_key), days, now).encode()


def signed_revocations(ca: ProtocolCa, intermediate: SigningKey, intermediate_cert: bytes,
                       current: certs.SignedRevocations | None, days: int, now: int) -> certs.SignedRevocations:
    """The next revocation list, listing every serial of every revoked device, signed by the intermediate."""
    rl = certs.sign_revocations(intermediate, number=certs.next_number(current and current.revocations, now),
                                issued_at=now, next_update=min(certs.MAX_U32, now + days * DAY_S),
                                revoked=ca.revoked_serials("identity"))
    return certs.SignedRevocations(certs.Certificate.decode(intermediate_cert), rl)
