"""`ztfl bench secagg` runs a real round and prints one JSON object with the documented fields."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIELDS = {"clients", "dim", "dropout", "mask_bits", "neighbors", "threshold", "client_seconds_mean",
          "server_seconds", "exact", "max_abs_error", "upload_bytes_per_client", "plaintext_bytes_per_client"}


def bench(*args):
    out = subprocess.run([sys.executable, "-m", "ztfl.cli", "bench", "secagg", *args, "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_bench_secagg_prints_an_exact_round():
    report = bench("--clients", "12", "--dim", "2000", "--dropout", "0.25", "--mask-bits", "32")
    assert FIELDS <= set(report)
    assert report["exact"] is True and report["survivors"] == 9
    assert report["max_abs_error"] <= 2**-16
    # uint32 on the wire: 4 bytes per value plus the weight word and fixed framing.
    assert report["upload_bytes_per_client"] == 20 + 8 + 4 * 2001 + 64
    assert report["upload_bytes_per_client"] <= 1.05 * report["plaintext_bytes_per_client"]


def test_bench_secagg_plus_and_64_bit():
    report = bench("--clients", "20", "--dim", "500", "--dropout", "0.1", "--mask-bits", "64", "--neighbors", "8")
    # Groups of 9: the smallest threshold active security allows is 7.
    assert report["exact"] is True and report["neighbors"] == 8 and report["threshold"] == 7
    assert report["upload_bytes_per_client"] == 20 + 8 + 8 * 501 + 64
