"""`ztfl flash esp32`: write MicroPython (optional) and the agent bundle to a board over USB serial.

    ztfl flash esp32 --port /dev/ttyUSB0 --bundle build/esp-01 [--micropython ESP32_GENERIC.bin]
                     [--chip esp32|esp32s3] [--dry-run]

With --micropython, esptool erases the flash and writes the image (at 0x1000 on the ESP32,
0x0 on the ESP32-S3). Then mpremote copies the bundle (lib/, main.py, config.json, records and
certificates) and resets the board. --dry-run prints the commands without running them.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

IMAGE_OFFSET = {"esp32": "0x1000", "esp32s3": "0x0"}
BUNDLE_FILES = ("main.py", "config.json", "records.bin", "ca.pem", "cert.pem", "key.pem")


class FlashError(RuntimeError):
    """Flashing cannot start: no port, no image, no bundle."""


def _tool(name: str) -> list[str]:
    return [sys.executable, "-m", name]


def flash_commands(port: str, bundle: Path, chip: str = "esp32", image: Path | None = None,
                   baud: int = 460800) -> list[list[str]]:
    """The esptool and mpremote command lines, in order; checks their inputs first."""
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


def run(args) -> int:
    try:
        cmds = flash_commands(args.port, args.bundle, args.chip, args.micropython, args.baud)
    except FlashError as exc:
        print(f"ztfl flash: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps({"commands": [shlex.join(c) for c in cmds]}, indent=1))
        return 0
    for cmd in cmds:
        print("+ " + shlex.join(cmd), flush=True)
        proc = subprocess.run(cmd)
        if proc.returncode != 0:
            print(f"ztfl flash: step failed with exit code {proc.returncode}: {shlex.join(cmd)}", file=sys.stderr)
            return 1
    return 0
