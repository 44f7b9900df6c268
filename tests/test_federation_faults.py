"""Faults against the real broker with real agent processes: the gateway killed mid-round resumes
without losing a model version; a broker restart mid-round does not count any update twice."""
from __future__ import annotations

import argparse
import json
import time
import urllib.request

import numpy as np

from ztfl.gateway.registry import Registry
from ztfl.demo import launch, start_gateway, wait_port

# Five: the agents refuse groups below their security floor (SecurityFloor.min_group).
AGENTS = "raspberry-pi-4,raspberry-pi-4,raspberry-pi-4,jetson-orin-nano,jetson-orin-nano"


def _args(datasets_dir, tmp_path, rounds):
    return argparse.Namespace(agents=AGENTS, rounds=rounds, alpha=0.5, model_size="small", max_batches=4,
                              data=str(datasets_dir / "nsl_kdd" / "KDDTrain+_20Percent.txt"),
                              record_updates_dir=str(tmp_path / "updates"),
                              gateway_overrides={"deadlines_s": {"attest": 2, "advertise": 10, "share": 10,
                                                                 "masked": 30, "consistency": 10, "unmask": 10}})


def _status(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


def _wait_for(port, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = _status(port)
        if s and predicate(s):
            return s
        time.sleep(0.1)
    raise AssertionError(f"condition not reached within {timeout} s; last status {s}")


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        p.wait(timeout=15)


def _check_every_commit_is_fedavg_of_its_attempt(reg, tmp_path):
    versions = reg.model_versions("cnn-lstm")
    assert [v.version for v in versions] == list(range(len(versions)))      # no version lost
    rounds = {(r["round"]): r for r in reg.rounds() if r["status"] == "committed"}
    for prev, cur in zip(versions, versions[1:]):
        r = rounds[cur.round]
        aggregated = r["cohorts"]["cnn-lstm-64"]["aggregated"]
        files = [tmp_path / "updates" / f"{a}-r{r['round']}.{r['attempt']}.npy" for a in aggregated]
        weights = [int(f.with_suffix(".weight").read_text()) for f in files]
        fedavg = sum(w * np.load(f).astype(np.float64) for w, f in zip(weights, files)) / sum(weights)
        applied = reg.load_model(cur).astype(np.float64) - reg.load_model(prev)
        np.testing.assert_allclose(applied, fedavg, atol=1e-5)


def test_gateway_killed_mid_round_resumes_from_last_commit(mosquitto, datasets_dir, tmp_path):
    gateway, agents, gw_state = launch(_args(datasets_dir, tmp_path, rounds=2), tmp_path, mosquitto.url)
    try:
        port = wait_port(gw_state, gateway)
        _wait_for(port, lambda s: s["round"] == 2 and any(c["stage"] in ("share", "masked")
                                                           for c in s["cohorts"].values()), 120)
        gateway.kill()
        gateway.wait()
        (gw_state / "http.port").unlink()
        gateway = start_gateway(tmp_path)
        wait_port(gw_state, gateway)
        assert gateway.wait(timeout=120) == 0
    finally:
        _stop(agents + [gateway])
    reg = Registry(gw_state)
    statuses = [(r["round"], r["attempt"], r["status"]) for r in reg.rounds()]
    assert statuses[0] == (1, 0, "committed")
    assert (2, 0, "aborted") in statuses and statuses[-1][0] == 2 and statuses[-1][2] == "committed"
    assert [r["reason"] for r in reg.rounds() if r["round"] == 2][0] == "gateway restarted"
    _check_every_commit_is_fedavg_of_its_attempt(reg, tmp_path)


def test_broker_restart_mid_round_counts_each_update_once(mosquitto, datasets_dir, tmp_path):
    gateway, agents, gw_state = launch(_args(datasets_dir, tmp_path, rounds=2), tmp_path, mosquitto.url)
    try:
        port = wait_port(gw_state, gateway)
        _wait_for(port, lambda s: s["round"] == 1 and any(c["stage"] == "masked" for c in s["cohorts"].values()),
                  120)
        mosquitto.restart()
        assert gateway.wait(timeout=150) == 0
    finally:
        _stop(agents + [gateway])
    reg = Registry(gw_state)
    assert reg.last_committed_round() == 2
    _check_every_commit_is_fedavg_of_its_attempt(reg, tmp_path)
