"""Inference for agents: one wrapper over an exported model, whatever the runtime.

`IDSRuntime.open(path)` loads a .onnx file with onnxruntime or a .tflite file with LiteRT
(`ai_edge_litert`, falling back to `tflite_runtime` where only that exists), together with the
preprocessing pipeline embedded in the ONNX file or saved beside the model as
`<model>.pipeline.json`. `for_profile(profile, model_dir)` picks the file a hardware
profile's runtime asks for. Inputs are encoded rows (float32 in [0, 1]); int8-input models get
them quantised here with the model's own input scale and zero point.

A model exported with its open-set detector (models.openset) has a second output, "novelty";
its threshold comes from `<model>.openset.json` beside the file or the ONNX metadata, and
`decide` / `classify_open_set` add the "unknown attack" decision. `logits`, `predict` and
`classify` are the class head alone, as before.
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


def open_set_path(model_path: str | Path) -> Path:
    return Path(str(model_path) + ".openset.json")


class IDSRuntime:
    def __init__(self, path: Path, backend: str, pipeline: Pipeline, session, open_set: dict | None = None):
        self.path, self.backend, self.pipeline, self._s = path, backend, pipeline, session
        self.open_set = open_set   # models.openset.NoveltyDetector.decision(), or None
        if backend == "tflite":
            session.allocate_tensors()
            self._in = session.get_input_details()[0]
            outputs = session.get_output_details()
            # logits are (batch, classes), the novelty score (batch,): told apart by rank
            self._out = next(o for o in outputs if len(o["shape"]) == 2)
            self._novelty_out = next((o for o in outputs if len(o["shape"]) == 1), None)
            self.batch = int(self._in["shape"][0])
            self.has_novelty = self._novelty_out is not None
        else:
            self.has_novelty = "novelty" in [o.name for o in session.get_outputs()]

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
        open_set = json.loads(open_set_path(path).read_text()) if open_set_path(path).is_file() else None
        if open_set is None and backend == "onnxruntime":
            from ztfl.models.export.onnx_export import embedded_open_set
            open_set = embedded_open_set(path)
        return cls(path, backend, pipeline, session, open_set)

    @classmethod
    def for_profile(cls, profile, model_dir: str | Path, threads: int = 1) -> "IDSRuntime":
        """The exported model a hardware profile's runtime runs (`profile.runtime`)."""
        runtime = getattr(profile, "runtime", profile)
        if runtime not in RUNTIME_FILES:
            raise RuntimeLoadError(f"runtime {runtime!r} has no exported model here "
                                   "(micropython boards load the micro model's int8 dump)")
        return cls.open(Path(model_dir) / RUNTIME_FILES[runtime], threads)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.scores(x)[0]

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits, novelty score or None when the model has no open-set output)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.backend == "onnxruntime":
            names = ["logits", "novelty"] if self.has_novelty else ["logits"]
            out = self._s.run(names, {"x": x})
            return out[0], (out[1] if self.has_novelty else None)
        if not len(x):
            return np.zeros((0, 0)), (np.zeros(0) if self.has_novelty else None)
        parts = [self._tflite_batch(x[lo:lo + self.batch]) for lo in range(0, len(x), self.batch)]
        logits = np.concatenate([p[0] for p in parts])
        return logits, (np.concatenate([p[1] for p in parts]) if self.has_novelty else None)

    def _tflite_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
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
        logits = self._output(self._out)[:n]
        return logits, (self._output(self._novelty_out)[:n] if self.has_novelty else None)

    def _output(self, detail: dict) -> np.ndarray:
        y = self._s.get_tensor(detail["index"])
        if detail["dtype"] != np.float32:
            scale, zero = detail["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y

    def decide(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(head class index, "unknown attack" flag) per row: unknown where the head says normal
        and the novelty score exceeds the calibrated threshold."""
        if not self.has_novelty or not self.open_set or self.open_set.get("threshold") is None:
            raise RuntimeLoadError(f"{self.path}: no open-set detector (export a model trained with one)")
        from ztfl.models.openset import unknown_mask
        logits, novelty = self.scores(x)
        return logits.argmax(1), unknown_mask(logits, novelty, float(self.open_set["threshold"]),
                                              self.pipeline.classes)

    def classify_open_set(self, features) -> list[str]:
        """Raw records -> class names, with models.openset.UNKNOWN for unknown attacks."""
        from ztfl.models.openset import UNKNOWN
        pred, unknown = self.decide(self.pipeline.transform(features))
        return [UNKNOWN if u else self.pipeline.classes[i] for i, u in zip(pred, unknown)]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(x), axis=1)

    def classify(self, features) -> list[str]:
        """Raw records (a DataFrame or LabeledTable) -> class names."""
        return [self.pipeline.classes[i] for i in self.predict(self.pipeline.transform(features))]
