"""`ztfl flash esp32`: write MicroPython (optional) and the agent bundle to a board over USB serial.

    ztfl flash esp32 --port /dev/ttyUSB0 --bundle build/esp-01 [--micropython ESP32_GENERIC.bin]
                     [--chip esp32|esp32s3] [--dry-run]
                     [--secure-boot-key sbv2.pem --idf-build micropython/ports/esp32/build-ESP32_GENERIC]

With --micropython, esptool erases the flash and writes the image (at 0x1000 on the ESP32,
0x0 on the ESP32-S3). Then mpremote copies the bundle (lib/, boot.py, main.py, config.json,
records and certificates) and resets the board. --dry-run prints the commands without running them.

With --secure-boot-key, the images come from an ESP-IDF build of MicroPython configured for
Secure Boot v2 and flash encryption in release mode (docs/attestation.md lists the settings):
espefuse prints the chip's eFuses first, espsecure signs the bootloader and the application
with the fleet's Secure Boot v2 key (and writes the key digest the bootloader burns), esptool
writes them; on its first boot the bootloader burns the key digest and a flash encryption key
generated inside the chip, and encrypts the flash. Irreversible: a secured chip boots only
images signed with that key.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

IMAGE_OFFSET = {"esp32": "0x1000", "esp32s3": "0x0"}
BUNDLE_FILES = ("boot.py", "main.py", "config.json", "records.bin", "ca.pem", "cert.pem", "key.pem")
IDF_PARTS = ("bootloader", "partition-table", "app")      # keys of the build's flasher_args.json
SIGNED_PARTS = ("bootloader", "app")


class FlashError(RuntimeError):
    """Flashing cannot start: no port, no image, no bundle."""


@dataclass(frozen=True)
class SecureBoot:
    signing_key: Path       # the fleet's Secure Boot v2 key (espsecure generate-signing-key --version 2)
    idf_build: Path         # ESP-IDF build directory of MicroPython (holds flasher_args.json)


def _tool(name: str) -> list[str]:
    return [sys.executable, "-m", name]


def _idf_layout(build: Path) -> dict[str, tuple[str, Path]]:
    """part -> (flash offset, file) from the build's flasher_args.json."""
    try:
        doc = json.loads((build / "flasher_args.json").read_text())
        return {part: (doc[part]["offset"], build / doc[part]["file"]) for part in IDF_PARTS}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FlashError(f"{build}: not an ESP-IDF build with flasher_args.json listing "
                         f"{', '.join(IDF_PARTS)} ({type(exc).__name__}: {exc})") from None


def secure_boot_commands(port: str, chip: str, baud: int, secure: SecureBoot, out: Path) -> list[list[str]]:
    """Check the eFuses, sign bootloader and application into `out`, write the digest of the
    signing key there, and write the signed images."""
    if not Path(secure.signing_key).is_file():
        raise FlashError(f"Secure Boot v2 key {secure.signing_key} not found: make one with "
                         "`espsecure generate-signing-key --version 2 --scheme ecdsa256 KEY.pem` and keep it safe")
    layout = _idf_layout(Path(secure.idf_build))
    cmds = [_tool("espefuse") + ["--chip", chip, "--port", port, "summary"],
            _tool("espsecure") + ["digest-sbv2-public-key", "--keyfile", str(secure.signing_key),
                                  "--output", str(out / "sbv2-key-digest.bin")]]
    write = _tool("esptool") + ["--chip", chip, "--port", port, "--baud", str(baud), "write-flash"]
    for part in IDF_PARTS:
        offset, path = layout[part]
        if part in SIGNED_PARTS:
            signed = out / f"{part}-signed.bin"
            cmds.append(_tool("espsecure") + ["sign-data", "--version", "2", "--keyfile", str(secure.signing_key),
                                              "--output", str(signed), str(path)])
            path = signed
        write += [offset, str(path)]
    return cmds + [write]


def flash_commands(port: str, bundle: Path, chip: str = "esp32", image: Path | None = None,
                   baud: int = 460800, secure: SecureBoot | None = None) -> list[list[str]]:
    """The espefuse, espsecure, esptool and mpremote command lines, in order; checks their
    inputs first."""
    if chip not in IMAGE_OFFSET:
        raise FlashError(f"unknown chip {chip!r}: one of {', '.join(IMAGE_OFFSET)}")
    if not port:
        raise FlashError("no serial port given (--port /dev/ttyUSB0)")
    if not os.path.exists(port):
        raise FlashError(f"serial port {port} does not exist: is the board plugged in, and is the port "
                         "right (ls /dev/ttyUSB* /dev/ttyACM*)?")
    if image is not None and not Path(image).is_file():
        raise FlashError(f"MicroPython image {image} not found: download the {chip.upper()} firmware "
                         "(.bin) from micropython.org/download")
    bundle = Path(bundle)
    if not (bundle / "manifest.json").is_file() or not (bundle / "lib").is_dir():
        raise FlashError(f"{bundle} is not a firmware bundle: build it with `ztfl firmware build`")
    cmds: list[list[str]] = []
    if secure is not None:
        if image is not None:
            raise FlashError("give --micropython or --secure-boot-key, not both: a secured board boots only "
                             "the signed images of --idf-build")
        cmds += secure_boot_commands(port, chip, baud, secure, Path(secure.idf_build) / "signed")
    if image is not None:
        esptool = _tool("esptool") + ["--chip", chip, "--port", port, "--baud", str(baud)]
        cmds.append(esptool + ["erase-flash"])
        cmds.append(esptool + ["write-flash", "-z", IMAGE_OFFSET[chip], str(image)])
    mpremote = _tool("mpremote") + ["connect", port]
    # `fs cp -r lib :` creates /lib/ztfw on the board's filesystem.
    copy = mpremote + ["fs", "cp", "-r", str(bundle / "lib"), ":"]
    for name in BUNDLE_FILES:
        if (bundle / name).is_file():
            copy += ["+", "fs", "cp", str(bundle / name), f":{name}"]
    cmds.append(copy)
    cmds.append(mpremote + ["reset"])
    return cmds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="board", metavar="BOARD")
    sub.required = True
    e = sub.add_parser("esp32", help="an ESP32 or ESP32-S3 over USB serial")
    e.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyUSB0")
    e.add_argument("--bundle", type=Path, required=True, help="output of `ztfl firmware build`")
    e.add_argument("--micropython", type=Path, help="MicroPython image to write first (.bin)")
    e.add_argument("--chip", default="esp32", choices=sorted(IMAGE_OFFSET))
    e.add_argument("--baud", type=int, default=460800)
    e.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    e.add_argument("--secure-boot-key", type=Path,
                   help="Secure Boot v2 signing key: sign and write the images of --idf-build (irreversible)")
    e.add_argument("--idf-build", type=Path,
                   help="ESP-IDF build directory of MicroPython with Secure Boot v2 and flash encryption enabled")


def run(args) -> int:
    try:
        if bool(args.secure_boot_key) != bool(args.idf_build):
            raise FlashError("--secure-boot-key and --idf-build go together")
        secure = SecureBoot(args.secure_boot_key, args.idf_build) if args.secure_boot_key else None
        cmds = flash_commands(args.port, args.bundle, args.chip, args.micropython, args.baud, secure)
    except FlashError as exc:
        print(f"ztfl flash: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps({"commands": [shlex.join(c) for c in cmds]}, indent=1))
        return 0
    if secure is not None:
        (secure.idf_build / "signed").mkdir(exist_ok=True)
    for cmd in cmds:
        print("+ " + shlex.join(cmd), flush=True)
        proc = subprocess.run(cmd)
        if proc.returncode != 0:
            print(f"ztfl flash: step failed with exit code {proc.returncode}: {shlex.join(cmd)}", file=sys.stderr)
            return 1
    return 0
