"""Models, flat parameters, local training (clean and adversarial), evaluation and the
train / evaluate commands, on small slices of real data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ztfl.models import bundle
from ztfl.models.adversarial import attack
from ztfl.models.cnn_lstm import CNNLSTM, CNNLSTMConfig
from ztfl.models.micro import MAX_PARAMS, MicroConfig, MicroMLP, MicroModelError
from ztfl.models.params import ParameterShapeError, get_flat, num_flat, num_trainable, set_flat
from ztfl.models.prepare import prepare
from ztfl.models.training import TrainConfig, class_weights, evaluate, loss_of, train_local
from ztfl.cli import main as ztfl_main


@pytest.fixture(scope="module")
def kdd(tmp_path_factory):
    from tests.test_models_data import spread_rows
    from tests.conftest import DATASETS
    d = tmp_path_factory.mktemp("kdd")
    f = spread_rows(DATASETS / "nsl_kdd/KDDTrain+_20Percent.txt", d / "kdd.txt", 500, header=False)
    return f, prepare(f, "nsl-kdd", seed=0)


def small_model(prep, seed=0):
    torch.manual_seed(seed)
    return bundle.new_model("cnn-lstm", prep.pipeline, size="small")


def test_default_cnn_lstm_is_about_half_a_million_parameters():
    m = CNNLSTM(CNNLSTMConfig(n_features=121, n_classes=5))
    assert 400_000 <= num_trainable(m) <= 600_000
    assert m(torch.rand(3, 121)).shape == (3, 5)


def test_default_model_reads_out_the_max_over_steps_and_older_files_load_as_last_step(tmp_path):
    assert CNNLSTMConfig(121, 5).readout == "max" and CNNLSTMConfig.small(121, 5).readout == "last"
    legacy = {k: v for k, v in CNNLSTMConfig(121, 5).to_dict().items() if k != "readout"}
    assert CNNLSTMConfig.from_dict(legacy).readout == "last"
    with pytest.raises(ValueError):
        CNNLSTMConfig(121, 5, readout="mean")
    torch.manual_seed(0)
    last = CNNLSTM(CNNLSTMConfig(121, 5, readout="last")).eval()
    peak = CNNLSTM(CNNLSTMConfig(121, 5, readout="max")).eval()
    peak.load_state_dict(last.state_dict())   # same parameters: only the forward pass differs
    x = torch.rand(4, 121)
    with torch.no_grad():
        h = last.conv(x.unsqueeze(1))
        out, _ = last.lstm(h.transpose(1, 2))
        assert torch.allclose(last(x), last.head(out[:, -1, :]))
        assert torch.allclose(peak(x), peak.head(out.max(dim=1).values))


def test_micro_model_stays_within_8k_parameters():
    cfg = MicroConfig.fitting(182, 10)
    assert cfg.n_params() <= MAX_PARAMS and num_trainable(MicroMLP(cfg)) == cfg.n_params()
    assert MicroConfig.fitting(600, 10).n_params() <= MAX_PARAMS
    with pytest.raises(MicroModelError):
        MicroMLP(MicroConfig(600, 10, (64, 32)))


def test_flat_parameters_round_trip_and_reject_wrong_vectors(kdd):
    _, prep = kdd
    a, b = small_model(prep, 1), small_model(prep, 2)
    flat = get_flat(a)
    assert flat.dtype == np.float32 and flat.shape == (num_flat(a),)
    set_flat(b, flat)
    x = torch.from_numpy(prep.val.x[:8])
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))
    with pytest.raises(ParameterShapeError):
        set_flat(b, flat[:-1])
    with pytest.raises(ParameterShapeError):
        set_flat(b, flat.astype(np.float64))
    bad = flat.copy()
    bad[0] = np.nan
    with pytest.raises(ParameterShapeError):
        set_flat(b, bad)


def test_training_reduces_loss_and_is_deterministic(kdd):
    _, prep = kdd
    cfg = TrainConfig(epochs=3, batch_size=64, lr=5e-3, seed=7)
    m = small_model(prep)
    before = loss_of(m, prep.train)
    r1 = train_local(m, prep.train, cfg)
    assert loss_of(m, prep.train) < before
    assert r1.epoch_losses[-1] < r1.epoch_losses[0]
    assert r1.n_samples == 3 * len(prep.train)
    r2 = train_local(small_model(prep), prep.train, cfg)
    assert np.array_equal(r1.weights, r2.weights)
    r3 = train_local(small_model(prep), prep.train, TrainConfig(epochs=3, batch_size=64, lr=5e-3, seed=8))
    assert not np.array_equal(r1.weights, r3.weights)


def test_training_budget_stops_after_max_batches(kdd):
    _, prep = kdd
    r = train_local(small_model(prep), prep.train, TrainConfig(epochs=5, batch_size=32, max_batches=3))
    assert r.batches == 3 and r.n_samples == 96


def test_class_weights_favour_rare_classes():
    w = class_weights(np.array([0] * 90 + [1] * 10), 3)
    assert w[1] > w[0] and w[2] == 0


@pytest.mark.parametrize("kind", ["fgsm", "pgd"])
def test_adversarial_rows_stay_in_bounds_and_keep_categoricals_valid(kdd, kind):
    _, prep = kdd
    m = small_model(prep)
    train_local(m, prep.train, TrainConfig(epochs=1, lr=5e-3))
    x = torch.from_numpy(prep.val.x)
    y = torch.from_numpy(prep.val.y)
    eps = 0.05
    adv = attack(m, x, y, kind, eps, prep.val.continuous, steps=5).numpy()
    delta = adv - prep.val.x
    assert np.abs(delta).max() <= eps + 1e-6
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    cont = prep.val.continuous
    assert np.all(delta[:, ~cont] == 0)          # one-hots and 0/1 flags untouched
    assert np.abs(delta[:, cont]).max() > 0      # continuous columns did move
    # every categorical block still holds exactly one 1
    k = len(prep.pipeline.numeric)
    for col in prep.pipeline.categorical:
        block = adv[:, k:k + len(col.values) + 1]
        assert np.all(block.sum(axis=1) == 1.0)
        k += len(col.values) + 1


def test_adversarial_training_runs_and_evaluate_reports_robust_accuracy(kdd):
    _, prep = kdd
    m = small_model(prep)
    r = train_local(m, prep.train, TrainConfig(epochs=1, lr=5e-3, adversarial="pgd", pgd_steps=2, seed=1))
    assert np.all(np.isfinite(r.weights))
    res = evaluate(m, prep.val, attack_kind="pgd", eps=0.05, steps=3)
    assert 0.0 <= res["robust_accuracy"] <= 1.0
    assert set(res["per_class_recall"]) <= set(prep.pipeline.classes)
    assert 0.0 <= res["macro_f1"] <= 1.0
    capped = evaluate(m, prep.val, attack_kind="fgsm", eps=0.05, attack_rows=10)
    assert capped["attacked_rows"] == 10 and 0.0 <= capped["clean_accuracy_attacked_rows"] <= 1.0


def test_train_and_evaluate_commands_on_a_file_with_an_unseen_category(kdd, tmp_path, capsys):
    f, _ = kdd
    out = tmp_path / "model"
    assert ztfl_main(["train", "--data", str(f), "--format", "nsl-kdd", "--out", str(out), "--size", "small",
                      "--epochs", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parameters"] < 10_000 and set(report["validation"]) >= {"accuracy", "macro_f1"}
    model, pipeline = bundle.load(out)
    assert report["readout"] == model.config.readout == "last"   # the small size's own
    # A file the model never saw: new service names, an attack name missing from the training data.
    lines = open(f).read().splitlines()[:40]
    lines[0] = lines[0].replace(lines[0].split(",")[2], "zz_never_seen_service", 1)
    fields = lines[1].split(",")
    fields[41] = "mscan"
    lines[1] = ",".join(fields)
    new = tmp_path / "new.txt"
    new.write_text("\n".join(lines))
    assert ztfl_main(["evaluate", "--model", str(out), "--data", str(new), "--format", "nsl-kdd",
                      "--attack", "fgsm", "--eps", "0.05", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 40 and 0.0 <= res["accuracy"] <= 1.0 and "robust_accuracy" in res
    assert "per_class_recall" in res and "macro_f1" in res


def test_evaluate_command_names_a_missing_column(kdd, tmp_path, capsys):
    f, _ = kdd
    out = tmp_path / "model"
    assert ztfl_main(["train", "--data", str(f), "--format", "nsl-kdd", "--out", str(out), "--size", "small",
                      "--epochs", "1", "--json"]) == 0
    capsys.readouterr()
    bad = tmp_path / "unsw.csv"
    bad.write_text("id,dur,proto,attack_cat,label\n1,0.1,tcp,Normal,0\n")
    assert ztfl_main(["evaluate", "--model", str(out), "--data", str(bad), "--format", "unsw-nb15"]) == 2
    assert "duration" in capsys.readouterr().err


def test_bundle_rejects_mismatched_weights(kdd, tmp_path):
    _, prep = kdd
    m = small_model(prep)
    bundle.save(tmp_path / "m", m, prep.pipeline)
    meta = json.loads((tmp_path / "m/model.json").read_text())
    meta["config"]["lstm_hidden"] = 32
    (tmp_path / "m/model.json").write_text(json.dumps(meta))
    with pytest.raises(bundle.BundleError):
        bundle.load(tmp_path / "m")
