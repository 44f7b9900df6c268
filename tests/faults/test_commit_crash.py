"""The gateway SIGKILLed on the path by which a round's model becomes a committed version: while
the model file is still a temporary file, once it is in place but not yet in the registry, in the
middle of the registry transaction, and right after the commit. Each restart finds the last
committed version intact, removes the file a version never claimed, and redoes the round (or goes
on to the next one): versions 0, 1, 2 with no gap, each the exact FedAvg of its agents, and the
models directory holds exactly the committed files."""
from __future__ import annotations

import signal
import shutil

import numpy as np

from faults.crash_gateway import POINTS
from ztfl.gateway.registry import Registry


def _versions(state) -> list[int]:
    reg = Registry(state)
    try:
        versions = reg.model_versions("cnn-lstm")
        for mv in versions:
            reg.load_model(mv)                  # file present and matching its digest
        return [mv.version for mv in versions]
    finally:
        reg.close()


def _files(state, pattern: str) -> list[str]:
    return sorted(p.name for p in (state / "models" / "cnn-lstm").glob(pattern))


def test_gateway_killed_on_the_commit_path_leaves_no_orphan_and_no_gap(federation):
    federation.configure(agents=5, rounds=2)
    federation.start_fleet(5)
    state = federation.state
    # Attempt i of round 1 ends at POINTS[i]; the run after the last one commits round 2.
    for point in POINTS:
        gateway = federation.start_gateway(crash_at=point)
        assert gateway.wait(timeout=120) == -signal.SIGKILL, federation.log_tail()
        # What the kill left; the previous kill's leftovers were removed when this run started.
        temporary, final = _files(state, ".v*"), _files(state, "v000001-*")
        assert len(temporary) == (1 if point == "model-file-temp" else 0), temporary
        assert len(final) == (0 if point == "model-file-temp" else 1), final
        assert _versions(state) == ([0, 1] if point == "committed" else [0])

    federation.start_gateway()
    assert federation.gateway.wait(timeout=120) == 0, federation.log_tail()
    rounds = federation.check_versions()                # 0, 1, 2 and each commit exact
    assert [(r["round"], r["attempt"], r["status"]) for r in rounds] == \
        [(1, 0, "aborted"), (1, 1, "aborted"), (1, 2, "aborted"), (1, 3, "committed"), (2, 0, "committed")]
    assert all(r["reason"] == "gateway restarted" for r in rounds[:3])
    reg = Registry(state)
    try:
        claimed = sorted(mv.path.name for mv in reg.model_versions("cnn-lstm"))
    finally:
        reg.close()
    assert _versions(state) == [0, 1, 2]
    assert sorted(p.name for p in (state / "models" / "cnn-lstm").iterdir()) == claimed


def test_uncommitted_and_temporary_model_files_are_removed_and_nothing_else(tmp_path):
    state = tmp_path / "gateway"
    reg = Registry(state)
    try:
        v0 = reg.commit_initial_model("cnn-lstm", np.arange(4, dtype=np.float32))
        orphan, _ = reg.write_model_file("cnn-lstm", 1, np.ones(4, dtype=np.float32))
        temp = orphan.with_name(f".{orphan.name}.k2x9a1")
        temp.write_bytes(b"half")
        notes = orphan.with_name("notes.txt")
        notes.write_text("an operator's file")
        assert sorted(reg.remove_uncommitted_files()) == sorted([orphan, temp])
        assert v0.path.is_file() and notes.is_file()
        assert reg.remove_uncommitted_files() == []
    finally:
        reg.close()
    # A moved state directory: its committed files are still recognised by name and kept.
    moved = tmp_path / "moved"
    shutil.move(str(state), str(moved))
    reg = Registry(moved)
    try:
        assert reg.remove_uncommitted_files() == []
        assert (moved / "models" / "cnn-lstm" / v0.path.name).is_file()
    finally:
        reg.close()
