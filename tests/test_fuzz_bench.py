"""`ztfl bench fuzz`: every decoder is exercised, the counts add up, a crash would be reported
with its input (shown with a decoder that does crash), and a run is reproducible."""
from __future__ import annotations

import json
import subprocess
import sys

from ztfl.bench.fuzz import run_target
from ztfl.bench.fuzz_targets import Target, catalogue


def test_bench_runs_every_target_without_crashes():
    out = subprocess.run([sys.executable, "-m", "ztfl.cli", "bench", "fuzz", "--inputs", "150", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["targets"] == len(catalogue()) >= 25 and report["total_crashes"] == 0
    for r in report["results"]:
        assert r["inputs"] == 150 == r["accepted"] + r["refused"]
        assert r["refused"] > 0          # the mutations do reach the error paths


def test_a_crashing_decoder_is_reported_with_its_input():
    def fragile(data: bytes):
        if data == b"\x01\x02\x03\x04\x05":
            return data
        if len(data) > 3 and data[3] == 0:
            raise IndexError("unchecked offset")
        raise ValueError("refused")

    target = Target("fragile", fragile, (ValueError,), lambda: [b"\x01\x02\x03\x04\x05"], "test")
    report = run_target(target, 2000, seed=1)
    assert report.crashes > 0 and report.crash_kinds == {"IndexError": report.crashes}
    sample = bytes.fromhex(report.crash_samples[0].input_hex)
    assert len(sample) > 3 and sample[3] == 0


def test_runs_are_reproducible():
    target = next(t for t in catalogue() if t.name == "protocol.frame")
    a, b = run_target(target, 300, seed=5), run_target(target, 300, seed=5)
    assert (a.accepted, a.refused) == (b.accepted, b.refused)
