"""The micro model: a small MLP for microcontrollers (ESP32), at most 8k parameters,
with an integer-only int8 form that pure MicroPython reproduces bit for bit.

The int8 scheme (also in docs/models.md):
  input     q_x = clamp(floor(x * 127 + 0.5), 0, 127)          x is the encoded row in [0, 1]
  weights   per layer, symmetric: s_w = max|W| / 127, q_w = clamp(round(W / s_w), -127, 127)
  bias      int32: q_b = round(b / (s_in * s_w))
  layer     acc = q_b[j] + sum_i q_w[j][i] * q_in[i]               (exact integers)
  hidden    q_out = min(127, (max(acc, 0) * m + 2**(shift-1)) >> shift)   ReLU then requantise;
            m = round(s_in * s_w / s_out * 2**shift), s_out = calibrated max activation / 127
  last      the class is argmax(acc) (lowest index on ties); logits = acc * s_in * s_w
All scales stay on the host: the device needs only integers (q_w, q_b, m, shift).
"""
from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

MAX_PARAMS = 8192
SHIFT = 24
MAGIC = b"ZTMI"
FORMAT_VERSION = 1


class MicroModelError(ValueError):
    """A micro model is too big, or a dumped micro model is malformed."""


@dataclass
class MicroConfig:
    n_features: int
    n_classes: int
    hidden: tuple[int, ...] = (32, 16)

    def to_dict(self) -> dict:
        return {"n_features": self.n_features, "n_classes": self.n_classes, "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, d: dict) -> "MicroConfig":
        return cls(int(d["n_features"]), int(d["n_classes"]), tuple(int(h) for h in d["hidden"]))

    def n_params(self) -> int:
        sizes = [self.n_features, *self.hidden, self.n_classes]
        return sum(a * b + b for a, b in zip(sizes, sizes[1:]))

    @classmethod
    def fitting(cls, n_features: int, n_classes: int, max_params: int = MAX_PARAMS) -> "MicroConfig":
        """The widest of a few standard shapes that stays within the parameter budget."""
        for hidden in ((32, 16), (24, 16), (16, 16), (16, 8), (8, 8), (8,), (4,)):
            cfg = cls(n_features, n_classes, hidden)
            if cfg.n_params() <= max_params:
                return cfg
        raise MicroModelError(f"{n_features} features x {n_classes} classes cannot fit {max_params} parameters")


class MicroMLP(nn.Module):
    kind = "micro"

    def __init__(self, config: MicroConfig):
        super().__init__()
        if config.n_params() > MAX_PARAMS:
            raise MicroModelError(f"micro model has {config.n_params()} parameters, more than {MAX_PARAMS}")
        self.config = config
        sizes = [config.n_features, *config.hidden, config.n_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


# --- int8 ------------------------------------------------------------------------------

@dataclass
class QuantLayer:
    weight: list[list[int]]   # [out][in], int8 values
    bias: list[int]           # int32
    multiplier: int           # requantisation (hidden layers); 0 for the last layer
    shift: int
    scale: float              # s_in * s_w: acc * scale is the float pre-activation


@dataclass
class QuantMicro:
    n_features: int
    classes: list[str]
    layers: list[QuantLayer]
    version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "QuantMicro":
        d = json.loads(text)
        try:
            return cls(int(d["n_features"]), [str(c) for c in d["classes"]],
                       [QuantLayer(**layer) for layer in d["layers"]], int(d["version"]))
        except (KeyError, TypeError) as e:
            raise MicroModelError(f"malformed micro model: {e}") from e

    def to_bytes(self) -> bytes:
        """Compact form: MAGIC, u8 version, u16 n_layers, then per layer u16 n_in, u16 n_out,
        i32 multiplier, u8 shift, n_out*n_in int8 weights (row-major), n_out int32 biases.
        Little-endian. Class names are not included (they travel in the JSON form)."""
        out = [MAGIC, struct.pack("<BH", self.version, len(self.layers))]
        for layer in self.layers:
            n_out, n_in = len(layer.weight), len(layer.weight[0])
            out.append(struct.pack("<HHiB", n_in, n_out, layer.multiplier, layer.shift))
            out.append(np.asarray(layer.weight, dtype=np.int8).tobytes())
            out.append(np.asarray(layer.bias, dtype="<i4").tobytes())
        return b"".join(out)


def quantise_input(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(np.asarray(x, dtype=np.float64) * 127 + 0.5), 0, 127).astype(np.int64)


def quantise(model: MicroMLP, calibration_x: np.ndarray, classes: list[str]) -> QuantMicro:
    """int8 form of `model`; hidden-activation ranges come from `calibration_x` (encoded rows)."""
    model.eval()
    with torch.no_grad():
        acts = [torch.from_numpy(np.asarray(calibration_x, dtype=np.float32))]
        for layer in model.layers[:-1]:
            acts.append(torch.relu(layer(acts[-1])))
    s_in = 1.0 / 127
    layers = []
    for i, layer in enumerate(model.layers):
        w = layer.weight.detach().double().numpy()
        b = layer.bias.detach().double().numpy()
        s_w = max(float(np.abs(w).max()), 1e-12) / 127
        q_w = np.clip(np.round(w / s_w), -127, 127).astype(np.int64)
        q_b = np.round(b / (s_in * s_w)).astype(np.int64)
        if i < len(model.layers) - 1:
            peak = max(float(acts[i + 1].max()), 1e-6)
            s_out = peak / 127
            m = int(round(s_in * s_w / s_out * (1 << SHIFT)))
            layers.append(QuantLayer(q_w.tolist(), q_b.tolist(), m, SHIFT, s_in * s_w))
            s_in = s_out
        else:
            layers.append(QuantLayer(q_w.tolist(), q_b.tolist(), 0, 0, s_in * s_w))
    return QuantMicro(model.config.n_features, list(classes), layers)


def int8_logits(q: QuantMicro, qx: np.ndarray) -> np.ndarray:
    """The integer accumulators of the last layer, batch form (int64 numpy, exact)."""
    h = np.asarray(qx, dtype=np.int64)
    for layer in q.layers:
        acc = h @ np.asarray(layer.weight, dtype=np.int64).T + np.asarray(layer.bias, dtype=np.int64)
        if layer.multiplier:
            h = np.minimum((np.maximum(acc, 0) * layer.multiplier + (1 << (layer.shift - 1))) >> layer.shift, 127)
        else:
            return acc
    return h


def int8_predict(q: QuantMicro, x: np.ndarray) -> np.ndarray:
    return np.argmax(int8_logits(q, quantise_input(x)), axis=1)
