"""The attacks behind the robust-accuracy figures: the margin loss, the strongest-of-restarts
check, plain min-max scaling, and `ztfl bench adversarial` on a small slice of real telemetry
where the undefended model measurably loses accuracy under PGD-10."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from ztfl.models import bundle
from ztfl.models.adversarial import attack, input_gradient, margin_loss, pgd, strongest
from ztfl.models.datasets import load
from ztfl.models.preprocess import Pipeline
from ztfl.models.training import TrainConfig, predict, train_local
from ztfl.cli import main as ztfl_main


def test_margin_loss_is_best_other_logit_minus_true_logit():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    y = torch.tensor([0, 2])
    # row 0: max(1, 2) - 3 = -1; row 1: max(0, 5) - (-1) = 6
    assert margin_loss(logits, y).item() == pytest.approx(5.0)


def _linear_model(scale: float) -> nn.Module:
    """Class 0 when x0 > 0.5; the logit gap at a point grows with `scale`."""
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[scale, 0.0], [-scale, 0.0]]))
        model.bias.copy_(torch.tensor([-scale / 2, scale / 2]))
    return model.eval()


def test_sign_steps_survive_a_confident_softmax_and_the_margin_survives_an_underflowing_one():
    x = torch.tensor([[0.52, 0.3]])          # correct (class 0), 0.02 from the boundary
    y = torch.tensor([0])
    cont = np.array([True, True])
    # logit gap 40: the cross-entropy gradient is about 1e-17, tiny but not zero, and its sign suffices
    confident = _linear_model(1000.0)
    assert torch.any(input_gradient(confident, x, y, "ce") != 0)
    flipped = pgd(confident, x, y, 0.05, cont, steps=10, random_start=False, loss="ce")
    assert confident(flipped).argmax(1).item() == 1
    # logit gap 400: exp(-400) underflows float32, the gradient is exactly zero and CE-PGD is stuck
    saturated = _linear_model(10_000.0)
    assert torch.all(input_gradient(saturated, x, y, "ce") == 0)
    stuck = pgd(saturated, x, y, 0.05, cont, steps=10, random_start=False, loss="ce")
    assert torch.equal(stuck, x)
    moved = pgd(saturated, x, y, 0.05, cont, steps=10, random_start=False, loss="margin")
    assert saturated(moved).argmax(1).item() == 1 and (moved - x).abs().max().item() <= 0.05 + 1e-6


@pytest.fixture(scope="module")
def kdd_small(tmp_path_factory):
    from tests.conftest import DATASETS
    from tests.test_models_data import spread_rows
    from ztfl.models.prepare import prepare
    d = tmp_path_factory.mktemp("kdd_adv")
    f = spread_rows(DATASETS / "nsl_kdd/KDDTrain+_20Percent.txt", d / "kdd.txt", 500, header=False)
    prep = prepare(f, "nsl-kdd", seed=0)
    torch.manual_seed(0)
    model = bundle.new_model("cnn-lstm", prep.pipeline, size="small")
    train_local(model, prep.train, TrainConfig(epochs=2, lr=5e-3))
    return f, prep, model


def test_strongest_attack_is_never_weaker_than_pgd10_and_stays_valid(kdd_small):
    _, prep, model = kdd_small
    x, y, cont = torch.from_numpy(prep.val.x), torch.from_numpy(prep.val.y), prep.val.continuous
    x10 = attack(model, x, y, "pgd", 0.05, cont, steps=10, generator=torch.Generator().manual_seed(0))
    xs = strongest(model, x, y, 0.05, cont, steps=5, restarts=1, start=x10,
                   generator=torch.Generator().manual_seed(1))
    right10 = predict(model, x10.numpy()) == prep.val.y
    right_s = predict(model, xs.numpy()) == prep.val.y
    assert not np.any(right_s & ~right10)        # every row PGD-10 fooled stays fooled
    delta = xs.numpy() - prep.val.x
    assert np.abs(delta).max() <= 0.05 + 1e-6 and xs.min() >= 0 and xs.max() <= 1
    assert np.all(delta[:, ~cont] == 0)
    assert not model.training


def test_plain_minmax_scaling_has_no_log_columns_and_survives_a_round_trip(kdd_small, tmp_path):
    f, _, _ = kdd_small
    table = load(f, "nsl-kdd")
    default = Pipeline.fit(table)
    plain = Pipeline.fit(table, scaling="minmax")
    assert any(c.log for c in default.numeric) and default.extra == {}
    assert not any(c.log for c in plain.numeric) and plain.extra == {"scaling": "minmax"}
    x = plain.transform(table)
    assert x.min() >= 0.0 and x.max() <= 1.0
    # src_bytes is heavy-tailed: plain min-max leaves most rows near 0, log1p spreads them out
    j = [c.name for c in plain.numeric].index("src_bytes")
    assert np.median(x[:, j]) < np.median(default.transform(table)[:, j])
    plain.save(tmp_path / "p.json")
    again = Pipeline.load(tmp_path / "p.json")
    assert np.array_equal(again.transform(table), x) and again.extra == {"scaling": "minmax"}
    with pytest.raises(ValueError):
        Pipeline.fit(table, scaling="zscore")


@pytest.fixture(scope="module")
def gps_comparison(tmp_path_factory):
    """`ztfl bench adversarial` on 1,200 rows of ToN_IoT GPS tracker telemetry (both features
    continuous), small model. With seeds 0, 1 and 2 the undefended model lost 6.5, 3.5 and 10
    points under PGD-10 on its 200 attacked rows."""
    from tests.conftest import DATASETS
    import contextlib
    import io
    out = tmp_path_factory.mktemp("gps_adv")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = ztfl_main(["bench", "adversarial", "--data", str(DATASETS / "ton_iot/Train_Test_IoT_GPS_Tracker.csv"),
                          "--format", "ton-iot", "--max-rows", "1200", "--size", "small", "--epochs", "4",
                          "--lr", "5e-3", "--batch-size", "64", "--eval-rows", "200", "--strong-rows", "50",
                          "--strong-steps", "20", "--strong-restarts", "1", "--seed", "0",
                          "--out", str(out), "--json"])
    assert code == 0
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 1  # one JSON object, nothing else
    return json.loads(lines[0]), out


def test_undefended_model_loses_accuracy_under_pgd10(gps_comparison):
    report, _ = gps_comparison
    und = report["undefended"]
    assert report["perturbable_features"] == report["features"] == 2
    assert und["zero_gradient_rows"] == 0                     # no saturated rows masking the attack
    assert und["pgd10_accuracy"] <= und["clean_accuracy_attacked_rows"] - 0.03
    assert und["fgsm_accuracy"] < und["clean_accuracy_attacked_rows"]
    assert und["strongest_accuracy"] <= und["pgd10_accuracy_strong_rows"]
    # both columns are continuous: all of the gradient is there, and a wider ball hurts more
    assert und["sensitivity"]["gradient_share"]["continuous"] == pytest.approx(1.0)
    assert und["sensitivity"]["accuracy_with_shuffled"]["continuous"] < und["clean_accuracy_attacked_rows"]
    assert und["pgd10_accuracy_by_eps"]["0.2"] <= und["pgd10_accuracy"]


def test_bench_adversarial_reports_both_models_from_the_same_start(gps_comparison):
    report, out = gps_comparison
    und, adv = report["undefended"], report["adversarial"]
    assert report["robust_gain_points"] == pytest.approx(100 * (adv["pgd10_accuracy"] - und["pgd10_accuracy"]),
                                                         abs=0.01)
    assert report["clean_loss_points"] == pytest.approx(100 * (und["clean_accuracy"] - adv["clean_accuracy"]),
                                                        abs=0.01)
    assert report["target_met"] == (report["robust_gain_points"] >= 15 and report["clean_loss_points"] <= 2)
    assert report["strongest_gain_points"] == pytest.approx(
        100 * (adv["strongest_accuracy"] - und["strongest_accuracy"]), abs=0.01)
    assert report["attacked_rows"] == 200 and und["strong_rows"] == 50
    assert report["training_attack"] == {"kind": "pgd", "adv_fraction": 0.3, "pgd_steps": 3}
    # both models kept, and they differ only by the adversarial rows in training
    m_und, _ = bundle.load(out / "undefended")
    m_adv, _ = bundle.load(out / "adversarial")
    x = torch.rand(4, 2)
    assert not torch.equal(m_und(x), m_adv(x))


def test_last_step_readout_ignores_the_numeric_columns_and_the_max_readout_uses_them(datasets_dir):
    """Numeric columns open the encoded row, one-hots close it. Read out at the last LSTM step only,
    the model's accuracy does not move when the continuous columns are shuffled across rows (it
    learned nothing from them, so no attack on them can hurt it); read out as the max over steps,
    it uses them. Checked with seeds 0, 1 and 2."""
    from dataclasses import replace
    from ztfl.bench.adversarial import sensitivity
    from ztfl.models.cnn_lstm import CNNLSTM
    from ztfl.models.prepare import prepare
    prep = prepare(datasets_dir / "unsw_nb15/UNSW_NB15_dev.csv", "unsw-nb15", seed=0, max_rows=1500)
    clean, shuffled = {}, {}
    for readout in ("last", "max"):
        torch.manual_seed(0)
        model = CNNLSTM(replace(bundle.new_model("cnn-lstm", prep.pipeline, "small").config, readout=readout))
        train_local(model, prep.train, TrainConfig(epochs=4, batch_size=64, lr=5e-3, seed=0))
        clean[readout] = float(np.mean(predict(model, prep.val.x) == prep.val.y))
        shuffled[readout] = sensitivity(model, prep.val, len(prep.pipeline.numeric), seed=0)[
            "accuracy_with_shuffled"]["continuous"]
    assert shuffled["last"] == pytest.approx(clean["last"])
    assert shuffled["max"] < clean["max"] - 0.02
