"""Model parameters as one flat float32 vector, the form secure aggregation masks and sums.

The order is the model's `state_dict()` order restricted to floating-point tensors (weights,
biases and BatchNorm running statistics, which federated averaging must also average);
integer buffers such as BatchNorm's batch counter are left out.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ParameterShapeError(ValueError):
    """A flat vector does not match the model it is loaded into."""


def _float_entries(model: nn.Module):
    return [(k, v) for k, v in model.state_dict().items() if v.is_floating_point()]


def num_flat(model: nn.Module) -> int:
    return sum(v.numel() for _, v in _float_entries(model))


def num_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def get_flat(model: nn.Module) -> np.ndarray:
    parts = [v.detach().reshape(-1).to(torch.float32).cpu().numpy() for _, v in _float_entries(model)]
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)


def set_flat(model: nn.Module, flat: np.ndarray) -> None:
    flat = np.asarray(flat)
    if flat.dtype != np.float32 or flat.ndim != 1:
        raise ParameterShapeError(f"expected a 1-D float32 vector, got {flat.dtype} with shape {flat.shape}")
    entries = _float_entries(model)
    total = sum(v.numel() for _, v in entries)
    if flat.size != total:
        raise ParameterShapeError(f"vector has {flat.size} values, the model has {total}")
    if not np.all(np.isfinite(flat)):
        raise ParameterShapeError("vector holds NaN or infinite values")
    state, offset = {}, 0
    for k, v in entries:
        state[k] = torch.from_numpy(flat[offset:offset + v.numel()].copy()).reshape(v.shape).to(v.dtype)
        offset += v.numel()
    model.load_state_dict(state, strict=False)
