"""`ztfl bench epochs` runs both policies, aggregates exactly, and counts the X25519 work saved."""
from __future__ import annotations

import json

from ztfl.cli import main


def test_bench_epochs_reports_key_reuse_against_per_round_keys(capsys):
    assert main(["bench", "epochs", "--clients", "6", "--dim", "200", "--rounds", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exact"] is True
    reuse, fresh = report["key_reuse"], report["per_round_keys"]
    # 2 public keys + 2 agreements per peer + the session key, once per setup.
    assert reuse["first_round"]["x25519_per_client"] == 3 + 2 * 5
    assert reuse["later_rounds_mean"]["x25519_per_client"] == 0
    assert fresh["later_rounds_mean"]["x25519_per_client"] == 2 + 2 * 5
    assert reuse["key_setups_per_client"] == 1 and fresh["key_setups_per_client"] == 3
    assert reuse["later_rounds_mean"]["client_cpu_seconds"] > 0
