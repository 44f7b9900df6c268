"""The gateway SIGKILLed in each protocol stage, then restarted: no global model version is lost
or corrupted, the interrupted attempt is recorded as aborted and redone, and the round that
finally commits applies exactly the FedAvg of its aggregated agents."""
from __future__ import annotations

from faults.conftest import STAGES


def test_gateway_killed_in_every_stage_then_restarted_loses_no_version(federation):
    federation.configure(agents=5, rounds=1)
    # Attempt i holds the frames of stage i: the gateway is killed while it waits there.
    federation.start_fleet(5, "--stall", ",".join(STAGES))
    federation.start_gateway()
    for attempt, stage in enumerate(STAGES):
        federation.wait_stage(stage, attempt)
        federation.kill_gateway()
        federation.start_gateway()
    assert federation.gateway.wait(timeout=120) == 0, federation.log_tail()
    rounds = federation.check_versions()
    assert [(r["round"], r["attempt"], r["status"]) for r in rounds] == \
        [(1, a, "aborted") for a in range(len(STAGES))] + [(1, len(STAGES), "committed")]
    assert all(r["reason"] == "gateway restarted" for r in rounds[:-1])
    committed = rounds[-1]["cohorts"]["cnn-lstm-32"]
    assert sorted(committed["aggregated"]) == [f"sim-{i:05d}" for i in range(1, 6)]
