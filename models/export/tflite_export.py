"""int8 .tflite export through litert-torch's PT2E static quantiser.

litert-torch lives in its own virtual environment (`make export-venv` builds .venv-litert)
because it pins packages the runtime stack conflicts with; this module runs
models.export.litert_worker there as a subprocess. Calibration rows are encoded here, with
the model's own pipeline, and handed over as a .npy file. The result has int8 input and
output tensors: callers quantise inputs with the input tensor's scale and zero point
(models.export.runtime does).
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO / ".venv-litert"


class ExportError(RuntimeError):
    """The int8 conversion could not run or failed."""


def litert_python() -> Path:
    venv = Path(os.environ.get("ZTFL_LITERT_VENV", DEFAULT_VENV))
    py = venv / "bin" / "python"
    if not py.exists():
        raise ExportError(f"{py} not found: build the litert-torch environment with `make export-venv`")
    return py


def export_int8(model_dir: str | Path, calibration: np.ndarray, out: str | Path, batch: int = 1,
                timeout: float = 900) -> Path:
    out = Path(out).resolve()
    calibration = np.ascontiguousarray(calibration, dtype=np.float32)
    if len(calibration) == 0:
        raise ExportError("no calibration rows")
    with tempfile.TemporaryDirectory() as tmp:
        calib = Path(tmp) / "calibration.npy"
        np.save(calib, calibration)
        env = dict(os.environ, OMP_NUM_THREADS="2", TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run([str(litert_python()), "-m", "ztfl.models.export.litert_worker", str(Path(model_dir).resolve()),
                               str(calib), str(out), str(batch)], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=timeout)
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ExportError(f"litert-torch conversion failed (exit {proc.returncode}):\n{tail}")
    return out
