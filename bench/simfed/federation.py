"""SimulatedFederation: the agents and the gateway's model of one experiment, in this process.

Data and split come from bench.simfed.data, the model from models.spec (the one factory), each
agent's round from agent.update.local_update (what the agent daemon runs: a copy of the model it
was given, trained on its own rows within its batch budget, the change and its row count), and
the gateway's commit adds an aggregate to the global model as gateway.server does. Aggregation
is the caller's choice of bench.simfed.modes (plain FedAvg, robustness.modes' privacy modes) and
bench.simfed.secure (secure aggregation through the gateway's own cohort code).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ztfl.bench.simfed.data import DataSpec, FederationData, load_federation


@dataclass(frozen=True)
class LocalTraining:
    """Each agent's budget per round, as agent.update.local_update takes it."""
    batches: int | None = 200
    batch_size: int = 64
    lr: float = 3e-3
    epochs: int = 1


def round_seed(seed: int, rnd: int, agent: int) -> int:
    """The local-training seed of one agent in one round: distinct for every pair."""
    return seed * 100003 + rnd * 1009 + agent


class SimulatedFederation:
    """`seed` seeds local training, `init_seed` the initial global model; `threads` caps torch's
    threads (agents train one after another, and spinning threads on a shared machine cost more
    than they bring for models this small)."""

    def __init__(self, data: FederationData, spec, training: LocalTraining = LocalTraining(), seed: int = 0,
                 init_seed: int = 0, threads: int = 1):
        import torch

        torch.set_num_threads(max(1, threads))
        self.data, self.spec, self.training = data, spec, training
        self.seed, self.init_seed = seed, init_seed
        self.reset()

    @classmethod
    def create(cls, data: DataSpec, variant: str = "micro", size: str = "small", hidden: tuple[int, ...] | None = None,
               training: LocalTraining = LocalTraining(), seed: int = 0, init_seed: int = 0,
               threads: int = 1) -> "SimulatedFederation":
        """Load the data, and shape the model of `variant` (models.spec.ModelSpec) for its pipeline."""
        from ztfl.models.spec import ModelSpec

        loaded = load_federation(data)
        spec = ModelSpec(variant, loaded.pipeline.n_features, loaded.pipeline.n_classes, size, hidden)
        return cls(loaded, spec, training, seed, init_seed, threads)

    def reset(self) -> None:
        """Start again from the initial global model (same data, same agents)."""
        from ztfl.models.params import get_flat

        self._model = self.spec.build(self.init_seed)
        self.global_flat = get_flat(self._model)
        self.version = 0

    @property
    def agents(self) -> list[int]:
        return list(range(len(self.data.parts)))

    # -- agents ----------------------------------------------------------------------------
    def published(self) -> np.ndarray:
        """What an agent holds after the gateway published the global model as a model blob
        (fednet.messages.ModelBlob, encoded and decoded)."""
        from ztfl.fednet.messages import ModelBlob
        from ztfl.models.spec import flat_to_tensors, layout, tensors_to_flat

        shape_table = layout(self._model)
        tensors = flat_to_tensors(self.global_flat, shape_table)
        payload = ModelBlob(self.version, self.spec.variant, "", tensors).encode()
        return tensors_to_flat(ModelBlob.decode(payload, len(payload)).tensors, shape_table)

    def local_update(self, agent: int, rnd: int, data=None, base: np.ndarray | None = None):
        """Agent `agent`'s update in round `rnd` (agent.update.LocalUpdate), trained on its own rows
        or on `data`, from the global model or from `base`."""
        from ztfl.agent.update import local_update

        t = self.training
        return local_update(self.spec, self.global_flat if base is None else base,
                            self.data.parts[agent] if data is None else data, epochs=t.epochs,
                            batch_size=t.batch_size, lr=t.lr, max_batches=t.batches,
                            seed=round_seed(self.seed, rnd, agent))

    def local_updates(self, rnd: int, data: list | None = None, base: np.ndarray | None = None) -> tuple[dict, dict]:
        """Every agent's update of round `rnd`: (delta by agent, samples by agent). `data` replaces
        the agents' rows (one entry per agent, e.g. an attacker's poisoned rows)."""
        deltas, samples = {}, {}
        for a in self.agents:
            update = self.local_update(a, rnd, None if data is None else data[a], base)
            deltas[a], samples[a] = update.delta, update.samples
        return deltas, samples

    # -- gateway ---------------------------------------------------------------------------
    def commit(self, delta: np.ndarray, scale: float = 1.0, noisy: bool = False) -> None:
        """The gateway's commit of an aggregate: added in float64, kept as float32. After a DP
        round the negative BatchNorm variances the noise made are clamped (gateway.dp)."""
        new = (self.global_flat.astype(np.float64) + scale * np.asarray(delta, np.float64)).astype(np.float32)
        if noisy:
            from ztfl.gateway.dp import clamp_variances
            from ztfl.models.spec import layout

            clamp_variances(new, layout(self._model))
        self.global_flat = new
        self.version += 1

    def centralised(self, epochs: int, rows=None) -> dict:
        """The reference a federation is measured against: the initial model trained on every
        training row in one place for `epochs` passes (no batch budget), its metrics on `rows`."""
        from ztfl.models.training import TrainConfig, evaluate, train_local

        model = self.spec.build(self.init_seed)
        t = self.training
        train_local(model, self.data.train, TrainConfig(epochs=epochs, batch_size=t.batch_size, lr=t.lr,
                                                        seed=self.init_seed))
        return evaluate(model, self.data.test if rows is None else rows)

    def model_at(self, delta: np.ndarray | None = None):
        """The model holding the global weights (plus `delta`, a candidate aggregate)."""
        from ztfl.models.params import set_flat

        set_flat(self._model, self.global_flat if delta is None else (self.global_flat + delta).astype(np.float32))
        return self._model

    def predict(self, x: np.ndarray, delta: np.ndarray | None = None) -> np.ndarray:
        from ztfl.models.training import predict

        return predict(self.model_at(delta), x)

    def evaluate(self, rows=None, delta: np.ndarray | None = None) -> dict:
        """models.training's metrics on `rows` (default: the test rows)."""
        from ztfl.models.training import evaluate

        return evaluate(self.model_at(delta), self.data.test if rows is None else rows)
