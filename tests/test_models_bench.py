"""`ztfl bench model` end to end on a tiny model (LiteRT left out here: the TFLite path is
covered by test_export_models)."""
from __future__ import annotations

import json

from ztfl.cli import main as ztfl_main


def test_bench_model_reports_sizes_latency_agreement_and_accuracy(datasets_dir, tmp_path, capsys):
    out = tmp_path / "model"
    assert ztfl_main(["train", "--data", str(datasets_dir / "nsl_kdd/KDDTrain+_20Percent.txt"),
                      "--format", "nsl-kdd", "--out", str(out), "--size", "small", "--epochs", "1",
                      "--max-rows", "400", "--json"]) == 0
    capsys.readouterr()
    assert ztfl_main(["bench", "model", "--model", str(out), "--no-tflite", "--repeats", "2",
                      "--rows", "60", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # one JSON object, nothing else
    report = json.loads(lines[0])
    assert report["held_out_rows"] == 60 and report["parameters"] > 0
    assert set(report["latency_us_per_sample"]) == {f"{r}_b{b}" for r in ("torch_fp32", "onnx_fp32", "onnx_int8")
                                                    for b in (1, 256)}
    assert all(v > 0 for v in report["latency_us_per_sample"].values())
    assert 0.0 <= report["agreement_with_fp32"]["onnx_int8"] <= 1.0
    assert set(report["accuracy"]) == {"torch_fp32", "onnx_fp32", "onnx_int8"}
    assert report["size_bytes"]["onnx_int8"] < report["size_bytes"]["onnx_fp32"]
