"""`ztfl bench dp` on a small slice of NSL-KDD: it trains through secure aggregation with one key
setup, spends what it was sized for, and reports the accountant's epsilon."""
from __future__ import annotations

import json

import pytest

from ztfl.cli import main


def test_bench_dp_small_run(capsys, datasets_dir):
    code = main(["bench", "dp", "--agents", "5", "--rounds", "2", "--max-rows", "1500", "--epsilons", "inf,8",
                 "--local-batches", "3", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    plain, private = report["runs"]
    assert plain["epsilon_target"] is None and "epsilon_spent" not in plain
    assert private["epsilon_spent"] <= 8.0
    assert private["epsilon_spent"] == pytest.approx(8.0, abs=0.01)
    assert plain["key_setups_per_agent"] == 1.0 and private["key_setups_per_agent"] == 1.0
    assert 0.0 <= private["accuracy"] <= 1.0 and plain["accuracy"] > 0.6
