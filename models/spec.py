"""The models a federation trains, as both sides build them: one per model variant.

The gateway and the agents build the same architecture from the same spec (variant, size,
feature and class counts from the shared preprocessing pipeline), so a model travels as its flat
float vector (models.params order) cut into named tensors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ztfl.models.cnn_lstm import CNNLSTM, CNNLSTMConfig
from ztfl.models.micro import MicroConfig, MicroMLP
from ztfl.models.params import get_flat, set_flat

SIZES = ("small", "default")


@dataclass(frozen=True)
class ModelSpec:
    variant: str
    n_features: int
    n_classes: int
    size: str = "small"

    def build(self, seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)
        if self.variant == "cnn-lstm":
            cfg = (CNNLSTMConfig.small(self.n_features, self.n_classes) if self.size == "small"
                   else CNNLSTMConfig(self.n_features, self.n_classes))
            return CNNLSTM(cfg)
        if self.variant == "micro":
            return MicroMLP(MicroConfig.fitting(self.n_features, self.n_classes))
        raise ValueError(f"unknown model variant {self.variant!r}")


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


__all__ = ["ModelSpec", "layout", "flat_to_tensors", "tensors_to_flat", "get_flat", "set_flat"]
