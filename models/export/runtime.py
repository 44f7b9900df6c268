"""Inference for agents: one wrapper over an exported model, whatever the runtime.

`IDSRuntime.open(path)` loads a .onnx file with onnxruntime or a .tflite file with LiteRT
(`ai_edge_litert`, falling back to `tflite_runtime` where only that exists), together with the
preprocessing pipeline embedded in the ONNX file or saved beside the model as
`<model>.pipeline.json`. `for_profile(profile, model_dir)` picks the file a hardware
profile's runtime asks for. Inputs are encoded rows (float32 in [0, 1]); int8-input models get
them quantised here with the model's own input scale and zero point.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ztfl.models.preprocess import Pipeline

RUNTIME_FILES = {"onnxruntime": "model.int8.onnx", "tflite": "model.int8.tflite"}


class RuntimeLoadError(RuntimeError):
    """No usable runtime or model file."""


def pipeline_path(model_path: str | Path) -> Path:
    return Path(str(model_path) + ".pipeline.json")


def _tflite_interpreter(path: str, threads: int):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as e:
            raise RuntimeLoadError("neither ai-edge-litert nor tflite-runtime is installed") from e
    return Interpreter(model_path=path, num_threads=threads)


class IDSRuntime:
    def __init__(self, path: Path, backend: str, pipeline: Pipeline, session):
        self.path, self.backend, self.pipeline, self._s = path, backend, pipeline, session
        if backend == "tflite":
            session.allocate_tensors()
            self._in = session.get_input_details()[0]
            self._out = session.get_output_details()[0]
            self.batch = int(self._in["shape"][0])

    @classmethod
    def open(cls, path: str | Path, threads: int = 1) -> "IDSRuntime":
        path = Path(path)
        if not path.is_file():
            raise RuntimeLoadError(f"model file not found: {path}")
        pipeline = None
        if pipeline_path(path).is_file():
            pipeline = Pipeline.from_dict(json.loads(pipeline_path(path).read_text()))
        if path.suffix == ".onnx":
            import onnxruntime as ort
            from ztfl.models.export.onnx_export import embedded_pipeline
            pipeline = pipeline or embedded_pipeline(path)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            backend = "onnxruntime"
        elif path.suffix == ".tflite":
            session = _tflite_interpreter(str(path), threads)
            backend = "tflite"
        else:
            raise RuntimeLoadError(f"{path}: expected a .onnx or .tflite file")
        if pipeline is None:
            raise RuntimeLoadError(f"{path}: no preprocessing pipeline embedded or beside it")
        return cls(path, backend, pipeline, session)

    @classmethod
    def for_profile(cls, profile, model_dir: str | Path, threads: int = 1) -> "IDSRuntime":
        """The exported model a hardware profile's runtime runs (`profile.runtime`)."""
        runtime = getattr(profile, "runtime", profile)
        if runtime not in RUNTIME_FILES:
            raise RuntimeLoadError(f"runtime {runtime!r} has no exported model here "
                                   "(micropython boards load the micro model's int8 dump)")
        return cls.open(Path(model_dir) / RUNTIME_FILES[runtime], threads)

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.backend == "onnxruntime":
            return self._s.run(None, {"x": x})[0]
        return np.concatenate([self._tflite_batch(x[lo:lo + self.batch])
                               for lo in range(0, len(x), self.batch)]) if len(x) else np.zeros((0, 0))

    def _tflite_batch(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if n < self.batch:  # the model has a fixed batch: pad the last chunk
            x = np.concatenate([x, np.zeros((self.batch - n, x.shape[1]), np.float32)])
        d = self._in
        if d["dtype"] != np.float32:
            scale, zero = d["quantization"]
            info = np.iinfo(d["dtype"])
            x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(d["dtype"])
        self._s.set_tensor(d["index"], x)
        self._s.invoke()
        y = self._s.get_tensor(self._out["index"])
        if self._out["dtype"] != np.float32:
            scale, zero = self._out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y[:n]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(x), axis=1)

    def classify(self, features) -> list[str]:
        """Raw records (a DataFrame or LabeledTable) -> class names."""
        return [self.pipeline.classes[i] for i in self.predict(self.pipeline.transform(features))]
