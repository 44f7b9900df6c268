"""`ztfl export`: a trained model directory to int8 ONNX, int8 TFLite, or (micro model) the
plain integer dump the ESP32 firmware loads. The preprocessing pipeline goes beside every
exported file as `<file>.pipeline.json` (and inside ONNX files as metadata).

A model directory with an open-set detector (models.openset, `openset.json`) exports with it: the
ONNX and TFLite graphs get a second output "novelty" and its threshold goes beside the file as
`<file>.openset.json` (and into ONNX metadata); the micro export writes the integer form the
ESP32 runs as `<file>.openset.json` (models.openset.NoveltyDetector.int8_form)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ztfl.models import bundle
from ztfl.models.datasets import FORMATS, DataFormatError
from ztfl.models.openset import load_detector
from ztfl.models.prepare import encode_file

TARGETS = ("onnx", "tflite", "micro")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (from ztfl train)")
    p.add_argument("--to", required=True, choices=TARGETS)
    p.add_argument("--int8", action="store_true", help="quantise to int8 (required for tflite and micro)")
    p.add_argument("--calibration", help="data file whose rows calibrate the int8 ranges")
    p.add_argument("--calibration-format", choices=FORMATS, help="default: the model's training format")
    p.add_argument("--calibration-rows", type=int, default=256)
    p.add_argument("--batch", type=int, default=1, help="tflite: fixed batch size of the exported model")
    p.add_argument("--out", help="output file (default: inside the model directory)")
    p.add_argument("--json", action="store_true")


def default_name(to: str, int8: bool, batch: int = 1) -> str:
    if to == "micro":
        return "micro.int8.json"
    suffix = "" if batch == 1 else f".b{batch}"
    return f"model.{'int8' if int8 else 'fp32'}{suffix}.{'onnx' if to == 'onnx' else 'tflite'}"


def run(args) -> int:
    model, pipeline = bundle.load(args.model)
    out = Path(args.out) if args.out else Path(args.model) / default_name(args.to, args.int8, args.batch)
    if args.to in ("tflite", "micro") and not args.int8:
        print(f"ztfl export: --to {args.to} is int8 only: add --int8", file=sys.stderr)
        return 2
    calibration = None
    if args.to in ("tflite", "micro"):
        if not args.calibration:
            print(f"ztfl export: --to {args.to} needs --calibration DATA", file=sys.stderr)
            return 2
        try:
            calibration = encode_file(args.calibration, args.calibration_format or pipeline.fmt, pipeline,
                                      max_rows=args.calibration_rows).x
        except (DataFormatError, FileNotFoundError) as e:
            print(f"ztfl export: {e}", file=sys.stderr)
            return 2
    detector = load_detector(args.model)
    report = {"model": str(args.model), "to": args.to, "int8": args.int8, "out": str(out),
              "open_set": detector is not None}
    if args.to == "onnx":
        from ztfl.models.export import onnx_export
        (onnx_export.export_int8 if args.int8 else onnx_export.export_fp32)(model, pipeline, out, detector)
    elif args.to == "tflite":
        from ztfl.models.export.tflite_export import ExportError, export_int8
        try:
            export_int8(args.model, calibration, out, batch=args.batch)
        except ExportError as e:
            print(f"ztfl export: {e}", file=sys.stderr)
            return 1
    else:
        from ztfl.models.micro import MicroMLP, quantise
        if not isinstance(model, MicroMLP):
            print("ztfl export: --to micro needs a micro model (ztfl train --model micro)", file=sys.stderr)
            return 2
        q = quantise(model, calibration, pipeline.classes)
        out.write_text(q.to_json())
        out.with_suffix(".bin").write_bytes(q.to_bytes())
        report["bytes"] = str(out.with_suffix(".bin"))
    Path(str(out) + ".pipeline.json").write_text(json.dumps(pipeline.to_dict(), sort_keys=True))
    if detector is not None:
        side = detector.int8_form() if args.to == "micro" else detector.decision()
        Path(str(out) + ".openset.json").write_text(json.dumps(side, sort_keys=True))
    report["size_bytes"] = out.stat().st_size
    print(json.dumps(report) if args.json else f"wrote {out} ({report['size_bytes']} bytes)")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    add_arguments(p)
    sys.exit(run(p.parse_args()))
