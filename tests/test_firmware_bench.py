"""`ztfl bench firmware` runs a whole round with a firmware client and reports its parts
(a smoke test on a tiny model: the figures themselves belong to the benchmark, not to tests)."""
from __future__ import annotations

import json

from ztfl.cli import main as ztfl_main


def test_bench_firmware_reports_each_part_of_the_round(capsys):
    assert ztfl_main(["bench", "firmware", "--features", "12", "--classes", "3", "--samples", "8",
                      "--clients", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["aggregated"] == [1, 2, 3]
    assert set(out["times_ms"]) == {"keys", "train", "AdvertiseKeys", "ShareKeys", "MaskedInputCollection",
                                    "ConsistencyCheck", "Unmasking"}
    assert all(v > 0 for v in out["times_ms"].values())
    # The MASKED_INPUT frame: header, prefix, dim + 1 words of 4 bytes, signature.
    assert out["upload_bytes"] == 20 + 8 + 4 * (out["dim"] + 1) + 64
    assert 0 < out["code_heap"] < out["live_heap_after_training"] <= out["peak_live_heap"]
    assert out["esp32_estimate_s"] == round(out["client_work_ms"] * out["esp32_factor"] / 1000, 1)
