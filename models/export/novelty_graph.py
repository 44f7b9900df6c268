"""The open-set detector as part of the exported graph (models.openset): one model, two outputs,
"logits" and "novelty" = log1p(min_j ||x - c_j||^2) over the normal-traffic prototypes c.

The squared distance is expanded as |x|^2 - 2 x.c_j + |c_j|^2, so a batch needs B x P values, not
B x P x F, and the prototypes are the weight of one bias-free linear layer. They sit on the grid
c = q / 255 (the detector fits them there): the int8 exporters store that weight as 8-bit integers,
exactly, and widen it to float in the graph (`store_8bit` here for ONNX, litert_worker for TFLite).
The distance itself is computed in float: its threshold sits at squared distances of 0.1-1, which
an int8 activation of the dot products would blur. Only torch and numpy are imported: this runs in
.venv-litert too.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

GRID = 255  # prototypes are q / GRID with q in 0..GRID
OPENSET_FILE = "openset.json"  # the detector in a model directory (models.openset)


class PrototypeDistance(nn.Module):
    def __init__(self, prototypes_q):
        super().__init__()
        c = torch.as_tensor(np.asarray(prototypes_q), dtype=torch.float64) / GRID
        self.project = nn.Linear(c.shape[1], c.shape[0], bias=False)
        with torch.no_grad():
            self.project.weight.copy_(c)
        self.register_buffer("norms", (c * c).sum(1).to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x * x).sum(1, keepdim=True) - 2.0 * self.project(x) + self.norms.unsqueeze(0)
        return torch.log1p(torch.clamp(d.amin(1), min=0.0))


class WithNovelty(nn.Module):
    """A classifier and the novelty score of the same rows."""

    def __init__(self, model: nn.Module, prototypes_q):
        super().__init__()
        self.model = model
        self.novelty = PrototypeDistance(prototypes_q)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(x), self.novelty(x)


def prototype_weight(values: np.ndarray, prototypes_q) -> tuple[np.ndarray, float, int] | None:
    """If `values` is the prototype weight as a converter left it (itself or its transpose, maybe
    with the distance's factor 2 folded in), its exact int8 form (int8 values, scale, zero point:
    values = scale * (int8 - zero point)); else None."""
    q = np.asarray(prototypes_q, dtype=np.float64)
    for candidate in (q, q.T):
        if values.shape != candidate.shape:
            continue
        for factor in (1.0, 2.0, -1.0, -2.0):
            if np.allclose(values, factor * candidate / GRID, rtol=0, atol=1e-5):
                # q in 0..255 -> int8 q - 128 (zero point -128), or 127 - q for a negative factor
                stored = candidate - 128 if factor > 0 else 127 - candidate
                return stored.astype(np.int8), abs(factor) / GRID, -128 if factor > 0 else 127
    return None
