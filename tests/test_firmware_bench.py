"""`ztfl bench firmware` runs classic and key-reuse rounds with a firmware client and reports
their parts and work counts (a smoke test on a tiny model: the figures themselves belong to the
benchmark, not to tests)."""
from __future__ import annotations

import json

import pytest

from ztfl.cli import main as ztfl_main

STAGES = {"AdvertiseKeys", "ShareKeys", "MaskedInputCollection", "ConsistencyCheck", "Unmasking"}


def test_bench_firmware_compares_per_round_keys_with_key_reuse(capsys):
    assert ztfl_main(["bench", "firmware", "--features", "12", "--classes", "3", "--samples", "8",
                      "--clients", "5", "--rounds", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["aggregated"] == [1, 2, 3, 4, 5]
    assert set(out["times_ms"]) == {"keys", "train"} | STAGES
    assert all(v > 0 for v in out["times_ms"].values())
    # The MASKED_INPUT frame of a classic round: header, prefix, dim + 1 words of 4 bytes, signature.
    assert out["upload_bytes"] == 20 + 8 + 4 * (out["dim"] + 1) + 64
    assert 0 < out["code_heap"] < out["live_heap_after_training"] <= out["peak_live_heap"]
    assert out["esp32_estimate_s"] == round(out["client_work_ms"] * out["esp32_factor"] / 1000, 1)
    (cohort,) = out["cohorts"]
    assert cohort["clients"] == 5 and cohort["aggregated"] is True
    classic, first, later = (cohort[k] for k in ("classic_per_round_keys", "key_reuse_first_round",
                                                 "key_reuse_later_rounds"))
    # Classic, fresh keys (a complete graph of 5: no graph reveal): ROUND_CONFIG, ROSTER, 4
    # entries, SHARES_RELAY, CONSISTENCY_REQUEST, UNMASK_REQUEST, 5 survivor signatures; 6
    # signatures; 2 key pairs + 2 x 4 agreements.
    assert (classic["ed25519_verify"], classic["ed25519_sign"], classic["x25519"]) == (14, 6, 10)
    # The first key-reuse round: ROUND_CONFIG and the 4 entries, one signature, the agreements
    # and the session key; later rounds: ROUND_CONFIG and ADVERTISE_KEYS only, no X25519.
    assert (first["ed25519_verify"], first["ed25519_sign"], first["x25519"]) == (5, 1, 11)
    assert (later["ed25519_verify"], later["ed25519_sign"], later["x25519"]) == (1, 1, 0)
    # Session tags: the 8 frames of a round; consistency tags: one to and one from each of 4 peers.
    assert later["session_tags"] == 8 and later["consistency_tags"] == 8
    # A key-reuse upload ends with a 16-byte session tag instead of the signature.
    assert later["upload_bytes"] == out["upload_bytes"] - 64 + 16
    for run in (classic, first, later):
        assert set(run["cpu_ms"]) == set(run["wall_ms"]) == {"keys"} | STAGES
        assert run["protocol_wall_ms"] > 0 and run["train_wall_ms"] > 0
    assert set(cohort["reduction_pct"]) == {"protocol_cpu", "protocol_wall", "with_training_cpu",
                                            "with_training_wall"}
    assert set(cohort["esp32_estimate_s"]) == {"classic_protocol", "key_reuse_protocol", "training"}


def test_bench_firmware_refuses_cohorts_below_the_security_floor(capsys):
    with pytest.raises(SystemExit) as exit_info:
        ztfl_main(["bench", "firmware", "--clients", "4,8"])
    assert exit_info.value.code == 2
    assert "cohort sizes must be 5..64 (the agents' security floor)" in capsys.readouterr().err
