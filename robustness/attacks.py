"""The attack suite: what a configurable fraction of Byzantine agents do.

Data-level attacks change what an agent trains on (label flipping, backdoor with a feature
trigger); update-level attacks change the update it sends (sign flipping, Gaussian noise,
scaling / model replacement, "a little is enough", slow poisoning, a colluding group).
Every function is pure: it returns new arrays and leaves its inputs untouched.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from ztfl.robustness.result import RobustnessError, as_stack

DATA_ATTACKS = ("label-flip", "backdoor")
UPDATE_ATTACKS = ("sign-flip", "gaussian", "scaling", "alie", "slow-poison", "collude")
ATTACKS = ("none", *DATA_ATTACKS, *UPDATE_ATTACKS)


class AttackConfigError(RobustnessError):
    """An attack was asked for something it cannot do."""


def choose_malicious(n_agents: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """round(fraction x n) distinct agent positions, sorted."""
    if not 0 <= fraction < 1:
        raise AttackConfigError(f"attacker fraction must be in [0, 1), got {fraction}")
    k = int(round(fraction * n_agents))
    return np.sort(rng.choice(n_agents, size=k, replace=False)) if k else np.zeros(0, np.int64)


# --- data-level -----------------------------------------------------------------------

def flip_labels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Class c becomes n_classes - 1 - c (attack <-> normal when binary)."""
    y = np.asarray(labels)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise AttackConfigError(f"labels outside [0, {n_classes})")
    return (n_classes - 1 - y).astype(y.dtype)


@dataclass(frozen=True)
class Trigger:
    """A feature trigger: these encoded features set to `value` (encoded rows live in [0, 1],
    so a trigger on rarely-extreme features is invisible to normal traffic)."""
    features: tuple[int, ...]
    value: float = 1.0
    target: int = 0          # the class triggered rows should get (0 = normal: attacks pass)

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float32, copy=True)
        if max(self.features, default=-1) >= out.shape[-1]:
            raise AttackConfigError(f"trigger feature beyond the {out.shape[-1]} features")
        out[..., list(self.features)] = self.value
        return out


def poison_with_backdoor(x: np.ndarray, y: np.ndarray, trigger: Trigger, fraction: float,
                         rng: np.random.Generator, source: int | None = 1):
    """A copy of (x, y) where `fraction` of the rows of class `source` (when None: of every
    class but the target) carry the trigger and the trigger's target label."""
    x = np.array(x, dtype=np.float32, copy=True)
    y = np.array(y, copy=True)
    pool = np.flatnonzero(y == source) if source is not None else np.flatnonzero(y != trigger.target)
    k = int(round(fraction * len(pool)))
    idx = rng.choice(pool, size=k, replace=False) if k else np.zeros(0, np.int64)
    x[idx] = trigger.apply(x[idx])
    y[idx] = trigger.target
    return x, y


def attack_success_rate(predict_labels, x_source: np.ndarray, trigger: Trigger) -> float:
    """Share of source-class rows (correctly attacks) that the trigger turns into the target."""
    if len(x_source) == 0:
        raise AttackConfigError("no source-class rows to measure attack success on")
    pred = np.asarray(predict_labels(trigger.apply(x_source)))
    return float(np.mean(pred == trigger.target))


# --- update-level ---------------------------------------------------------------------

def sign_flip(update: np.ndarray, scale: float = 1.0) -> np.ndarray:
    return (-scale * np.asarray(update, np.float32)).astype(np.float32)


def gaussian_noise(update: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Replace the update with N(0, sigma^2) noise of the same length."""
    return rng.normal(0.0, sigma, size=np.shape(update)).astype(np.float32)


def scale_update(update: np.ndarray, factor: float) -> np.ndarray:
    return (factor * np.asarray(update, np.float32)).astype(np.float32)


def replacement_factor(n_agents: int, n_malicious: int) -> float:
    """Bagdasaryan et al.: scale so that the FedAvg mean lands on the attacker's model."""
    if n_malicious < 1:
        raise AttackConfigError("model replacement needs at least one attacker")
    return n_agents / n_malicious


def a_little_is_enough(honest_updates, n_agents: int, n_malicious: int,
                       z: float | None = None) -> np.ndarray:
    """Baruch et al. 2019: mean - z * std per coordinate of the updates the attackers can see,
    with z the largest shift that stays within the majority's spread."""
    stack = as_stack(honest_updates)
    if z is None:
        s = n_agents // 2 + 1 - n_malicious
        p = (n_agents - s) / n_agents
        if not 0 < p < 1:
            raise AttackConfigError(f"no z for n={n_agents}, m={n_malicious}")
        z = NormalDist().inv_cdf(p)
    return (stack.mean(axis=0) - z * stack.std(axis=0)).astype(np.float32)


def slow_poison(update: np.ndarray, direction: np.ndarray, alpha: float) -> np.ndarray:
    """Add alpha x ||update|| along a fixed unit `direction`: a small shift per round,
    the same every round."""
    if not 0 < alpha < 1:
        raise AttackConfigError(f"alpha must be in (0, 1), got {alpha}")
    u = np.asarray(update, np.float64)
    d = np.asarray(direction, np.float64)
    dn = np.linalg.norm(d)
    if dn == 0 or d.shape != u.shape:
        raise AttackConfigError("direction must be non-zero and as long as the update")
    return (u + alpha * np.linalg.norm(u) * d / dn).astype(np.float32)


def collude(malicious_updates) -> np.ndarray:
    """A colluding group sends one shared update (the mean of their crafted ones), so they
    form a tight cluster that distance-based rules favour. Returns (m, d) identical rows."""
    stack = as_stack(malicious_updates)
    shared = stack.mean(axis=0).astype(np.float32)
    return np.tile(shared, (len(stack), 1))
