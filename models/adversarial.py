"""FGSM and PGD adversarial examples in the encoded (min-max scaled) feature space.

Only continuous columns move; 0/1 flags and categorical one-hots are never touched, so a
perturbed row still encodes a valid record. Every perturbed value stays within eps of the
original (L-infinity) and inside [0, 1], the range of the encoding: the pipeline clips every
value it encodes to [0, 1], so a point outside could never reach the model in deployment.

Two losses: cross-entropy on the logits (the usual one) and the logit margin (best other
class minus the true class, as in Carlini-Wagner), which keeps a useful gradient where a
very confident softmax rounds to exactly 1 in float32 and cross-entropy's gradient vanishes.
`strongest` runs several PGD attacks and keeps, per row, the first one that fools the model:
a check that PGD-10 is not an artificially weak attack.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ce", "margin")


def _mask(continuous, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(continuous, dtype=np.float32)).to(like.dtype).expand_as(like)


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, mask: torch.Tensor) -> torch.Tensor:
    delta = torch.clamp(x_adv - x, -eps, eps) * mask
    return torch.clamp(x + delta, 0.0, 1.0)


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over rows of (largest other logit - true logit): positive once a row is misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return (others.max(1).values - true).sum()


def _loss(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "ce":
        # Summed, not averaged: a row's gradient must not shrink with the batch size.
        return F.cross_entropy(logits, y, reduction="sum")
    if loss == "margin":
        return margin_loss(logits, y)
    raise ValueError(f"unknown attack loss {loss!r} ({' or '.join(LOSSES)})")


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(_loss(model(x), y, loss), x)
    return grad


def _grad_sign(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    return input_gradient(model, x, y, loss).sign()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, continuous,
         loss: str = "ce") -> torch.Tensor:
    mask = _mask(continuous, x)
    return _project(x + eps * _grad_sign(model, x, y, loss), x, eps, mask).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, continuous, steps: int = 10,
        alpha: float | None = None, random_start: bool = True,
        generator: torch.Generator | None = None, loss: str = "ce") -> torch.Tensor:
    """PGD-`steps` with step `alpha` (default 2.5 * eps / steps) from a random start in the ball."""
    mask = _mask(continuous, x)
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x_adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
        x_adv = _project(x + eps * noise, x, eps, mask)
    for _ in range(steps):
        x_adv = _project(x_adv + alpha * _grad_sign(model, x_adv, y, loss), x, eps, mask)
    return x_adv.detach()


def _in_eval_mode(model: nn.Module, craft):
    was_training = model.training
    model.eval()
    try:
        return craft()
    finally:
        model.train(was_training)


def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str, eps: float, continuous,
           steps: int = 10, generator: torch.Generator | None = None, loss: str = "ce") -> torch.Tensor:
    """Adversarial rows crafted against `model` in eval mode (BatchNorm statistics untouched)."""
    if kind == "fgsm":
        return _in_eval_mode(model, lambda: fgsm(model, x, y, eps, continuous, loss))
    if kind == "pgd":
        return _in_eval_mode(model, lambda: pgd(model, x, y, eps, continuous, steps=steps, generator=generator,
                                                loss=loss))
    raise ValueError(f"unknown attack {kind!r} (fgsm or pgd)")


def strongest(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, continuous, steps: int = 50,
              restarts: int = 2, losses=LOSSES, generator: torch.Generator | None = None,
              start: torch.Tensor | None = None) -> torch.Tensor:
    """Per row, the first of `restarts` x `losses` PGD-`steps` attacks (random starts) that fools
    the model; `start` (e.g. PGD-10's rows) is tried first, so the result is never weaker."""
    def craft():
        best = x.clone() if start is None else start.clone()
        with torch.no_grad():
            fooled = model(best).argmax(1) != y
        for _ in range(restarts):
            for loss in losses:
                todo = torch.nonzero(~fooled).squeeze(1)
                if len(todo) == 0:
                    return best
                x_adv = pgd(model, x[todo], y[todo], eps, continuous, steps=steps, generator=generator, loss=loss)
                with torch.no_grad():
                    wrong = model(x_adv).argmax(1) != y[todo]
                best[todo[wrong]] = x_adv[wrong]
                fooled[todo[wrong]] = True
        return best
    return _in_eval_mode(model, craft).detach()
