"""The registry: model versions are files with verified digests, committed with their round."""
from __future__ import annotations

import numpy as np
import pytest

from ztfl.gateway.registry import ModelVersion, Registry, RegistryError


def test_commit_and_resume_from_disk(tmp_path):
    reg = Registry(tmp_path)
    reg.commit_initial_model("cnn-lstm", np.zeros(5, np.float32))
    reg.begin_round(1, 0)
    reg.abort_round(1, 0, "below threshold")
    reg.begin_round(1, 1)
    path, digest = reg.write_model_file("cnn-lstm", 1, np.arange(5, dtype=np.float32))
    reg.commit_round(1, 1, [ModelVersion("cnn-lstm", 1, 1, digest, path, {"accuracy": 0.5})], {"seconds": 1.0})
    reg.begin_round(2, 0)      # a crash here leaves round 2 running
    reg.close()

    again = Registry(tmp_path)
    assert again.last_committed_round() == 1
    assert again.next_attempt(2) == 1
    latest = again.latest_models()["cnn-lstm"]
    assert latest.version == 1 and latest.metrics == {"accuracy": 0.5}
    np.testing.assert_array_equal(again.load_model(latest), np.arange(5, dtype=np.float32))
    assert [r["status"] for r in again.rounds()] == ["aborted", "committed", "running"]


def test_tampered_model_file_is_refused(tmp_path):
    reg = Registry(tmp_path)
    mv = reg.commit_initial_model("micro", np.ones(3, np.float32))
    data = bytearray(mv.path.read_bytes())
    data[-1] ^= 1
    mv.path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="sha256"):
        reg.load_model(mv)


def test_a_failed_commit_leaves_no_version(tmp_path):
    reg = Registry(tmp_path)
    reg.commit_initial_model("cnn-lstm", np.zeros(2, np.float32))
    reg.begin_round(1, 0)
    path, digest = reg.write_model_file("cnn-lstm", 1, np.ones(2, np.float32))
    dup = ModelVersion("cnn-lstm", 0, 1, digest, path, {})     # version 0 exists: the insert fails
    with pytest.raises(Exception):
        reg.commit_round(1, 0, [dup], {})
    assert reg.last_committed_round() == 0
    assert reg.latest_models()["cnn-lstm"].version == 0
