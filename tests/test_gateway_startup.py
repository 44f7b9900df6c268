"""A gateway whose state directory cannot be written when it starts stops as it does when a state
write fails mid-round: one line naming the directory and the OS or SQLite error, exit code 3, no
traceback. The unwritable directory is made by the kernel, also for root (chmod is not enough):
a path under a regular file (ENOTDIR), a registry path that is a directory (SQLite cannot open
it), and an existing state directory bind-mounted read-only in a private mount namespace (EROFS).
Other start-up failures keep their own error."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ztfl.gateway.registry import Registry
from ztfl.gateway.server import STATE_WRITE_FAILED

REPO = Path(__file__).resolve().parents[1]
READ_ONLY_BIND = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'


def start_gateway(tmp_path: Path, state_dir: Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"state_dir: {state_dir}\n")
    return subprocess.run([*prefix, sys.executable, "-m", "ztfl.cli", "gateway", "--config", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def assert_state_error(proc: subprocess.CompletedProcess, state_dir: Path, cause: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == STATE_WRITE_FAILED, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    lines = [line for line in out.splitlines() if "cannot write the gateway state" in line]
    assert len(lines) == 1, out[-3000:]
    assert str(state_dir) in lines[0] and "disk full or read-only" in lines[0], lines[0]
    assert cause in lines[0], lines[0]


def test_state_dir_under_a_regular_file_exits_3_with_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    state_dir = blocker / "state"
    proc = start_gateway(tmp_path, state_dir)
    assert_state_error(proc, state_dir, "Not a directory")
    assert blocker.read_bytes() == b"not a directory"


def test_registry_that_cannot_be_opened_exits_3_with_one_line(tmp_path):
    state_dir = tmp_path / "state"
    (state_dir / "registry.sqlite3").mkdir(parents=True)
    proc = start_gateway(tmp_path, state_dir)
    assert_state_error(proc, state_dir, "OperationalError")
    assert sorted(p.name for p in state_dir.iterdir()) == ["registry.sqlite3"]


def _read_only_prefix(directory: Path) -> tuple[str, ...]:
    """A command prefix that runs the gateway where `directory` is a read-only bind mount."""
    candidates = [("unshare", "--mount", "--propagation", "private")] if os.geteuid() == 0 else []
    candidates.append(("unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"))
    for unshare in candidates:
        prefix = (*unshare, "sh", "-c", READ_ONLY_BIND, str(directory))
        probe = subprocess.run([*prefix, "touch", str(directory / "probe")], capture_output=True, timeout=30)
        if probe.returncode != 0 and b"Read-only file system" in probe.stderr:
            return prefix
    pytest.fail("cannot make a directory read-only here: mount namespaces need CAP_SYS_ADMIN or user namespaces")


def test_existing_state_dir_mounted_read_only_exits_3_and_keeps_the_registry(tmp_path):
    state_dir = tmp_path / "state"
    Registry(state_dir).close()
    before = {p.name: p.read_bytes() for p in state_dir.iterdir()}
    proc = start_gateway(tmp_path, state_dir, _read_only_prefix(state_dir))
    assert_state_error(proc, state_dir, "Error")
    assert {p.name: p.read_bytes() for p in state_dir.iterdir()} == before


def test_a_failure_outside_the_state_dir_keeps_its_own_error(tmp_path):
    """A missing dataset is not a state-write failure: it is not reported as one."""
    config = tmp_path / "gateway.yaml"
    missing = tmp_path / "no-such-data.csv"
    config.write_text(f"state_dir: {tmp_path / 'state'}\ndata: {{path: {missing}}}\n")
    proc = subprocess.run([sys.executable, "-m", "ztfl.cli", "gateway", "--config", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode not in (0, STATE_WRITE_FAILED), out[-3000:]
    assert str(missing) in out, out[-3000:]
    assert "cannot write the gateway state" not in out, out[-3000:]
