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
    prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for lo in range(0, len(calibration) - batch + 1, batch):
            prepared(torch.from_numpy(calibration[lo:lo + batch].astype(np.float32)))
    quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    edge = litert_torch.convert(quantized, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    edge.export(str(out))
    strip_tensor_names(out)


def strip_tensor_names(path: Path) -> None:
    """Shorten the tensor names torch.export leaves in the flatbuffer (about 40 KB of traced
    module paths for the default CNN-LSTM). Input and output tensors keep their names; the
    signature that callers use refers to tensors by index and is untouched."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    for subgraph in model.subgraphs:
        keep = set(subgraph.inputs.tolist() if hasattr(subgraph.inputs, "tolist") else subgraph.inputs or [])
        keep |= set(subgraph.outputs.tolist() if hasattr(subgraph.outputs, "tolist") else subgraph.outputs or [])
        for i, tensor in enumerate(subgraph.tensors):
            if i not in keep:
                tensor.name = f"t{i}".encode()
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
