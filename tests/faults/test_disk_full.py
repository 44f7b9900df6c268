"""The gateway's disk fills up in the middle of a round: its next state write fails, it stops
without committing anything half-written (the registry still holds the last good version, every
model file matches its digest, no temporary file is left), and after a restart with space back
the round is redone and commits exactly. The full disk is a file-size limit set on the running
gateway process (prlimit): writes that would grow a state file fail with EFBIG, as they fail
with ENOSPC on a full file system, without needing a privileged mount in the tests."""
from __future__ import annotations

import resource

from ztfl.gateway.registry import Registry
from ztfl.gateway.server import STATE_WRITE_FAILED


def test_disk_full_mid_round_keeps_last_version_and_round_is_redone(federation):
    federation.configure(agents=5, rounds=1)
    resume = federation.resume_file()
    federation.start_fleet(5, "--stall", "masked", "--resume-file", str(resume))
    federation.start_gateway()
    federation.wait_stage("masked", attempt=0)
    smallest = min(p.stat().st_size for p in federation.state.rglob("*") if p.is_file() and p.stat().st_size)
    resource.prlimit(federation.gateway.pid, resource.RLIMIT_FSIZE, (smallest - 1, smallest - 1))
    resume.write_text("go")
    code = federation.gateway.wait(timeout=120)
    log = federation.log_tail(20000)
    assert code == STATE_WRITE_FAILED, log[-3000:]
    assert "cannot write the gateway state" in log and "disk full or read-only" in log, log[-3000:]
    reg = Registry(federation.state)
    try:
        versions = reg.model_versions("cnn-lstm")
        assert [v.version for v in versions] == [0]
        reg.load_model(versions[0])                 # the file still matches its digest
    finally:
        reg.close()
    assert [p for p in federation.state.rglob(".*") if p.is_file()] == []   # no half-written temp file

    federation.start_gateway()                      # space is back
    assert federation.gateway.wait(timeout=120) == 0, federation.log_tail()
    rounds = federation.check_versions()
    assert rounds[-1]["status"] == "committed" and rounds[-1]["attempt"] >= 1
