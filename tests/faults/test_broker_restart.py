"""The broker restarted in the middle of a round: gateway and agents reconnect by themselves and
no masked update is counted twice. The broker runs without persistence, so a masked input sent
before the gateway has subscribed again can be lost: the round then completes in the same
attempt (the agent whose input was lost counted as a dropout, its masks removed through the
unmasking), or is aborted and redone with every agent; either way the commit is the exact FedAvg
of the inputs it counted, each once."""
from __future__ import annotations

import time


def test_broker_restarted_mid_round_counts_each_update_once(federation, mosquitto):
    federation.configure(agents=5, rounds=1, deadlines_s={"masked": 15})
    resume = federation.resume_file()
    # Agents 1, 2 and 5 upload their masked inputs; 3 and 4 hold theirs until after the restart.
    federation.start_fleet(5, "--stall", "masked", "--stall-only", "3,4", "--resume-file", str(resume))
    federation.start_gateway()
    federation.wait_stage("masked", attempt=0)
    mosquitto.restart()
    time.sleep(3)     # reconnect backoff starts at 1 s; either outcome below is correct
    resume.write_text("go")
    assert federation.gateway.wait(timeout=180) == 0, federation.log_tail()
    rounds = federation.check_versions()       # committed delta: the mean of the counted updates, once each
    assert [r["status"] for r in rounds][-1] == "committed" and len(rounds) <= 2
    assert all("masked inputs" in r["reason"] for r in rounds[:-1])
    aggregated = rounds[-1]["cohorts"]["cnn-lstm-32"]["aggregated"]
    assert len(set(aggregated)) == len(aggregated) >= 4           # each once; at most the lost one missing
    assert set(aggregated) <= {f"sim-{i:05d}" for i in range(1, 6)}
