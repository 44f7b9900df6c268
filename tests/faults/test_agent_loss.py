"""Agents lost at each protocol stage, one stage per round: every round still commits in its
first attempt, a loss before the masked upload leaves that agent out of the sum, a loss after it
keeps its update in (its masked input arrived, its self mask is rebuilt from shares), and each
commit is the exact FedAvg of the aggregated agents."""
from __future__ import annotations

from faults.conftest import STAGES


def test_agent_lost_in_each_stage_round_still_commits_exactly(federation):
    federation.configure(agents=9, rounds=len(STAGES))
    # Round r loses agent 10 - r at stage r; a lost agent stays gone.
    plan = {10 - r: (r, stage) for r, stage in enumerate(STAGES, start=1)}
    federation.start_fleet(9, "--drop-plan", ",".join(f"{i}:{r}:{s}" for i, (r, s) in plan.items()))
    federation.start_gateway()
    assert federation.gateway.wait(timeout=240) == 0, federation.log_tail()
    rounds = federation.check_versions()
    assert [(r["round"], r["attempt"], r["status"]) for r in rounds] == \
        [(r, 0, "committed") for r in range(1, len(STAGES) + 1)]
    for index, (rnd, stage) in plan.items():
        cohort = rounds[rnd - 1]["cohorts"]["cnn-lstm-32"]
        lost = f"sim-{index:05d}"
        assert lost in cohort["participants"]
        if STAGES.index(stage) <= STAGES.index("masked"):
            assert cohort["dropped"] == [lost] and lost not in cohort["aggregated"]
        else:
            assert lost in cohort["aggregated"]
        later = [r["cohorts"]["cnn-lstm-32"]["participants"] for r in rounds[rnd:]]
        assert all(lost not in p for p in later)
