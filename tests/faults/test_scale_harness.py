"""The scale harness itself (`ztfl bench gateway`, small N): simulated agents through a real
mosquitto, dropouts after ShareKeys, SecAgg+ neighbourhoods above 40 agents, exact aggregate."""
from __future__ import annotations

import json
import subprocess
import sys

from ztfl.bench.gateway import default_neighbors, run_round_through_broker


def test_round_with_dropouts_is_exact_and_reports_every_stage(mosquitto):
    report = run_round_through_broker(mosquitto.url, local_agents=12, dim=500, dropout=0.25, procs=2)
    assert report["state"] == "done" and report["exact"] and report["dropped_agents_excluded"]
    assert report["dropped"] == 3 and report["survivors"] == 9
    assert set(report["stages"]) == {"announce", "advertise", "share", "masked", "consistency", "unmask"}
    # Each survivor's masked input (501 words of 4 bytes) went through the broker at least once.
    assert report["broker_bytes_in"] > 9 * 501 * 4
    assert report["gateway_rejected"] == 0 and report["agents_rejected"] == 0
    # Where the agents' time went: every stage they answered, summing to at most their CPU time.
    by_stage = report["fleet_cpu_by_stage"]
    assert set(by_stage) == {"announce", "advertise", "share", "masked", "consistency", "unmask"}
    assert 0 < sum(by_stage.values()) <= report["fleet_cpu_seconds"]


def test_bench_cli_uses_neighbourhoods_above_forty_agents():
    assert default_neighbors(40) == 0 and default_neighbors(1000) == 20 and default_neighbors(100) == 14
    out = subprocess.run([sys.executable, "-m", "ztfl.cli", "bench", "gateway", "--agents", "48", "--dim", "200",
                          "--dropout", "0.05", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["neighbors"] == 12 and report["threshold"] == 9 and report["exact"]
    assert report["survivors"] == 48 - report["dropped"] == 46
    # The private broker's CPU seconds in the round (clock ticks of 10 ms: may round to 0 here).
    assert report["broker_cpu_seconds"] is not None and report["broker_cpu_seconds"] >= 0


def test_agents_started_elsewhere_join_the_round(mosquitto):
    """What the --remote-agent test runs over ssh, here in a local process: an agent fleet the
    harness did not start takes part and the aggregate stays exact."""
    external = subprocess.Popen([sys.executable, "-m", "ztfl.agent.sim", "--broker", mosquitto.url, "--agents", "1",
                                 "--first-id", "1000", "--dim", "1", "--timeout", "120"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        report = run_round_through_broker(mosquitto.url, local_agents=5, dim=300, dropout=0.0,
                                          external_agents=1, procs=1, timeout=120)
        assert report["exact"] and report["survivors"] == 6
        assert external.wait(timeout=60) == 0
    finally:
        if external.poll() is None:
            external.kill()
            external.wait()
