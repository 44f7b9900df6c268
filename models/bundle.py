"""A trained model on disk: a directory holding
  model.json     kind ("cnn-lstm" or "micro") and its configuration,
  weights.npz    float tensors by state_dict name (numpy, loaded without pickle),
  pipeline.json  the fitted preprocessing pipeline (models.preprocess),
  metrics.json   optional, what training measured.
No pickle anywhere: every file is plain JSON or a numpy archive read with allow_pickle=False.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ztfl.models.preprocess import Pipeline
from ztfl.models.spec import MODELS, build_model, model_config

KINDS = MODELS


class BundleError(ValueError):
    """A model directory is incomplete or inconsistent."""


def _known(kind: str) -> str:
    if kind not in KINDS:
        raise BundleError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    return kind


def build(kind: str, config_dict: dict) -> nn.Module:
    return build_model(_known(kind), config_dict)


def save(directory: str | Path, model: nn.Module, pipeline: Pipeline, metrics: dict | None = None) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.json").write_text(json.dumps({"kind": model.kind, "config": model.config.to_dict()}, indent=1))
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    np.savez(d / "weights.npz", **state)
    pipeline.save(d / "pipeline.json")
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    return d


def load(directory: str | Path) -> tuple[nn.Module, Pipeline]:
    d = Path(directory)
    for name in ("model.json", "weights.npz", "pipeline.json"):
        if not (d / name).is_file():
            raise BundleError(f"{d} is not a model directory: {name} is missing")
    meta = json.loads((d / "model.json").read_text())
    model = build(meta.get("kind"), meta.get("config", {}))
    expected = model.state_dict()
    with np.load(d / "weights.npz", allow_pickle=False) as z:
        if set(z.files) != set(expected):
            raise BundleError(f"{d}/weights.npz does not match a {meta['kind']} of that configuration")
        state = {}
        for k, ref in expected.items():
            arr = z[k]
            if tuple(arr.shape) != tuple(ref.shape):
                raise BundleError(f"{k}: shape {arr.shape} where the model has {tuple(ref.shape)}")
            state[k] = torch.from_numpy(arr).to(ref.dtype)
    model.load_state_dict(state)
    model.eval()
    pipeline = Pipeline.load(d / "pipeline.json")
    if pipeline.n_features != model.config.n_features or pipeline.n_classes != model.config.n_classes:
        raise BundleError(f"{d}: pipeline gives {pipeline.n_features} features / {pipeline.n_classes} classes, "
                          f"the model expects {model.config.n_features} / {model.config.n_classes}")
    return model, pipeline


def new_model(kind: str, pipeline: Pipeline, size: str = "default", readout: str | None = None) -> nn.Module:
    """A fresh model shaped for `pipeline`. size: "default" (about 0.5 M parameters) or "small";
    `readout` overrides the CNN-LSTM's ("max" or "last", see models.cnn_lstm)."""
    config = model_config(_known(kind), pipeline.n_features, pipeline.n_classes, size, readout=readout)
    return build_model(kind, config)
