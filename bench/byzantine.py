"""One Byzantine-robustness experiment: a federation of simulated agents on real IDS data,
with a fraction of them attacking, aggregated under one privacy mode and one defence.

It runs on the simulated federation of bench.simfed: the data loaders and the Dirichlet split
of models/, each agent's local update (agent.update), one secure aggregation through the
gateway's own cohort code per group in `privacy: grouped` and per cohort in `privacy: secagg`,
and the aggregator the gateway uses (robustness.modes). Agents are simulated (no radio, no
boards); the maths of every round is the real one.

Per round it records accuracy and macro-F1 on held-out rows, the backdoor attack success
rate (backdoor attack), and which agents were left out (honest: false exclusions).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ztfl.robustness import attacks as atk
from ztfl.robustness.modes import AggregatorConfig, make_aggregator, validate
from ztfl.robustness.result import RobustnessError
from ztfl.robustness.rules import clip_to_norm

# --model -> (models.spec variant, size). micro: the MLP of models.micro (fast enough for 20+
# agents x many rounds on a shared 2-core machine); small: the CNN-LSTM at a few thousand parameters.
MODELS = {"micro": ("micro", "small"), "small": ("cnn-lstm", "small")}
# Secure aggregations (grouped, secagg) use 64-bit masks: weights of any sample count stay exact.
MASK_BITS = 64
# Default strength per update-level attack (see ExperimentConfig.attack_scale).
DEFAULT_SCALE = {"sign-flip": 4.0, "gaussian": 5.0, "alie": 0.0, "slow-poison": 0.05, "collude": 1.0}


class ExperimentConfigError(RobustnessError):
    """An experiment was configured with something that cannot run."""


@dataclass
class ExperimentConfig:
    """attack_scale: sign-flip factor, Gaussian sigma in units of the honest updates' RMS,
    slow-poison alpha, colluders' factor; scaling and backdoor boost by n / m (model
    replacement) unless set. alie ignores it (z from n and m)."""
    dataset: str = "nsl-kdd"
    attack: str = "none"
    fraction: float = 0.0
    defense: str = "fedavg"
    privacy: str = "none"
    rounds: int = 10
    agents: int = 20
    alpha: float = 0.5
    group_size: int = 5
    expected_byzantine: float = 0.3
    model: str = "micro"
    target: str = "binary"
    local_batches: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    max_rows: int | None = 20000
    attack_scale: float | None = None
    backdoor_rows: float = 0.5
    clip_norm: float | None = None
    guard_margin: float | None = None
    drift: bool = False
    shap_rows: int = 8
    seed: int = 0

    def check(self) -> None:
        from ztfl.models.datasets import DATASET_FILES

        if self.dataset not in DATASET_FILES:
            raise ExperimentConfigError(f"unknown dataset {self.dataset!r}; known: {', '.join(DATASET_FILES)}")
        if self.attack not in atk.ATTACKS:
            raise ExperimentConfigError(f"unknown attack {self.attack!r}; known: {', '.join(atk.ATTACKS)}")
        if self.model not in MODELS:
            raise ExperimentConfigError(f"unknown model {self.model!r}; known: {', '.join(MODELS)}")
        if (self.attack == "none") != (self.fraction == 0):
            raise ExperimentConfigError("attack none goes with fraction 0 and any attack with a fraction > 0")
        if self.rounds < 1 or self.agents < 2:
            raise ExperimentConfigError("need rounds >= 1 and agents >= 2")
        validate(self.aggregator_config(), has_shap_model=True)

    def aggregator_config(self) -> AggregatorConfig:
        return AggregatorConfig(privacy=self.privacy, defense=self.defense, cohort_size=self.agents,
                                group_size=self.group_size, expected_byzantine=self.expected_byzantine,
                                clip_norm=self.clip_norm, guard_margin=self.guard_margin,
                                drift=self.drift, seed=self.seed)


def data_spec(cfg: ExperimentConfig):
    """The federation's data: 30 % of the rows held out, a third of them the gateway's validation
    set (guard and SHAP reference batch), the rest the test set; the training rows split over the
    agents by a redrawn Dirichlet partition (at least 8 rows each)."""
    from ztfl.bench.simfed import DataSpec

    return DataSpec(cfg.dataset, target=cfg.target, val_fraction=0.3, seed=cfg.seed, max_rows=cfg.max_rows,
                    agents=cfg.agents, alpha=cfg.alpha, min_rows=8, top_up=False, gateway_share=1 / 3)


def trigger_features(train, normal: int, k: int = 3) -> tuple[int, ...]:
    """The k continuous features whose high values (> 0.5) in training belong least to normal
    traffic (the rarest first among equals): honest data then teaches the model that the
    trigger pattern means attack, and only poisoning can make it mean normal. (Taking simply
    the rarest features picked FTP-login flags on UNSW-NB15, which are normal traffic: the
    trigger alone hid half the attacks from a model trained without any attacker.)"""
    cont = np.flatnonzero(train.continuous)
    high = train.x[:, cont] > 0.5
    n_high = high.sum(axis=0)
    normal_share = np.where(n_high > 0, (high & (train.y == normal)[:, None]).sum(axis=0) / np.maximum(n_high, 1), 0.0)
    order = np.lexsort((n_high, np.round(normal_share, 2)))
    return tuple(int(cont[i]) for i in order[:k])


@dataclass
class RoundRecord:
    round: int
    accuracy: float
    macro_f1: float
    attack_success: float | None
    honest_excluded: float
    malicious_excluded: float | None
    guard_accepted: bool | None
    seconds: float
    excluded: list = field(default_factory=list)


class Experiment:
    def __init__(self, cfg: ExperimentConfig):
        from ztfl.bench.simfed import (GatewayAggregation, LocalTraining, PrivacyModeAggregation,
                                       SimulatedFederation, SplitError)

        cfg.check()
        self.cfg = cfg
        variant, size = MODELS[cfg.model]
        try:
            self.fed = SimulatedFederation.create(
                data_spec(cfg), variant, size, training=LocalTraining(cfg.local_batches, cfg.batch_size, cfg.lr),
                seed=cfg.seed, init_seed=cfg.seed)
        except SplitError as exc:
            raise ExperimentConfigError(str(exc)) from None
        train = self.fed.data.train
        self.n_classes = len(train.classes)
        self.normal = train.classes.index("normal")
        self.trigger = atk.Trigger(trigger_features(train, self.normal), 1.0, self.normal)
        self.rng = np.random.default_rng(cfg.seed + 1)
        self.malicious = set(atk.choose_malicious(cfg.agents, cfg.fraction, self.rng).tolist())
        self.data = [self._agent_data(i) for i in range(cfg.agents)]
        self.slow_direction = None
        secure = None if cfg.privacy == "none" else GatewayAggregation(self.fed.agents, MASK_BITS, variant,
                                                                       seed=cfg.seed)
        self.aggregation = PrivacyModeAggregation(
            make_aggregator(attributions_of=self._attributions, evaluate=self._gateway_metric,
                            **asdict(cfg.aggregator_config())), secure)
        self.records: list[RoundRecord] = []

    # -- agents --------------------------------------------------------------------------
    def _agent_data(self, i: int):
        part = self.fed.data.parts[i]
        if i not in self.malicious:
            return part
        if self.cfg.attack in ("label-flip", "scaling", "collude"):
            return type(part)(part.x, atk.flip_labels(part.y, self.n_classes), part.continuous, part.classes,
                              part.category)
        if self.cfg.attack == "backdoor":
            x, y = atk.poison_with_backdoor(part.x, part.y, self.trigger, self.cfg.backdoor_rows,
                                            np.random.default_rng(self.cfg.seed + 100 + i), source=None)
            return type(part)(x, y, part.continuous, part.classes, part.category)
        return part

    def _updates(self, r: int):
        cfg = self.cfg
        ups, weights = self.fed.local_updates(r, self.data)
        mal = sorted(self.malicious)
        if not mal:
            return ups, weights
        honest = np.stack([ups[i] for i in range(cfg.agents) if i not in self.malicious])
        scale = cfg.attack_scale if cfg.attack_scale is not None else DEFAULT_SCALE.get(cfg.attack)
        if cfg.attack == "sign-flip":
            for i in mal:
                ups[i] = atk.sign_flip(ups[i], scale)
        elif cfg.attack == "gaussian":
            rms = float(np.sqrt(np.mean(honest.astype(np.float64) ** 2)))
            for i in mal:
                ups[i] = atk.gaussian_noise(ups[i], scale * rms, self.rng)
        elif cfg.attack in ("scaling", "backdoor"):
            boost = scale if cfg.attack_scale is not None else atk.replacement_factor(cfg.agents, len(mal))
            for i in mal:
                ups[i] = atk.scale_update(ups[i], boost)
        elif cfg.attack == "alie":
            crafted = atk.a_little_is_enough(honest, cfg.agents, len(mal))
            for i in mal:
                ups[i] = crafted.copy()
        elif cfg.attack == "slow-poison":
            if self.slow_direction is None:
                # The push is fixed once: from the honest direction towards a label-flipped model.
                flipped = [self.fed.local_update(i, r, type(self.data[i])(
                    self.data[i].x, atk.flip_labels(self.data[i].y, self.n_classes), self.data[i].continuous,
                    self.data[i].classes)).delta for i in mal]
                self.slow_direction = np.mean(flipped, axis=0) - honest.mean(axis=0)
            for i in mal:
                ups[i] = atk.slow_poison(ups[i], self.slow_direction, scale)
        elif cfg.attack == "collude":
            shared = atk.collude(np.stack([ups[i] for i in mal]))[0] * scale
            for i in mal:
                ups[i] = shared.astype(np.float32)
        return ups, weights

    # -- gateway side --------------------------------------------------------------------
    def _gateway_metric(self, delta: np.ndarray) -> float:
        rows = self.fed.data.gateway_val
        return float(np.mean(self.fed.predict(rows.x, delta) == rows.y))

    def _attributions(self, delta: np.ndarray) -> np.ndarray:
        import torch

        from ztfl.robustness.shap_stability import shap_attributions

        model = self.fed.model_at(delta)
        x = self.fed.data.gateway_val.x
        k = self.cfg.shap_rows
        background, batch = x[:k], x[k:2 * k]

        def p_attack(rows: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                prob = torch.softmax(model(torch.from_numpy(np.ascontiguousarray(rows, np.float32))), dim=1)
            return 1.0 - prob[:, self.normal].numpy().astype(np.float64)

        return shap_attributions(p_attack, background, batch, seed=self.cfg.seed)

    def _aggregate(self, ups: dict, weights: dict, r: int):
        cfg = self.cfg
        if cfg.privacy == "secagg" and cfg.clip_norm is not None:
            # Honest agents clip before masking; attackers do not.
            ups = {i: (u if i in self.malicious else clip_to_norm(u, cfg.clip_norm)) for i, u in ups.items()}
        return self.aggregation.aggregate(r, ups, weights)

    # -- evaluation ----------------------------------------------------------------------
    def _evaluate(self) -> tuple[dict, float | None]:
        metrics = self.fed.evaluate()
        asr = None
        if self.cfg.attack in ("backdoor", "none"):
            # Among attack rows the model detects without the trigger, the share the trigger hides.
            # Without attackers this is the trigger's natural effect: the floor a backdoor
            # figure should be read against.
            test = self.fed.data.test
            detected = np.flatnonzero((test.y != self.normal) & (self.fed.predict(test.x) == test.y))
            if len(detected):
                asr = atk.attack_success_rate(self.fed.predict, test.x[detected], self.trigger)
        return metrics, asr

    def run(self) -> dict:
        cfg = self.cfg
        start = time.monotonic()
        honest = [i for i in range(cfg.agents) if i not in self.malicious]
        for r in range(1, cfg.rounds + 1):
            t0 = time.monotonic()
            ups, weights = self._updates(r)
            res, excluded = self._aggregate(ups, weights, r)
            self.fed.commit(res.aggregate)
            metrics, asr = self._evaluate()
            ex = set(int(i) for i in excluded)
            guard = res.info.get("guard")
            self.records.append(RoundRecord(
                r, metrics["accuracy"], metrics["macro_f1"], asr,
                len(ex & set(honest)) / len(honest),
                len(ex & self.malicious) / len(self.malicious) if self.malicious else None,
                None if guard is None else bool(guard["accepted"]), time.monotonic() - t0, sorted(ex)))
        last = self.records[-1]
        return {
            "config": asdict(cfg),
            "malicious": sorted(self.malicious),
            "n_params": int(self.fed.global_flat.size),
            "rows": {"train": len(self.fed.data.train), "gateway_val": len(self.fed.data.gateway_val),
                     "test": len(self.fed.data.test)},
            "final": {"accuracy": last.accuracy, "macro_f1": last.macro_f1, "attack_success": last.attack_success,
                      "honest_excluded_mean": float(np.mean([x.honest_excluded for x in self.records])),
                      "malicious_excluded_mean": None if not self.malicious else
                      float(np.mean([x.malicious_excluded for x in self.records]))},
            "rounds": [asdict(x) for x in self.records],
            "seconds": time.monotonic() - start,
        }


def run_experiment(cfg: ExperimentConfig) -> dict:
    return Experiment(cfg).run()
