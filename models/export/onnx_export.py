"""fp32 and int8 ONNX export.

fp32: torch.onnx's TorchScript exporter (dynamo=False: fast, no onnxscript needed) with a
dynamic batch axis. int8: onnxruntime.quantization.quantize_dynamic, which quantises the
LSTM (DynamicQuantizeLSTM), the dense layers (MatMulInteger) and the convolutions
(ConvInteger) to int8 weights with activations quantised on the fly, so no calibration
can go stale. quantize_static would leave the LSTM in float (see docs/models.md).
The preprocessing pipeline and the model description are embedded as metadata.

With an open-set detector (models.openset) the graph has a second output, "novelty"
(models.export.novelty_graph), and its threshold is embedded as metadata `ztfl.openset`. The
int8 file keeps the distance in float and stores the prototypes as int8, widened in the graph:
exact, because they sit on an 8-bit grid.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from ztfl.models.export.novelty_graph import WithNovelty, prototype_weight
from ztfl.models.openset import NoveltyDetector
from ztfl.models.preprocess import Pipeline

META_PIPELINE = "ztfl.pipeline"
META_MODEL = "ztfl.model"
META_OPENSET = "ztfl.openset"
NOVELTY_SCOPE = "/novelty/"   # node names of the novelty part of the graph


def export_fp32(model: nn.Module, pipeline: Pipeline, out: str | Path,
                detector: NoveltyDetector | None = None) -> Path:
    out = Path(out)
    model.eval()
    example = torch.zeros(1, pipeline.n_features)
    graph = model if detector is None else WithNovelty(model, detector.prototypes).eval()
    outputs = ["logits"] if detector is None else ["logits", "novelty"]
    torch.onnx.export(graph, (example,), str(out), input_names=["x"], output_names=outputs,
                      dynamic_axes={name: {0: "batch"} for name in ("x", *outputs)}, opset_version=17,
                      dynamo=False)
    _embed(out, model, pipeline, detector)
    return out


def export_int8(model: nn.Module, pipeline: Pipeline, out: str | Path,
                detector: NoveltyDetector | None = None) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_fp32(model, pipeline, Path(tmp) / "fp32.onnx", detector)
        novelty_nodes = [n.name for n in onnx.load(str(fp32)).graph.node if n.name.startswith(NOVELTY_SCOPE)]
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=False,
                         nodes_to_exclude=novelty_nodes)
    if detector is not None:
        _store_prototypes_int8(out, detector.prototypes)
    _embed(out, model, pipeline, detector)
    return out


def _store_prototypes_int8(path: Path, prototypes_q) -> None:
    """The prototype constant as int8, widened by Cast, Sub and Mul (exact: see
    models.export.novelty_graph). Not a DequantizeLinear: onnxruntime would fuse that with the
    MatMul into a dynamically quantised product and blur the distance."""
    m = onnx.load(str(path))
    for init in list(m.graph.initializer):
        found = prototype_weight(numpy_helper.to_array(init), prototypes_q) if init.data_type == onnx.TensorProto.FLOAT \
            else None
        if found is None:
            continue
        values, scale, zero_point = found
        name = init.name
        m.graph.initializer.remove(init)
        m.graph.initializer.extend([numpy_helper.from_array(values, f"{name}.int8"),
                                    numpy_helper.from_array(np.float32(zero_point), f"{name}.zero_point"),
                                    numpy_helper.from_array(np.float32(scale), f"{name}.scale")])
        widen = [helper.make_node("Cast", [f"{name}.int8"], [f"{name}.wide"], to=onnx.TensorProto.FLOAT),
                 helper.make_node("Sub", [f"{name}.wide", f"{name}.zero_point"], [f"{name}.centred"]),
                 helper.make_node("Mul", [f"{name}.centred", f"{name}.scale"], [name])]
        for node in reversed(widen):
            m.graph.node.insert(0, node)
        onnx.save(m, str(path))
        return
    raise ValueError(f"{path}: the open-set prototypes were not found in the graph")


def _embed(path: Path, model: nn.Module, pipeline: Pipeline, detector: NoveltyDetector | None = None) -> None:
    m = onnx.load(str(path))
    meta = {p.key: p for p in m.metadata_props}
    entries = [(META_PIPELINE, json.dumps(pipeline.to_dict(), sort_keys=True)),
               (META_MODEL, json.dumps({"kind": model.kind, "config": model.config.to_dict()}))]
    if detector is not None:
        entries.append((META_OPENSET, json.dumps(detector.decision())))
    for key, value in entries:
        entry = meta.get(key) or m.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(m, str(path))


def embedded_open_set(path: str | Path) -> dict | None:
    """The open-set decision parameters embedded in an ONNX file (models.openset.decision), if any."""
    m = onnx.load(str(path), load_external_data=False)
    return next((json.loads(p.value) for p in m.metadata_props if p.key == META_OPENSET), None)


def embedded_pipeline(path: str | Path) -> Pipeline | None:
    m = onnx.load(str(path), load_external_data=False)
    for p in m.metadata_props:
        if p.key == META_PIPELINE:
            return Pipeline.from_dict(json.loads(p.value))
    return None


def quantised_op_types(path: str | Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}
