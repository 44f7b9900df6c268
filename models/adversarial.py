"""FGSM and PGD adversarial examples in the encoded (min-max scaled) feature space.

Only continuous columns move; 0/1 flags and categorical one-hots are never touched, so a
perturbed row still encodes a valid record. Every perturbed value stays within eps of the
original (L-infinity) and inside [0, 1], the range of the encoding.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _mask(continuous, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(continuous, dtype=np.float32)).to(like.dtype).expand_as(like)


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, mask: torch.Tensor) -> torch.Tensor:
    delta = torch.clamp(x_adv - x, -eps, eps) * mask
    return torch.clamp(x + delta, 0.0, 1.0)


def _grad_sign(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, continuous) -> torch.Tensor:
    mask = _mask(continuous, x)
    return _project(x + eps * _grad_sign(model, x, y), x, eps, mask).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, continuous, steps: int = 10,
        alpha: float | None = None, random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD-`steps` with step `alpha` (default 2.5 * eps / steps) from a random start in the ball."""
    mask = _mask(continuous, x)
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x_adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
        x_adv = _project(x + eps * noise, x, eps, mask)
    for _ in range(steps):
        x_adv = _project(x_adv + alpha * _grad_sign(model, x_adv, y), x, eps, mask)
    return x_adv.detach()


def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str, eps: float, continuous,
           steps: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial rows crafted against `model` in eval mode (BatchNorm statistics untouched)."""
    was_training = model.training
    model.eval()
    try:
        if kind == "fgsm":
            return fgsm(model, x, y, eps, continuous)
        if kind == "pgd":
            return pgd(model, x, y, eps, continuous, steps=steps, generator=generator)
        raise ValueError(f"unknown attack {kind!r} (fgsm or pgd)")
    finally:
        model.train(was_training)
