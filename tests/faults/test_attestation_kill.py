"""The gateway SIGKILLed while it collects attestation evidence (attestation on, the agents'
identities provisioned device keys), then restarted: the interrupted attempt is recorded as
aborted, its evidence (bound to that attempt's nonce) reaches the new gateway late and is refused,
and the next attempt seats every agent on fresh evidence and commits exactly."""
from __future__ import annotations

import yaml

from ztfl.agent.sim import sim_devices


def test_gateway_killed_in_the_attestation_stage_then_restarted(federation):
    devices = federation.work / "devices.yaml"
    devices.write_text(yaml.safe_dump({"devices": sim_devices(0, range(1, 6))}))
    federation.configure(agents=5, rounds=1, require_attestation=True, software_devices=str(devices),
                         allow_software_rooted=True)
    resume = federation.resume_file()
    # Attempt 0: the agents hold their evidence, so the gateway waits in the attestation stage.
    federation.start_fleet(5, "--attest", "--stall", "attest", "--resume-file", str(resume))
    federation.start_gateway()
    status = federation.wait_stage("attest", attempt=0)
    assert status["cohorts"]["cnn-lstm-32"]["state"] == "announced"
    federation.kill_gateway()
    # The held evidence of attempt 0 goes out now: the broker keeps it for the gateway's session.
    resume.write_text("go")
    federation.start_gateway()
    assert federation.gateway.wait(timeout=120) == 0, federation.log_tail()
    rounds = federation.check_versions()
    assert [(r["round"], r["attempt"], r["status"]) for r in rounds] == [(1, 0, "aborted"), (1, 1, "committed")]
    assert rounds[0]["reason"] == "gateway restarted"
    committed = rounds[1]["cohorts"]["cnn-lstm-32"]
    agents = [f"sim-{i:05d}" for i in range(1, 6)]
    assert committed["aggregated"] == agents
    assert committed["roots"] == {a: "software" for a in agents}
    # The stale evidence of each agent was refused, not counted for the new attempt.
    assert federation.log_tail(50000).count("attestation outside a round") == 5
