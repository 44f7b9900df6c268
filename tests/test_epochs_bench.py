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


def test_bench_epochs_counts_the_public_key_work_of_each_round_kind(capsys):
    assert main(["bench", "epochs", "--clients", "5", "--dim", "100", "--rounds", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    reuse = report["key_reuse"]["later_rounds_mean"]
    fresh = report["per_round_keys"]["later_rounds_mean"]
    # Key reuse with session tags: the ROUND_CONFIG verified and the advert signed, nothing else.
    assert (reuse["ed25519_verify"], reuse["ed25519_sign"], reuse["x25519_per_client"]) == (1, 1, 0)
    assert reuse["session_tags"] == 8 and reuse["consistency_tags"] == 2 * 4
    # Classic: 5 server frames, 4 roster entries, 5 survivor signatures; 6 signatures; 2 + 2 * 4 X25519.
    assert (fresh["ed25519_verify"], fresh["ed25519_sign"], fresh["x25519_per_client"]) == (14, 6, 10)
    for kind in ("key_reuse", "per_round_keys"):
        parts = report[kind]["later_rounds_split"]
        assert set(parts) == {"signatures_ms", "x25519_ms", "masking_ms", "tags_ms", "other_ms"}
        total = sum(parts.values())
        assert abs(total - 1e3 * report[kind]["later_rounds_mean"]["client_cpu_seconds"]) < 1e-6
    assert report["key_reuse"]["later_rounds_split"]["x25519_ms"] == 0
    assert all(v > 0 for v in report["unit_cpu_microseconds"].values())
