"""The provisioned device list (`gateway/devices.yaml` from `ztfl provision`), typed.

Each device: its id, hardware profile and root of trust, and what pins its identity:
  tpm       `ek_sha256`: the EK it must enrol with (attestation.ek_pin), when pinned
  software  `device_public_key`: its Ed25519 device key; `bundle_sha256`: the digest of every
            file flashed to it (attestation.bundle), once `ztfl firmware build` recorded it
A gateway given this list (`attestation.devices`) admits no other id.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from ztfl.attestation.ek_pin import check_pin
from ztfl.attestation.provision import ProvisionError, load_devices
from ztfl.attestation.registry import SOFTWARE_ROOTED, TPM_ROOTED


@dataclass(frozen=True)
class ProvisionedDevice:
    agent_id: str
    profile: str
    root: str                           # TPM_ROOTED or SOFTWARE_ROOTED
    device_public_key: bytes = b""
    ek_sha256: str = ""
    bundle_sha256: str = ""

    @classmethod
    def from_entry(cls, entry: dict) -> "ProvisionedDevice":
        agent_id = str(entry["agent_id"])
        root = entry["root"]
        if root not in (TPM_ROOTED, SOFTWARE_ROOTED):
            raise ProvisionError(f"device {agent_id}: root must be {TPM_ROOTED} or {SOFTWARE_ROOTED}, got {root!r}")
        try:
            ek = check_pin(entry["ek_sha256"], "ek_sha256") if entry.get("ek_sha256") else ""
            bundle = check_pin(entry["bundle_sha256"], "bundle_sha256") if entry.get("bundle_sha256") else ""
            key = bytes.fromhex(entry.get("device_public_key", "") or "")
        except (ValueError, AttributeError) as exc:
            raise ProvisionError(f"device {agent_id}: {exc}") from None
        if root == SOFTWARE_ROOTED and len(key) != 32:
            raise ProvisionError(f"device {agent_id}: device_public_key must be 32 bytes of hex")
        if root == TPM_ROOTED and bundle:
            raise ProvisionError(f"device {agent_id}: bundle_sha256 is for device-key boards, not TPM devices")
        return cls(agent_id, str(entry["profile"]), root, key, ek, bundle)


class DeviceList:
    """agent id -> ProvisionedDevice, read from devices.yaml."""

    def __init__(self, devices: list[ProvisionedDevice]):
        self._devices = {d.agent_id: d for d in devices}
        if len(self._devices) != len(devices):
            raise ProvisionError("devices.yaml lists a device id twice")

    @classmethod
    def load(cls, path: str | Path) -> "DeviceList":
        return cls([ProvisionedDevice.from_entry(e) for e in load_devices(path)])

    def get(self, agent_id: str) -> ProvisionedDevice | None:
        return self._devices.get(agent_id)

    def __contains__(self, agent_id: str) -> bool:
        return agent_id in self._devices

    def __iter__(self) -> Iterator[ProvisionedDevice]:
        return iter(sorted(self._devices.values(), key=lambda d: d.agent_id))

    def profiles(self) -> dict[str, str]:
        return {d.agent_id: d.profile for d in self}

    def ek_pins(self) -> dict[str, str]:
        return {d.agent_id: d.ek_sha256 for d in self if d.ek_sha256}


def record_device_field(path: str | Path, agent_id: str, key: str, value: str) -> None:
    """Set one field of one device in devices.yaml (e.g. the bundle digest a build produced),
    rewriting the file atomically; the device must be listed."""
    path = Path(path)
    devices = load_devices(path)
    entry = next((d for d in devices if d["agent_id"] == agent_id), None)
    if entry is None:
        raise ProvisionError(f"{path}: no device {agent_id}")
    entry[key] = value
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"devices": devices}, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)
