"""int8 .tflite conversion, run inside the litert-torch virtual environment (.venv-litert).

litert-torch pins packages that conflict with the runtime stack, so the exporter runs this
file as a subprocess:  .venv-litert/bin/python -m ztfl.models.export.litert_worker MODEL_DIR CALIB.npy OUT.tflite
It imports only torch, numpy and the model classes (no pandas, no pipeline), rebuilds the
fp32 model from model.json + weights.npz (the CNN-LSTM as its unrolled twin, see
models.export.unrolled, so the LSTM weights are quantised too), quantises it with litert-torch's PT2E static int8
quantiser calibrated on the encoded rows in CALIB.npy, and writes the .tflite file.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch


def build_model(model_dir: Path) -> torch.nn.Module:
    from ztfl.models.cnn_lstm import CNNLSTM, CNNLSTMConfig
    from ztfl.models.micro import MicroConfig, MicroMLP
    meta = json.loads((model_dir / "model.json").read_text())
    kinds = {"cnn-lstm": (CNNLSTM, CNNLSTMConfig), "micro": (MicroMLP, MicroConfig)}
    cls, cfg_cls = kinds[meta["kind"]]
    model = cls(cfg_cls.from_dict(meta["config"]))
    with np.load(model_dir / "weights.npz", allow_pickle=False) as z:
        model.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files})
    return model.eval()


def openset_prototypes(model_dir: Path) -> torch.Tensor | None:
    """The open-set detector's prototypes (models.openset, as 8-bit integers), if the model has one."""
    from ztfl.models.export.novelty_graph import OPENSET_FILE
    path = model_dir / OPENSET_FILE
    if not path.is_file():
        return None
    return torch.tensor(json.loads(path.read_text())["prototypes"], dtype=torch.uint8)


def meta_kind(model_dir: Path) -> str:
    return json.loads((model_dir / "model.json").read_text())["kind"]


def convert(model_dir: Path, calibration: np.ndarray, out: Path, batch: int = 1) -> None:
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    torch.set_num_threads(2)
    model = build_model(model_dir)
    cnn_lstm = meta_kind(model_dir) == "cnn-lstm"
    if cnn_lstm:
        from ztfl.models.export.unrolled import UnrolledCNNLSTM
        model = UnrolledCNNLSTM(model)
    prototypes = openset_prototypes(model_dir)
    if prototypes is not None:
        from ztfl.models.export.novelty_graph import WithNovelty
        model = WithNovelty(model, prototypes).eval()
    # The exported graph has a fixed batch: repeat the rows to fill at least one batch.
    if len(calibration) < batch:
        calibration = np.resize(calibration, (batch, calibration.shape[1]))
    example = (torch.from_numpy(calibration[:batch].astype(np.float32)),)
    exported = torch.export.export(model, example).module()
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    if cnn_lstm:
        # One scale per LSTM weight matrix, as TFLite's own quantised LSTM kernel keeps them:
        # per-channel scales would store 3 x 1,024 scales and int64 zero points (about 37 KB,
        # 6 % of the file) for the input and recurrent projections and their bias.
        from ztfl.models.export.unrolled import UnrolledLSTM
        # torch.export records module types by qualified name, which is what the filter compares.
        lstm_type = f"{UnrolledLSTM.__module__}.{UnrolledLSTM.__qualname__}"
        quantizer.set_module_type(lstm_type, get_symmetric_quantization_config(is_per_channel=False))
    if prototypes is not None:
        # The distance stays float (see models.export.novelty_graph); its weight becomes int8 below.
        from ztfl.models.export.novelty_graph import PrototypeDistance
        quantizer.set_module_type(f"{PrototypeDistance.__module__}.{PrototypeDistance.__qualname__}", None)
    prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for lo in range(0, len(calibration) - batch + 1, batch):
            prepared(torch.from_numpy(calibration[lo:lo + batch].astype(np.float32)))
    quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    edge = litert_torch.convert(quantized, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    edge.export(str(out))
    strip_tensor_names(out)
    if prototypes is not None:
        store_prototypes_int8(out, prototypes.numpy())


def strip_tensor_names(path: Path) -> None:
    """Shorten the tensor names torch.export leaves in the flatbuffer (about 40 KB of traced
    module paths for the default CNN-LSTM). Input and output tensors keep their names; the
    signature that callers use refers to tensors by index and is untouched."""
    from ai_edge_litert import schema_py_generated as schema
    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    for subgraph in model.subgraphs:
        keep = set(subgraph.inputs.tolist() if hasattr(subgraph.inputs, "tolist") else subgraph.inputs or [])
        keep |= set(subgraph.outputs.tolist() if hasattr(subgraph.outputs, "tolist") else subgraph.outputs or [])
        for i, tensor in enumerate(subgraph.tensors):
            if i not in keep:
                tensor.name = f"t{i}".encode()
    _write(path, model)


def store_prototypes_int8(path: Path, prototypes_q: np.ndarray) -> None:
    """Store the open-set prototypes (a float32 constant after conversion) as int8 on their exact
    grid, widened back to float by a DEQUANTIZE operator run before anything reads them: the
    TFLite form of int8 weights with float arithmetic."""
    from ai_edge_litert import schema_py_generated as schema
    from ztfl.models.export.novelty_graph import prototype_weight
    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    dequantize = next(i for i, code in enumerate(model.operatorCodes)
                      if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.DEQUANTIZE)
    found = 0
    for subgraph in model.subgraphs:
        for index, tensor in enumerate(list(subgraph.tensors)):
            data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
            if tensor.type != schema.TensorType.FLOAT32 or data is None or len(data) == 0:
                continue
            found_weight = prototype_weight(np.frombuffer(bytes(data), np.float32).reshape(tensor.shape), prototypes_q)
            if found_weight is None:
                continue
            stored_values, scale, zero_point = found_weight
            buffer = schema.BufferT()
            buffer.data = stored_values.view(np.uint8).reshape(-1)
            model.buffers.append(buffer)
            model.buffers[tensor.buffer].data = None
            stored = schema.TensorT()
            stored.shape, stored.type, stored.buffer, stored.name = list(tensor.shape), schema.TensorType.INT8, \
                len(model.buffers) - 1, b"prototypes_int8"
            stored.quantization = schema.QuantizationParametersT()
            stored.quantization.scale, stored.quantization.zeroPoint = [scale], [zero_point]
            subgraph.tensors.append(stored)
            widen = schema.OperatorT()
            widen.opcodeIndex, widen.inputs, widen.outputs = dequantize, [len(subgraph.tensors) - 1], [index]
            subgraph.operators.insert(0, widen)
            found += 1
    if found != 1:
        raise RuntimeError(f"expected one prototype constant in {path}, found {found}")
    _write(path, model)


def _write(path: Path, model) -> None:
    import flatbuffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--strip":
        strip_tensor_names(Path(argv[1]))
        return 0
    if len(argv) not in (3, 4):
        print("usage: litert_worker MODEL_DIR CALIB.npy OUT.tflite [BATCH] | --strip FILE.tflite", file=sys.stderr)
        return 2
    calibration = np.load(argv[1], allow_pickle=False)
    convert(Path(argv[0]), calibration, Path(argv[2]), int(argv[3]) if len(argv) == 4 else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
