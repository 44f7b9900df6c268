"""Local training and evaluation, shared by the centralised trainer, the agents and the
simulations: `train_local(model, data, config) -> TrainResult` (new flat weights) and
`evaluate(model, data) -> metrics`.

Adversarial training mixes crafted rows into every batch (default 70 % clean / 30 %
FGSM or PGD), with eps in the scaled feature space and only continuous columns perturbed.
Fixed seeds give identical weights.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ztfl.models.adversarial import attack
from ztfl.models.params import get_flat
from ztfl.models.preprocess import Encoded

# The machines are small and shared: never more than two threads.
torch.set_num_threads(min(2, torch.get_num_threads()))


@dataclass
class TrainConfig:
    epochs: int = 1
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    adversarial: str | None = None   # None, "fgsm" or "pgd"
    adv_fraction: float = 0.3
    eps: float = 0.05
    pgd_steps: int = 3
    class_weighting: bool = True
    seed: int = 0
    max_batches: int | None = None   # compute budget: stop after this many batches
    time_budget_s: float | None = None
    # Generalisation to traffic unlike the training rows (off by default; docs/models.md measures them):
    noise: float = 0.0               # std of Gaussian noise on the continuous columns of each batch
    unseen_rate: float = 0.0         # share of rows whose category moves to the "unseen" slot, per column
    categorical_slots: tuple[tuple[int, int], ...] = ()   # one-hot blocks (start, stop); stop - 1 = unseen
    label_smoothing: float = 0.0


@dataclass
class TrainResult:
    weights: np.ndarray              # flat float32, see models.params
    n_samples: int                   # rows seen (for weighted federated averaging)
    batches: int
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights normalised to mean 1 over present classes; absent classes get 0."""
    counts = np.bincount(y[y >= 0], minlength=n_classes).astype(np.float64)
    w = np.zeros(n_classes)
    present = counts > 0
    w[present] = counts[present].sum() / (present.sum() * counts[present])
    # Square root softens the weighting of tiny classes (U2R has 11 rows in NSL-KDD 20 %).
    w[present] = np.sqrt(w[present])
    return (w / w[present].mean()).astype(np.float32)


def augment(x: torch.Tensor, continuous: np.ndarray, config: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """A training batch as traffic slightly unlike it: noise on the continuous columns (clipped to
    the encoded range) and, per categorical column, some rows moved to the "unseen" slot, so the
    model has learnt what a category it never saw means instead of answering from an untrained weight."""
    x = x.clone()
    if config.noise:
        mask = torch.from_numpy(np.asarray(continuous, dtype=np.float32))
        x = (x + torch.randn(x.shape, generator=gen) * config.noise * mask).clamp_(0.0, 1.0)
    for lo, hi in config.categorical_slots if config.unseen_rate else ():
        moved = torch.rand(len(x), generator=gen) < config.unseen_rate
        x[moved, lo:hi] = 0.0
        x[moved, hi - 1] = 1.0
    return x


def train_local(model: nn.Module, data: Encoded, config: TrainConfig | None = None) -> TrainResult:
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    aug = torch.Generator().manual_seed(config.seed + 1)   # its own stream: off, it draws nothing
    labelled = np.flatnonzero(data.y >= 0)
    x_all = torch.from_numpy(np.ascontiguousarray(data.x, dtype=np.float32))
    y_all = torch.from_numpy(data.y.astype(np.int64))
    n_classes = len(data.classes)
    weight = torch.from_numpy(class_weights(data.y, n_classes)) if config.class_weighting else None
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start = time.monotonic()
    batches, seen, losses = 0, 0, []
    model.train()
    done = False
    for _ in range(config.epochs):
        order = labelled[rng.permutation(len(labelled))]
        total, count = 0.0, 0
        for lo in range(0, len(order), config.batch_size):
            idx = torch.from_numpy(order[lo:lo + config.batch_size])
            if len(idx) < 2:  # BatchNorm needs two rows
                continue
            x, y = x_all[idx], y_all[idx]
            if config.noise or config.unseen_rate:
                x = augment(x, data.continuous, config, aug)
            if config.adversarial:
                n_adv = int(round(len(idx) * config.adv_fraction))
                if n_adv:
                    x = x.clone()
                    x[:n_adv] = attack(model, x[:n_adv], y[:n_adv], config.adversarial, config.eps,
                                       data.continuous, steps=config.pgd_steps, generator=gen)
            loss = F.cross_entropy(model(x), y, weight=weight, label_smoothing=config.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            batches += 1
            seen += len(idx)
            if (config.max_batches is not None and batches >= config.max_batches) or \
                    (config.time_budget_s is not None and time.monotonic() - start >= config.time_budget_s):
                done = True
                break
        losses.append(total / max(count, 1))
        if done:
            break
    model.eval()
    return TrainResult(get_flat(model), seen, batches, losses, time.monotonic() - start)


def logits_of(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> torch.Tensor:
    model.eval()
    out = []
    with torch.no_grad():
        for lo in range(0, len(x), batch_size):
            out.append(model(torch.from_numpy(np.ascontiguousarray(x[lo:lo + batch_size], dtype=np.float32))))
    return torch.cat(out) if out else torch.zeros(0, 0)


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    return logits_of(model, x, batch_size).argmax(1).numpy() if len(x) else np.zeros(0, dtype=np.int64)



def loss_of(model: nn.Module, data: Encoded) -> float:
    model.eval()
    idx = np.flatnonzero(data.y >= 0)
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x[idx]))
        return float(F.cross_entropy(logits, torch.from_numpy(data.y[idx])))


def metrics_from_predictions(pred: np.ndarray, data: Encoded) -> dict:
    """accuracy, macro-F1 and per-class recall by class *name*, so a class the model never saw
    counts as wrongly predicted; plus binary (normal vs attack) accuracy."""
    classes = data.classes
    names_pred = np.array([classes[p] for p in pred], dtype=object)
    truth = data.category if data.category is not None else np.array([classes[t] for t in data.y], dtype=object)
    if "attack" in classes and len(classes) == 2:  # binary target: any attack name is "attack"
        truth = np.where(truth == "normal", "normal", "attack").astype(object)
    n = len(truth)
    labels = sorted(set(truth) | set(names_pred))
    recall, f1s = {}, []
    for c in labels:
        tp = int(np.sum((truth == c) & (names_pred == c)))
        n_true = int(np.sum(truth == c))
        n_pred = int(np.sum(names_pred == c))
        rec = tp / n_true if n_true else 0.0
        prec = tp / n_pred if n_pred else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        if n_true:
            recall[c] = round(rec, 6)
    binary_truth = truth != "normal"
    binary_pred = names_pred != "normal"
    return {
        "n": n,
        "accuracy": float(np.mean(truth == names_pred)) if n else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "binary_accuracy": float(np.mean(binary_truth == binary_pred)) if n else 0.0,
        "per_class_recall": recall,
    }


def evaluate(model: nn.Module, data: Encoded, attack_kind: str | None = None, eps: float = 0.05,
             steps: int = 10, seed: int = 0, batch_size: int = 1024, attack_rows: int | None = None) -> dict:
    """Clean metrics; with `attack_kind`, also `robust_accuracy` on adversarial rows crafted
    from each row's true class (rows of classes the model never saw are not attacked).
    `attack_rows` caps the attacked rows (a seeded random subset; PGD is costly), and
    `clean_accuracy_attacked_rows` gives the clean accuracy on that same subset."""
    result = metrics_from_predictions(predict(model, data.x), data)
    if attack_kind:
        if attack_rows is not None and attack_rows < len(data):
            data = data.subset(np.sort(np.random.default_rng(seed).choice(len(data), attack_rows, replace=False)))
            result["clean_accuracy_attacked_rows"] = metrics_from_predictions(predict(model, data.x), data)["accuracy"]
        result["attacked_rows"] = len(data)
        gen = torch.Generator().manual_seed(seed)
        x_adv = data.x.copy()
        known = np.flatnonzero(data.y >= 0)
        for lo in range(0, len(known), batch_size):
            idx = known[lo:lo + batch_size]
            x_adv[idx] = attack(model, torch.from_numpy(data.x[idx]), torch.from_numpy(data.y[idx]),
                                attack_kind, eps, data.continuous, steps=steps, generator=gen).numpy()
        adv = metrics_from_predictions(predict(model, x_adv), data)
        result.update({"attack": attack_kind, "eps": eps, "steps": steps if attack_kind == "pgd" else 1,
                       "robust_accuracy": adv["accuracy"], "robust_binary_accuracy": adv["binary_accuracy"]})
    return result
