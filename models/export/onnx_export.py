"""fp32 and int8 ONNX export.

fp32: torch.onnx's TorchScript exporter (dynamo=False: fast, no onnxscript needed) with a
dynamic batch axis. int8: onnxruntime.quantization.quantize_dynamic, which quantises the
LSTM (DynamicQuantizeLSTM), the dense layers (MatMulInteger) and the convolutions
(ConvInteger) to int8 weights with activations quantised on the fly, so no calibration
can go stale. quantize_static would leave the LSTM in float (see docs/models.md).
The preprocessing pipeline and the model description are embedded as metadata.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import onnx
import torch
from torch import nn

from ztfl.models.preprocess import Pipeline

META_PIPELINE = "ztfl.pipeline"
META_MODEL = "ztfl.model"


def export_fp32(model: nn.Module, pipeline: Pipeline, out: str | Path) -> Path:
    out = Path(out)
    model.eval()
    example = torch.zeros(1, pipeline.n_features)
    torch.onnx.export(model, (example,), str(out), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                      dynamo=False)
    _embed(out, model, pipeline)
    return out


def export_int8(model: nn.Module, pipeline: Pipeline, out: str | Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_fp32(model, pipeline, Path(tmp) / "fp32.onnx")
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=False)
    _embed(out, model, pipeline)
    return out


def _embed(path: Path, model: nn.Module, pipeline: Pipeline) -> None:
    m = onnx.load(str(path))
    meta = {p.key: p for p in m.metadata_props}
    for key, value in ((META_PIPELINE, json.dumps(pipeline.to_dict(), sort_keys=True)),
                       (META_MODEL, json.dumps({"kind": model.kind, "config": model.config.to_dict()}))):
        entry = meta.get(key) or m.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(m, str(path))


def embedded_pipeline(path: str | Path) -> Pipeline | None:
    m = onnx.load(str(path), load_external_data=False)
    for p in m.metadata_props:
        if p.key == META_PIPELINE:
            return Pipeline.from_dict(json.loads(p.value))
    return None


def quantised_op_types(path: str | Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}
