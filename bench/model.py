"""`ztfl bench model`: size, latency and int8 fidelity of the IDS model.

For a trained model directory (default: a quick model trained here on a slice of NSL-KDD):
parameters; fp32 and int8 file sizes; per-sample latency at batch 1 and 256 for torch fp32,
ONNX fp32, ONNX int8 and LiteRT int8; agreement of each int8 model with the fp32 predictions;
accuracy of each on the held-out split `ztfl train` kept (or on --data). Missing exports are
made on the way (the .tflite ones need `make export-venv`). Prints one JSON object with --json.
A model directory with an open-set detector (models.openset) exports with it; the report then
adds how often each int8 runtime's "unknown attack" decisions, and its final decisions (class or
unknown), agree with the fp32 model's.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ztfl.models import bundle
from ztfl.models.datasets import FORMATS, datasets_dir
from ztfl.models.openset import load_detector
from ztfl.models.params import num_trainable
from ztfl.models.prepare import encode_file, validation_split

BATCHES = (1, 256)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model directory (default: train a quick one on NSL-KDD)")
    p.add_argument("--data", help="held-out data file (default: the validation split of training)")
    p.add_argument("--format", choices=FORMATS)
    p.add_argument("--rows", type=int, default=2000, help="at most this many held-out rows")
    p.add_argument("--calibration-rows", type=int, default=256)
    p.add_argument("--threads", type=int, default=1, help="threads for every runtime")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per latency figure")
    p.add_argument("--no-tflite", action="store_true", help="skip LiteRT (no .venv-litert)")
    p.add_argument("--json", action="store_true")


def _quick_model(out: Path) -> Path:
    from ztfl.models.prepare import prepare
    from ztfl.models.training import TrainConfig, train_local
    f = datasets_dir() / "nsl_kdd" / "KDDTrain+_20Percent.txt"
    split = {"data": str(f), "format": "nsl-kdd", "seed": 0, "val_fraction": 0.2, "max_rows": 3000, "window": 1}
    prep = prepare(f, "nsl-kdd", seed=0, max_rows=3000)
    torch.manual_seed(0)
    model = bundle.new_model("cnn-lstm", prep.pipeline)
    train_local(model, prep.train, TrainConfig(epochs=1))
    return bundle.save(out, model, prep.pipeline, {"split": split, "quick": True})


def _latency(fn, x: np.ndarray, batch: int, repeats: int) -> float:
    """Median seconds per sample over `repeats` calls on `batch` rows (after one warm-up)."""
    xb = np.ascontiguousarray(np.resize(x, (batch, x.shape[1])), dtype=np.float32)
    fn(xb)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(xb)
        times.append(time.perf_counter() - t)
    return statistics.median(times) / batch


def run(args) -> int:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else _quick_model(Path(tmp) / "quick")
        report = bench(model_dir, args)
    print(json.dumps(report) if args.json else json.dumps(report, indent=1))
    return 0


def _ensure(model_dir: Path, name: str, argv: list[str]) -> Path:
    path = model_dir / name
    if not path.exists():
        import argparse

        from ztfl.models.export import cli as export_cli
        parser = argparse.ArgumentParser(prog="ztfl export")
        export_cli.add_arguments(parser)
        # The exporter's progress line must not mix into the one JSON object bench prints.
        with contextlib.redirect_stdout(io.StringIO()):
            code = export_cli.run(parser.parse_args(["--model", str(model_dir), *argv, "--out", str(path)]))
        if code != 0:
            raise RuntimeError(f"export of {name} failed (exit {code})")
    return path


def _open_set_agreement(out: dict, name: str, rt, detector, model, x: np.ndarray, classes: list[str]) -> None:
    """Agreement of a runtime's unknown-attack flags and final decisions with the fp32 model's."""
    from ztfl.models.training import logits_of
    logits = logits_of(model, x).numpy()
    fp32_unknown = detector.unknown(logits, x, classes)
    fp32_final = np.where(fp32_unknown, -1, logits.argmax(1))
    pred, unknown = rt.decide(x)
    agreement = out.setdefault("open_set", {"prototypes": len(detector.prototypes), "far_target": detector.far,
                                            "unknown_rows_fp32": int(fp32_unknown.sum()),
                                            "unknown_agreement_with_fp32": {}, "decision_agreement_with_fp32": {}})
    agreement["unknown_agreement_with_fp32"][name] = float(np.mean(unknown == fp32_unknown))
    agreement["decision_agreement_with_fp32"][name] = float(np.mean(np.where(unknown, -1, pred) == fp32_final))


def bench(model_dir: Path, args) -> dict:
    from ztfl.models.export.runtime import IDSRuntime
    from ztfl.models.training import metrics_from_predictions, predict
    model, pipeline = bundle.load(model_dir)
    meta_path = model_dir / "metrics.json"
    split = json.loads(meta_path.read_text()).get("split") if meta_path.exists() else None
    if args.data:
        held = encode_file(args.data, args.format or pipeline.fmt, pipeline, max_rows=args.rows)
        calib_source = args.data
    elif split:
        held = validation_split(split, pipeline)
        calib_source = split["data"]
        if len(held) > args.rows:
            held = held.subset(np.random.default_rng(0).choice(len(held), args.rows, replace=False))
    else:
        raise SystemExit("ztfl bench model: give --data (the model directory has no training split)")
    calib = ["--calibration", str(calib_source), "--calibration-format", split["format"] if split and not args.data
             else (args.format or pipeline.fmt), "--calibration-rows", str(args.calibration_rows)]

    files = {"onnx_fp32": _ensure(model_dir, "model.fp32.onnx", ["--to", "onnx"]),
             "onnx_int8": _ensure(model_dir, "model.int8.onnx", ["--to", "onnx", "--int8"])}
    if not args.no_tflite:
        files["litert_int8"] = _ensure(model_dir, "model.int8.tflite", ["--to", "tflite", "--int8", *calib])
        files["litert_int8_b256"] = _ensure(model_dir, "model.int8.b256.tflite",
                                            ["--to", "tflite", "--int8", "--batch", "256", *calib])

    def torch_fn(xb):
        with torch.no_grad():
            return model(torch.from_numpy(xb))

    runtimes = {name: IDSRuntime.open(path, threads=args.threads) for name, path in files.items()}
    fp32_pred = predict(model, held.x)
    detector = load_detector(model_dir)
    out = {"model_dir": str(model_dir), "kind": model.kind, "parameters": num_trainable(model),
           "held_out_rows": len(held), "threads": args.threads,
           "size_bytes": {"weights_npz_fp32": (model_dir / "weights.npz").stat().st_size,
                          **{name: path.stat().st_size for name, path in files.items()}},
           "latency_us_per_sample": {}, "agreement_with_fp32": {}, "accuracy": {}, "macro_f1": {}}
    sizes = out["size_bytes"]
    out["int8_size_ratio"] = {name: round(sizes[name] / sizes["onnx_fp32"], 4)
                              for name in ("onnx_int8", "litert_int8") if name in sizes}
    m = metrics_from_predictions(fp32_pred, held)
    out["accuracy"]["torch_fp32"], out["macro_f1"]["torch_fp32"] = m["accuracy"], m["macro_f1"]
    for name, rt in runtimes.items():
        if name == "litert_int8_b256":
            continue
        pred = rt.predict(held.x)
        m = metrics_from_predictions(pred, held)
        out["accuracy"][name], out["macro_f1"][name] = m["accuracy"], m["macro_f1"]
        if "int8" in name:
            out["agreement_with_fp32"][name] = float(np.mean(pred == fp32_pred))
        if detector is not None and rt.has_novelty:
            _open_set_agreement(out, name, rt, detector, model, held.x, pipeline.classes)
    lat = out["latency_us_per_sample"]
    for batch in BATCHES:
        lat[f"torch_fp32_b{batch}"] = _latency(torch_fn, held.x, batch, args.repeats)
        lat[f"onnx_fp32_b{batch}"] = _latency(runtimes["onnx_fp32"].logits, held.x, batch, args.repeats)
        lat[f"onnx_int8_b{batch}"] = _latency(runtimes["onnx_int8"].logits, held.x, batch, args.repeats)
        key = "litert_int8" if batch == 1 else "litert_int8_b256"
        if key in runtimes:
            lat[f"litert_int8_b{batch}"] = _latency(runtimes[key].logits, held.x, batch, args.repeats)
    out["latency_us_per_sample"] = {k: round(v * 1e6, 2) for k, v in lat.items()}
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    add_arguments(p)
    sys.exit(run(p.parse_args()))
