"""The models a federation trains, as both sides build them: one per model variant.

The gateway and the agents build the same architecture from the same spec (variant, size,
feature and class counts from the shared preprocessing pipeline), so a model travels as its flat
float vector (models.params order) cut into named tensors.

`build_model` is the one model factory: the spec, a saved bundle (models.bundle) and the
experiments all build through it, from the configuration `model_config` chooses.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ztfl.models.cnn_lstm import CNNLSTM, CNNLSTMConfig
from ztfl.models.micro import MicroConfig, MicroMLP
from ztfl.models.params import get_flat, set_flat

SIZES = ("small", "default")
# Model kind -> (module, configuration); a kind is also the model's `kind` attribute.
MODELS = {"cnn-lstm": (CNNLSTM, CNNLSTMConfig), "micro": (MicroMLP, MicroConfig)}


class ModelKindError(ValueError):
    """A model kind the project does not build."""


def model_config(kind: str, n_features: int, n_classes: int, size: str = "small", readout: str | None = None,
                 hidden: tuple[int, ...] | None = None):
    """A fresh model's configuration. cnn-lstm: `size` "small" (a few thousand parameters) or
    "default" (about 0.5 M), `readout` overrides its readout ("max" or "last"); micro: `hidden`
    layer sizes, else the widest standard shape within the parameter cap."""
    if kind == "cnn-lstm":
        cfg = (CNNLSTMConfig.small if size == "small" else CNNLSTMConfig)(n_features, n_classes)
        return replace(cfg, readout=readout) if readout else cfg
    if kind == "micro":
        return MicroConfig(n_features, n_classes, tuple(hidden)) if hidden is not None \
            else MicroConfig.fitting(n_features, n_classes)
    raise ModelKindError(f"unknown model kind {kind!r}; known: {', '.join(MODELS)}")


def build_model(kind: str, config, seed: int | None = None) -> torch.nn.Module:
    """The model of `kind` from its configuration (the dataclass, or its dict as a bundle's
    model.json stores it); `seed`, when given, fixes the initial weights."""
    if kind not in MODELS:
        raise ModelKindError(f"unknown model kind {kind!r}; known: {', '.join(MODELS)}")
    cls, cfg_cls = MODELS[kind]
    if seed is not None:
        torch.manual_seed(seed)
    return cls(cfg_cls.from_dict(config) if isinstance(config, dict) else config)


@dataclass(frozen=True)
class ModelSpec:
    variant: str
    n_features: int
    n_classes: int
    size: str = "small"
    hidden: tuple[int, ...] | None = None     # micro only: hidden layer sizes (None: model_config's choice)

    def build(self, seed: int = 0) -> torch.nn.Module:
        return build_model(self.variant, model_config(self.variant, self.n_features, self.n_classes, self.size,
                                                      hidden=self.hidden), seed)


def layout(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the float entries of the state dict, in flat-vector order."""
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items() if v.is_floating_point()]


def flat_to_tensors(flat: np.ndarray, shape_table: list[tuple[str, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    out, pos = {}, 0
    for name, shape in shape_table:
        n = int(np.prod(shape)) if shape else 1
        out[name] = flat[pos:pos + n].reshape(shape)
        pos += n
    if pos != flat.size:
        raise ValueError(f"flat vector has {flat.size} values, layout needs {pos}")
    return out


def tensors_to_flat(tensors: dict[str, np.ndarray], shape_table) -> np.ndarray:
    missing = [n for n, _ in shape_table if n not in tensors]
    if missing or len(tensors) != len(shape_table):
        raise ValueError(f"tensors do not match the model layout (missing {missing[:3]})")
    parts = []
    for name, shape in shape_table:
        arr = np.asarray(tensors[name], dtype=np.float32)
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"tensor {name} has shape {arr.shape}, layout says {shape}")
        parts.append(arr.reshape(-1))
    return np.concatenate(parts).astype(np.float32)


__all__ = ["ModelSpec", "build_model", "model_config", "layout", "flat_to_tensors", "tensors_to_flat", "get_flat", "set_flat"]
