"""Hardware in the loop: the firmware's protocol modules pass the conformance vectors on a real
ESP32 (`--esp32-port /dev/ttyUSB0`), the check tests/test_firmware_conformance.py runs in the
MicroPython unix port. Needs MicroPython flashed on the board (docs/hil.md)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ztfl.firmware_tools.micropython_host import FIRMWARE_DIR

pytestmark = pytest.mark.hil
VECTORS = Path(__file__).resolve().parents[1] / "vectors"
# The board has no stdin for scripts: the vectors are read from its filesystem instead.
SMALL = ("kdf.json", "shamir.json", "prg.json", "graph.json")


def _mpremote(port: str, *args: str, timeout: float = 600) -> str:
    tool = shutil.which("mpremote") or str(Path(sys.executable).parent / "mpremote")
    proc = subprocess.run([tool, "connect", port, *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"mpremote {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return proc.stdout


def test_firmware_passes_conformance_vectors_on_the_board(esp32_port, tmp_path):
    vectors = {name: json.loads((VECTORS / name).read_text()) for name in SMALL}
    (tmp_path / "vectors.json").write_text(json.dumps(vectors))
    script = (FIRMWARE_DIR / "host" / "conformance.py").read_text().replace(
        "json.loads(sys.stdin.read())", "json.loads(open('/vectors.json').read())")
    assert "open('/vectors.json')" in script
    (tmp_path / "conformance.py").write_text(script)
    _mpremote(esp32_port, "fs", "cp", "-r", str(FIRMWARE_DIR / "ztfw"), ":")
    _mpremote(esp32_port, "fs", "cp", str(tmp_path / "vectors.json"), ":vectors.json")
    out = _mpremote(esp32_port, "run", str(tmp_path / "conformance.py"))
    result = json.loads(out.strip().splitlines()[-1])
    assert result["failures"] == []
    assert set(result["checks"]) == set(SMALL) and all(n > 0 for n in result["checks"].values())
