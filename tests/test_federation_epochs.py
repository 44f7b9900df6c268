"""Key epochs end to end: the real gateway process, a real mosquitto and simulated agents (agent.sim:
the real client protocol and key rings, no training, known updates).

Key-reuse rounds: several rounds share one key setup, every commit is the exact FedAvg of the
aggregated agents, an agent that drops out mid-round keeps its epoch and comes back with the same
keys, and the epoch ends after its configured number of rounds. Classic rounds (max_rounds 1): a
dropout's mask secret is reconstructed, which ends its epoch; it comes back with new keys and is
aggregated again.
"""
from __future__ import annotations

import json
import urllib.request

from faults.conftest import federation  # noqa: F401  (the fault suite's fixture: gateway + fleets on a real broker)

COHORT = "cnn-lstm-32"
AGENTS = [f"sim-{i:05d}" for i in range(1, 6)]


def _keys(rounds: list[dict], rnd: int) -> dict:
    return next(r for r in rounds if r["round"] == rnd and r["status"] == "committed")["cohorts"][COHORT]


def _metrics(federation) -> str:
    port = (federation.state / "http.port").read_text().strip()
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def test_key_reuse_rounds_share_one_key_setup_and_survive_a_dropout(federation):
    # Agent 5 goes offline in round 2 after sharing its keys (before its masked input) and is back for round 3.
    federation.configure(agents=5, rounds=5, key_epoch={"max_rounds": 3, "max_seconds": 3600},
                         round_interval_s=1.0, linger_s=3.0)
    federation.start_fleet(5, "--miss-plan", "5:2:masked")
    federation.start_gateway()
    status = federation.wait_for(lambda s: s["done"], "five rounds", timeout=240)
    metrics = _metrics(federation)
    assert federation.gateway.wait(timeout=60) == 0, federation.log_tail()
    rounds = federation.check_versions()          # each commit: the exact FedAvg of the aggregated agents
    assert [(r["round"], r["attempt"], r["status"]) for r in rounds] == [(r, 0, "committed") for r in range(1, 6)]
    cohorts = {r: _keys(rounds, r) for r in range(1, 6)}
    keys = {r: c["keys"] for r, c in cohorts.items()}
    assert [k["protocol_round"] for k in keys.values()] == [r * 256 for r in range(1, 6)]
    assert all(k["key_reuse"] for k in keys.values())
    first, second = keys[1]["epoch"], keys[4]["epoch"]
    assert [k["epoch"] for k in keys.values()] == [first, first, first, second, second] and second > first
    # Round 1 sets up every agent's keys; rounds 2 and 3 reuse them, the dropout's too.
    assert keys[1]["new_keys"] == AGENTS
    assert cohorts[2]["dropped"] == ["sim-00005"] and "sim-00005" not in cohorts[2]["aggregated"]
    assert keys[2]["new_keys"] == [] and keys[2]["epoch_ended"] == []
    assert keys[3]["new_keys"] == [] and keys[3]["kept_keys"] == AGENTS
    assert "sim-00005" in cohorts[3]["aggregated"]
    # The epoch ends after three rounds: everybody sets up new keys once, then reuses them.
    assert keys[4]["new_keys"] == AGENTS and keys[5]["kept_keys"] == AGENTS
    epoch = status["key_epochs"][COHORT]
    assert (epoch["epoch"], epoch["rounds_in_epoch"], epoch["key_reuse"]) == (second, 2, True)
    assert epoch["revealed_keys"] == 0 and epoch["age_s"] >= 0
    assert f'ztfl_key_setups_total{{cohort="{COHORT}"}} 10.0' in metrics
    assert f'ztfl_key_epoch{{cohort="{COHORT}"}} {float(second)}' in metrics
    assert 'ztfl_key_epoch_rounds{cohort="cnn-lstm-32"} 2.0' in metrics
    assert not (federation.state / "revealed_keys.json").exists()


def test_classic_round_dropout_ends_its_epoch_and_it_rejoins_with_new_keys(federation):
    federation.configure(agents=5, rounds=2, key_epoch={"max_rounds": 1}, round_interval_s=1.0)
    federation.start_fleet(5, "--miss-plan", "5:1:masked")
    federation.start_gateway()
    assert federation.gateway.wait(timeout=180) == 0, federation.log_tail()
    rounds = federation.check_versions()
    assert [(r["round"], r["attempt"], r["status"]) for r in rounds] == [(1, 0, "committed"), (2, 0, "committed")]
    one, two = _keys(rounds, 1), _keys(rounds, 2)
    assert one["keys"]["key_reuse"] is False and one["dropped"] == ["sim-00005"]
    # Its secret was reconstructed to remove its pairwise masks: its epoch is over.
    assert one["keys"]["epoch_ended"] == ["sim-00005"]
    assert two["keys"]["epoch"] > one["keys"]["epoch"]
    assert two["keys"]["new_keys"] == AGENTS and "sim-00005" in two["aggregated"]
    revealed = json.loads((federation.state / "revealed_keys.json").read_text())
    assert list(revealed) == [COHORT] and len(revealed[COHORT]) == 1
