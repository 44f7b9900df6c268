"""The gateway's model directory becomes read-only in the middle of a round: writing the new model
fails, the gateway stops with the state-write error (exit code 3, a message that says what to
check) instead of a traceback, nothing half-written is left, the registry still holds the last
good version, and after a restart on a writable directory the round is redone and commits exactly.

Read-only is enforced by the kernel, also for root: the gateway runs in a private mount namespace
where its models directory is a bind mount, remounted read-only mid-round (EROFS; the mount ends
with the namespace, the host never sees it). Where no mount namespace can be made, a non-root run
falls back to taking the write permission away (EACCES)."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from ztfl.gateway.registry import Registry
from ztfl.gateway.server import STATE_WRITE_FAILED

BIND_ITSELF = 'mount --bind "$0" "$0" && exec "$@"'


@dataclass
class ReadOnlyFault:
    directory: Path
    prefix: tuple[str, ...] = ()         # starts the gateway in its own mount namespace
    enter: tuple[str, ...] = ()          # nsenter options to act in that namespace
    message: str = "Read-only file system"

    @classmethod
    def choose(cls, directory: Path) -> "ReadOnlyFault":
        candidates = [("unshare", "--mount", "--propagation", "private")] if os.geteuid() == 0 else []
        candidates.append(("unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"))
        for unshare in candidates:
            probe = subprocess.run([*unshare, "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"',
                                    str(directory)], capture_output=True, timeout=30)
            if probe.returncode == 0:
                enter = ("--mount",) if "--user" not in unshare else ("--user", "--mount")
                return cls(directory, (*unshare, "sh", "-c", BIND_ITSELF, str(directory)), enter)
        if os.geteuid() != 0:
            return cls(directory, message="Permission denied")
        pytest.fail("cannot make a directory read-only for root here: mount namespaces need CAP_SYS_ADMIN "
                    "or user namespaces")

    def apply(self, pid: int) -> None:
        if self.prefix:
            subprocess.run(["nsenter", "--target", str(pid), *self.enter, "mount", "-o", "remount,bind,ro",
                            str(self.directory)], check=True, timeout=30)
        else:
            for d in (self.directory, *self.directory.iterdir()):
                d.chmod(0o555)

    def undo(self) -> None:
        if not self.prefix:
            for d in (self.directory, *self.directory.iterdir()):
                d.chmod(0o755)


def test_models_directory_read_only_mid_round_stops_cleanly_and_round_is_redone(federation):
    federation.configure(agents=5, rounds=1)
    resume = federation.resume_file()
    federation.start_fleet(5, "--stall", "masked", "--resume-file", str(resume))
    models = federation.state / "models"
    models.mkdir(parents=True)
    fault = ReadOnlyFault.choose(models)
    federation.start_gateway(prefix=fault.prefix)
    federation.wait_stage("masked", attempt=0)
    fault.apply(federation.gateway.pid)
    resume.write_text("go")
    code = federation.gateway.wait(timeout=120)
    log = federation.log_tail(20000)
    assert code == STATE_WRITE_FAILED, log[-3000:]
    assert "cannot write the gateway state" in log and "disk full or read-only" in log, log[-3000:]
    assert fault.message in log and "Traceback" not in log, log[-3000:]
    reg = Registry(federation.state)
    try:
        versions = reg.model_versions("cnn-lstm")
        assert [v.version for v in versions] == [0]
        reg.load_model(versions[0])                 # the committed file still matches its digest
    finally:
        reg.close()
    leftovers = sorted(p.name for p in (models / "cnn-lstm").iterdir())
    assert leftovers == [versions[0].path.name]     # no temporary or half-written model file

    fault.undo()
    federation.start_gateway()                      # writable again (the mount ended with its namespace)
    assert federation.gateway.wait(timeout=120) == 0, federation.log_tail()
    rounds = federation.check_versions()
    assert [(r["round"], r["status"]) for r in rounds] == [(1, "aborted"), (1, "committed")]
    assert rounds[0]["reason"] == "gateway restarted"
