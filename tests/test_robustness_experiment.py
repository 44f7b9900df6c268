"""The experiment runner and `ztfl experiment` on real NSL-KDD rows, kept tiny for CI:
20 agents, 3000 rows, one or two rounds of the micro model."""
import json
from dataclasses import replace

import numpy as np
import pytest

from ztfl.bench.byzantine import Experiment, ExperimentConfig
from ztfl.bench.simfed import SimulatedFederation
from ztfl.cli import main

TINY = ExperimentConfig(dataset="nsl-kdd", agents=20, rounds=1, max_rows=3000, local_batches=2, seed=4)


@pytest.fixture(scope="module")
def clean_updates():
    exp = Experiment(TINY)
    return exp._updates(0)[0]


@pytest.mark.parametrize("attack", ["sign-flip", "collude", "alie"])
def test_update_attacks_change_only_the_attackers_updates(clean_updates, attack):
    exp = Experiment(replace(TINY, attack=attack, fraction=0.3))
    ups, _ = exp._updates(0)
    mal = sorted(exp.malicious)
    assert len(mal) == 6
    for i in range(20):
        if i not in exp.malicious:
            assert np.array_equal(ups[i], clean_updates[i])
    if attack == "sign-flip":
        for i in mal:
            assert np.allclose(ups[i], -4.0 * clean_updates[i])
    else:
        # Colluders and "a little is enough" attackers all send one shared update.
        assert all(np.array_equal(ups[mal[0]], ups[i]) for i in mal)
        assert not np.array_equal(ups[mal[0]], clean_updates[mal[0]])


def test_data_attacks_poison_only_the_attackers_data():
    exp = Experiment(replace(TINY, attack="backdoor", fraction=0.1))
    assert isinstance(exp.fed, SimulatedFederation)
    trig = exp.trigger
    for i in range(20):
        part, data = exp.fed.data.parts[i], exp.data[i]
        triggered = np.all(data.x[:, list(trig.features)] == trig.value, axis=1)
        if i in exp.malicious:
            assert triggered.sum() >= 1 and np.all(data.y[triggered] == exp.normal)
        else:
            assert data is part
    flip = Experiment(replace(TINY, attack="label-flip", fraction=0.3))
    for i in flip.malicious:
        assert np.array_equal(flip.data[i].y, 1 - flip.fed.data.parts[i].y)


def test_cli_byzantine_grouped_run_prints_one_json_object(capsys):
    rc = main(["experiment", "byzantine", "--dataset", "nsl-kdd", "--attack", "backdoor", "--fraction", "0.1",
               "--defense", "median", "--privacy", "grouped", "--rounds", "2", "--max-rows", "3000",
               "--local-batches", "2", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["round"] for r in out["rounds"]] == [1, 2]
    assert len(out["malicious"]) == 2
    last = out["rounds"][-1]
    assert 0.0 <= last["accuracy"] <= 1.0 and 0.0 <= last["honest_excluded"] <= 1.0
    assert last["attack_success"] is not None


def test_cli_refuses_per_agent_krum_under_secagg(capsys):
    rc = main(["experiment", "byzantine", "--privacy", "secagg", "--defense", "krum", "--rounds", "1"])
    assert rc == 2
    assert "secagg hides" in capsys.readouterr().err


def test_sweep_writes_a_table_and_plots_and_lists_refusals(tmp_path, capsys):
    rc = main(["experiment", "sweep", "--preset", "grid", "--datasets", "nsl-kdd", "--attacks", "label-flip",
               "--fractions", "0.3", "--defenses", "fedavg", "multi-krum", "--privacy", "none", "secagg",
               "--rounds", "1", "--max-rows", "3000", "--local-batches", "2", "--out", str(tmp_path), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs"] == 4 and summary["refused"] == 1
    table = (tmp_path / "table.md").read_text()
    assert table.count("\n| nsl-kdd |") == 4 and "refused: defense 'multi-krum'" in table
    assert (tmp_path / "plot-nsl-kdd-label-flip-0.3-a0.5.png").stat().st_size > 1000
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4
