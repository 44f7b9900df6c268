"""Duplicated messages (QoS 1 redelivery, in both directions) and masked inputs delayed until
the others are in: handled idempotently, every duplicate refused with a typed reason, and the
aggregate counts each update once."""
from __future__ import annotations

import urllib.request


def test_every_frame_delivered_twice_counts_once(federation):
    federation.configure(agents=5, rounds=1, linger_s=10)   # status and metrics stay up after the commit
    resume = federation.resume_file()
    # Everything twice; agent 1's masked input also arrives last, after the other four.
    federation.start_fleet(5, "--duplicate", "--stall", "masked", "--stall-only", "1",
                           "--resume-file", str(resume))
    federation.start_gateway()
    federation.wait_stage("masked", attempt=0)
    resume.write_text("go")
    federation.wait_for(lambda s: s["models"]["cnn-lstm"]["version"] == 1, "round committed")
    port = (federation.state / "http.port").read_text().strip()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    duplicates = [line for line in metrics.splitlines() if 'reason="duplicate_message"' in line and not line.startswith("#")]
    assert duplicates and float(duplicates[0].split()[-1]) >= 4
    rounds = federation.check_versions()
    assert [(r["round"], r["attempt"], r["status"]) for r in rounds] == [(1, 0, "committed")]
    assert "frame refused" in (federation.work / "fleet.log").read_text()
