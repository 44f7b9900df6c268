"""One Byzantine-robustness experiment: a federation of simulated agents on real IDS data,
with a fraction of them attacking, aggregated under one privacy mode and one defence.

Everything runs in this process with the project's own code: the data loaders and the
Dirichlet split of models/, local training with models.training, one real secure-aggregation
round (protocol/) per group in `privacy: grouped` and per cohort in `privacy: secagg`, and
the aggregator the gateway uses (robustness.modes). Agents are simulated (no radio, no boards);
the maths of every round is the real one.

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

DATASET_FILES = {"nsl-kdd": "nsl_kdd/KDDTrain+_20Percent.txt", "unsw-nb15": "unsw_nb15/UNSW_NB15_dev.csv"}
# micro: the MLP of models.micro (fast enough for 20+ agents x many rounds on a shared
# 2-core machine); small: CNNLSTMConfig.small, the CNN-LSTM at a few thousand parameters.
MODELS = ("micro", "small")
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


@dataclass
class Federation:
    """The data side of an experiment: per-agent training sets, the gateway's validation rows
    (guard and SHAP reference batch) and the held-out test rows."""
    pipeline: object
    parts: list
    gateway_val: object
    test: object
    trigger: atk.Trigger
    normal: int


def build_federation(cfg: ExperimentConfig) -> Federation:
    from ztfl.models.datasets import datasets_dir
    from ztfl.models.partition import dirichlet_partition
    from ztfl.models.prepare import prepare

    fmt = cfg.dataset
    prep = prepare(datasets_dir() / DATASET_FILES[fmt], fmt, target=cfg.target, val_fraction=0.3,
                   seed=cfg.seed, max_rows=cfg.max_rows)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(prep.val))
    n_gw = len(order) // 3
    gateway_val, test = prep.val.subset(np.sort(order[:n_gw])), prep.val.subset(np.sort(order[n_gw:]))
    # Split by the fine-grained class (normal, dos, probe, ... even when the target is binary):
    # sites see different attack types, and two labels alone cannot give 20 agents a
    # Dirichlet(0.1) share each.
    labels = prep.train.category if prep.train.category is not None else prep.train.y
    try:
        split = dirichlet_partition(labels, cfg.agents, cfg.alpha, seed=cfg.seed, min_size=8)
    except ValueError as exc:
        raise ExperimentConfigError(f"cannot split the data over {cfg.agents} agents: {exc}") from None
    parts = [prep.train.subset(idx) for idx in split]
    normal = prep.train.classes.index("normal")
    return Federation(prep.pipeline, parts, gateway_val, test,
                      atk.Trigger(trigger_features(prep.train, normal), 1.0, normal), normal)


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


def new_model(cfg: ExperimentConfig, n_features: int, n_classes: int):
    import torch

    torch.manual_seed(cfg.seed)
    if cfg.model == "micro":
        from ztfl.models.micro import MicroConfig, MicroMLP

        return MicroMLP(MicroConfig.fitting(n_features, n_classes))
    from ztfl.models.cnn_lstm import CNNLSTM, CNNLSTMConfig

    return CNNLSTM(CNNLSTMConfig.small(n_features, n_classes))


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
        import torch

        cfg.check()
        # One thread: agents train one after another, and spinning threads on a shared
        # machine cost more than they bring for models this small.
        torch.set_num_threads(1)
        self.cfg = cfg
        self.fed = build_federation(cfg)
        x0 = self.fed.test
        self.n_classes = len(x0.classes)
        self.model = new_model(cfg, x0.x.shape[1], self.n_classes)
        from ztfl.models.params import get_flat

        self.global_flat = get_flat(self.model)
        self.rng = np.random.default_rng(cfg.seed + 1)
        self.malicious = set(atk.choose_malicious(cfg.agents, cfg.fraction, self.rng).tolist())
        self.data = [self._agent_data(i) for i in range(cfg.agents)]
        self.slow_direction = None
        self.aggregator = make_aggregator(attributions_of=self._attributions,
                                          evaluate=self._gateway_metric, **asdict(cfg.aggregator_config()))
        self.records: list[RoundRecord] = []

    # -- agents --------------------------------------------------------------------------
    def _agent_data(self, i: int):
        part = self.fed.parts[i]
        if i not in self.malicious:
            return part
        if self.cfg.attack in ("label-flip", "scaling", "collude"):
            return type(part)(part.x, atk.flip_labels(part.y, self.n_classes), part.continuous, part.classes,
                              part.category)
        if self.cfg.attack == "backdoor":
            x, y = atk.poison_with_backdoor(part.x, part.y, self.fed.trigger, self.cfg.backdoor_rows,
                                            np.random.default_rng(self.cfg.seed + 100 + i), source=None)
            return type(part)(x, y, part.continuous, part.classes, part.category)
        return part

    def _train(self, data, seed: int):
        from ztfl.models.params import set_flat
        from ztfl.models.training import TrainConfig, train_local

        set_flat(self.model, self.global_flat)
        res = train_local(self.model, data, TrainConfig(epochs=1, batch_size=self.cfg.batch_size, lr=self.cfg.lr,
                                                        max_batches=self.cfg.local_batches, seed=seed))
        return (res.weights - self.global_flat).astype(np.float32), max(res.n_samples, 1)

    def _updates(self, r: int):
        cfg = self.cfg
        ups, weights = {}, {}
        for i in range(cfg.agents):
            ups[i], weights[i] = self._train(self.data[i], seed=cfg.seed * 100003 + r * 1009 + i)
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
                flipped = [self._train(type(self.data[i])(self.data[i].x, atk.flip_labels(self.data[i].y, self.n_classes),
                                                          self.data[i].continuous, self.data[i].classes),
                                       seed=cfg.seed + 7 + i)[0] for i in mal]
                self.slow_direction = np.mean(flipped, axis=0) - honest.mean(axis=0)
            for i in mal:
                ups[i] = atk.slow_poison(ups[i], self.slow_direction, scale)
        elif cfg.attack == "collude":
            shared = atk.collude(np.stack([ups[i] for i in mal]))[0] * scale
            for i in mal:
                ups[i] = shared.astype(np.float32)
        return ups, weights

    # -- gateway side --------------------------------------------------------------------
    def _model_at(self, delta: np.ndarray):
        from ztfl.models.params import set_flat

        set_flat(self.model, (self.global_flat + delta).astype(np.float32))
        return self.model

    def _gateway_metric(self, delta: np.ndarray) -> float:
        from ztfl.models.training import predict

        model = self._model_at(delta)
        return float(np.mean(predict(model, self.fed.gateway_val.x) == self.fed.gateway_val.y))

    def _attributions(self, delta: np.ndarray) -> np.ndarray:
        import torch

        from ztfl.robustness.shap_stability import shap_attributions

        model = self._model_at(delta)
        normal = self.fed.normal
        x = self.fed.gateway_val.x
        k = self.cfg.shap_rows
        background, batch = x[:k], x[k:2 * k]

        def p_attack(rows: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                prob = torch.softmax(model(torch.from_numpy(np.ascontiguousarray(rows, np.float32))), dim=1)
            return 1.0 - prob[:, normal].numpy().astype(np.float64)

        return shap_attributions(p_attack, background, batch, seed=self.cfg.seed)

    def _aggregate(self, ups: dict, weights: dict, r: int):
        from ztfl.robustness.secure_groups import secure_group_sums, secure_sum

        cfg = self.cfg
        ids = list(range(cfg.agents))
        if cfg.privacy == "none":
            res = self.aggregator.aggregate(np.stack([ups[i] for i in ids]), [weights[i] for i in ids], ids)
            return res, sorted(res.excluded)
        if cfg.privacy == "grouped":
            groups = self.aggregator.split(ids)
            sums = secure_group_sums(groups, ups, weights, round_id=r + 1)
            res = self.aggregator.aggregate_groups([s.total for s in sums], [s.weight for s in sums], groups)
            return res, res.info.get("excluded_agents", [])
        if cfg.clip_norm is not None:
            # Honest agents clip before masking; attackers do not.
            ups = {i: (u if i in self.malicious else clip_to_norm(u, cfg.clip_norm)) for i, u in ups.items()}
        s = secure_sum(ups, weights, round_id=r + 1)
        return self.aggregator.aggregate_sum(s.total, s.weight), []

    # -- evaluation ----------------------------------------------------------------------
    def _evaluate(self) -> tuple[dict, float | None]:
        from ztfl.models.training import metrics_from_predictions, predict

        model = self._model_at(np.zeros_like(self.global_flat))
        test = self.fed.test
        pred = predict(model, test.x)
        metrics = metrics_from_predictions(pred, test)
        asr = None
        if self.cfg.attack in ("backdoor", "none"):
            # Among attack rows the model detects without the trigger, the share the trigger hides.
            # Without attackers this is the trigger's natural effect: the floor a backdoor
            # figure should be read against.
            detected = np.flatnonzero((test.y != self.fed.normal) & (pred == test.y))
            if len(detected):
                asr = atk.attack_success_rate(lambda z: predict(model, z), test.x[detected], self.fed.trigger)
        return metrics, asr

    def run(self) -> dict:
        cfg = self.cfg
        start = time.monotonic()
        honest = [i for i in range(cfg.agents) if i not in self.malicious]
        for r in range(cfg.rounds):
            t0 = time.monotonic()
            ups, weights = self._updates(r)
            res, excluded = self._aggregate(ups, weights, r)
            self.global_flat = (self.global_flat + res.aggregate).astype(np.float32)
            metrics, asr = self._evaluate()
            ex = set(int(i) for i in excluded)
            guard = res.info.get("guard")
            self.records.append(RoundRecord(
                r + 1, metrics["accuracy"], metrics["macro_f1"], asr,
                len(ex & set(honest)) / len(honest),
                len(ex & self.malicious) / len(self.malicious) if self.malicious else None,
                None if guard is None else bool(guard["accepted"]), time.monotonic() - t0, sorted(ex)))
        last = self.records[-1]
        return {
            "config": asdict(cfg),
            "malicious": sorted(self.malicious),
            "n_params": int(self.global_flat.size),
            "rows": {"train": int(sum(len(p) for p in self.fed.parts)), "gateway_val": len(self.fed.gateway_val),
                     "test": len(self.fed.test)},
            "final": {"accuracy": last.accuracy, "macro_f1": last.macro_f1, "attack_success": last.attack_success,
                      "honest_excluded_mean": float(np.mean([x.honest_excluded for x in self.records])),
                      "malicious_excluded_mean": None if not self.malicious else
                      float(np.mean([x.malicious_excluded for x in self.records]))},
            "rounds": [asdict(x) for x in self.records],
            "seconds": time.monotonic() - start,
        }


def run_experiment(cfg: ExperimentConfig) -> dict:
    return Experiment(cfg).run()
