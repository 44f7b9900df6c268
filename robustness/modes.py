"""Privacy modes, the checks that refuse impossible combinations, and the gateway's aggregator.

What the gateway learns in each mode:
  secagg   only the cohort's sum (one secure aggregation per cohort). Defences: client-side
           norm clipping (`clip_norm`, applied by honest agents before masking), attested
           identity (upstream of this package) and the validation guard.
  grouped  the cohort is split at random into groups of at least `group_size` agents, one
           secure aggregation per group; the gateway learns the group sums (and group sizes)
           and runs a robust rule over the group means.
  none     every agent's update (a trusted fog, as in the ZTA-FL paper); any rule, per agent,
           plus cumulative drift tracking.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ztfl.robustness.result import AggregateResult, RobustnessError, UpdateShapeError, as_stack
from ztfl.robustness.rules import (CoordinateMedian, FedAvg, Flame, GeometricMedian, Krum, TrimmedMean,
                              multi_krum)

PRIVACY_MODES = ("secagg", "grouped", "none")
# Rules that look at individual inputs (agents, or groups in grouped mode).
INPUT_RULES = ("krum", "multi-krum", "median", "trimmed-mean", "geomed", "flame", "shap", "shap-mad")
DEFENSES = ("fedavg", *INPUT_RULES)
ALLOWED = {
    "secagg": ("fedavg",),
    "grouped": DEFENSES,
    "none": DEFENSES,
}


class PrivacyConfigError(RobustnessError):
    """A privacy mode and a defence (or their parameters) cannot work together."""


@dataclass
class AggregatorConfig:
    """`expected_byzantine` is the fraction of agents the defence is sized for (Krum's f).
    `cohort_size` is the number of agents expected per round (validated against group needs).
    `guard_margin`: refuse an aggregate whose validation metric falls more than this below
    the current model's (None = no guard). `drift`: cumulative drift tracking (none only)."""
    privacy: str = "secagg"
    defense: str = "fedavg"
    cohort_size: int = 20
    group_size: int = 5
    expected_byzantine: float = 0.3
    trim_beta: float = 0.2
    multi_krum_m: int | None = None
    flame_noise: float = 0.001
    clip_norm: float | None = None
    guard_margin: float | None = None
    drift: bool = False
    seed: int = 0

    @property
    def n_inputs(self) -> int:
        """How many inputs the robust rule sees per round."""
        return self.cohort_size // self.group_size if self.privacy == "grouped" else self.cohort_size


def validate(config: AggregatorConfig, *, has_shap_model: bool = False) -> None:
    """Raise PrivacyConfigError with the reason when the combination cannot work."""
    c = config
    if c.privacy not in PRIVACY_MODES:
        raise PrivacyConfigError(f"unknown privacy mode {c.privacy!r}; known: {', '.join(PRIVACY_MODES)}")
    if c.defense not in DEFENSES:
        raise PrivacyConfigError(f"unknown defense {c.defense!r}; known: {', '.join(DEFENSES)}")
    if isinstance(c.cohort_size, bool) or not isinstance(c.cohort_size, int) or c.cohort_size < 1:
        raise PrivacyConfigError(f"cohort_size must be a positive integer, got {c.cohort_size!r}")
    if not 0 <= c.expected_byzantine < 0.5:
        raise PrivacyConfigError(f"expected_byzantine must be in [0, 0.5), got {c.expected_byzantine}")
    if c.defense not in ALLOWED[c.privacy]:
        raise PrivacyConfigError(
            f"defense {c.defense!r} needs each agent's update, which privacy: secagg hides "
            f"(the gateway learns only the cohort sum); use privacy: grouped ({c.defense} over "
            "group sums) or privacy: none, or keep secagg with fedavg + clip_norm + guard_margin")
    if c.drift and c.privacy != "none":
        raise PrivacyConfigError(
            f"drift tracking follows each agent across rounds; privacy: {c.privacy} never shows "
            "an agent's update (grouped reshuffles groups every round): use privacy: none")
    if c.clip_norm is not None and not c.clip_norm > 0:
        raise PrivacyConfigError(f"clip_norm must be positive, got {c.clip_norm}")
    if c.guard_margin is not None and not c.guard_margin >= 0:
        raise PrivacyConfigError(f"guard_margin must be >= 0, got {c.guard_margin}")
    if c.privacy == "grouped":
        if isinstance(c.group_size, bool) or not isinstance(c.group_size, int) or c.group_size < 2:
            raise PrivacyConfigError(f"group_size must be an integer >= 2 (a group of one is "
                                     f"that agent's update in clear), got {c.group_size!r}")
        if c.cohort_size < 2 * c.group_size:
            raise PrivacyConfigError(
                f"privacy: grouped with {c.cohort_size} agents and groups of at least {c.group_size} "
                "makes one group: that is privacy: secagg")
    if c.defense.startswith("shap") and not has_shap_model:
        raise PrivacyConfigError(f"defense {c.defense!r} needs a model and a reference batch to "
                                 "compute SHAP attributions (attributions_of)")
    if c.defense != "fedavg":
        rule = _rule(c, attributions_of=lambda v: v)
        need = rule.min_inputs()
        if c.n_inputs < need:
            what = (f"{c.n_inputs} groups ({c.cohort_size} agents in groups of >= {c.group_size})"
                    if c.privacy == "grouped" else f"{c.n_inputs} agents")
            raise PrivacyConfigError(f"defense {c.defense!r} sized for {c.expected_byzantine:.0%} "
                                     f"Byzantine inputs needs at least {need} inputs, the round has {what}")


def byzantine_inputs(config: AggregatorConfig) -> int:
    """Krum's f: the expected Byzantine fraction of the rule's inputs, rounded down.
    In grouped mode a group is Byzantine when it holds an attacker; f counts groups at the
    same fraction, which understates it when attackers spread over many groups."""
    return int(np.floor(config.expected_byzantine * config.n_inputs))


def _rule(c: AggregatorConfig, attributions_of=None):
    f = byzantine_inputs(c)
    if c.defense == "fedavg":
        return FedAvg()
    if c.defense == "krum":
        return Krum(f=f)
    if c.defense == "multi-krum":
        return multi_krum(f, c.multi_krum_m or max(1, c.n_inputs - f))
    if c.defense == "median":
        return CoordinateMedian()
    if c.defense == "trimmed-mean":
        return TrimmedMean(beta=c.trim_beta)
    if c.defense == "geomed":
        return GeometricMedian()
    if c.defense == "flame":
        return Flame(noise_lambda=c.flame_noise, seed=c.seed)
    if c.defense in ("shap", "shap-mad"):
        from ztfl.robustness.shap_stability import ShapStability

        return ShapStability(attributions_of, threshold="mean-2sd" if c.defense == "shap" else "median-mad")
    raise PrivacyConfigError(f"unknown defense {c.defense!r}")


def split_groups(agent_ids, group_size: int, rng: np.random.Generator) -> list[list]:
    """A random partition into floor(n / group_size) groups, every group at least group_size
    agents (the remainder spread one by one)."""
    ids = list(agent_ids)
    n_groups = len(ids) // group_size
    if n_groups < 1:
        raise PrivacyConfigError(f"{len(ids)} agents cannot fill one group of {group_size}")
    order = rng.permutation(len(ids))
    groups = [[] for _ in range(n_groups)]
    for k, pos in enumerate(order):
        groups[k % n_groups].append(ids[pos])
    return groups


class Aggregator:
    """The gateway's entry point. Updates are deltas from the current global model.

    none:    aggregate(updates, weights, agent_ids)
    grouped: groups = split(agent_ids); run one secure aggregation per group;
             aggregate_groups(group_sums, group_weights, groups)
    secagg:  aggregate_sum(total, total_weight)
    A refused aggregate (validation guard) comes back as a zero update with
    info["guard"]["accepted"] = False: the global model stays as it was.
    """

    def __init__(self, config: AggregatorConfig, attributions_of: Callable | None = None,
                 evaluate: Callable[[np.ndarray], float] | None = None):
        validate(config, has_shap_model=attributions_of is not None)
        if config.guard_margin is not None and evaluate is None:
            raise PrivacyConfigError("guard_margin needs evaluate(update) -> validation metric")
        self.config = config
        self.rule = _rule(config, attributions_of)
        self.evaluate = evaluate
        self.rng = np.random.default_rng(config.seed)
        self.drift = None

    # -- privacy: none ------------------------------------------------------------------
    def aggregate(self, updates, weights=None, agent_ids=None) -> AggregateResult:
        if self.config.privacy != "none":
            raise PrivacyConfigError(f"per-agent updates are not available in privacy: {self.config.privacy}")
        stack = as_stack(updates)
        ids = list(range(len(stack))) if agent_ids is None else list(agent_ids)
        if len(ids) != len(stack):
            raise UpdateShapeError(f"{len(ids)} agent ids for {len(stack)} updates")
        keep = np.arange(len(stack))
        drift_excluded = {}
        if self.config.drift and self.drift is not None:
            drift_excluded = {i: f"drift: {self.drift.flagged[a]}" for i, a in enumerate(ids)
                              if a in self.drift.flagged}
            keep = np.array([i for i in keep if i not in drift_excluded], dtype=np.int64)
        w = None if weights is None else np.asarray(weights, np.float64)[keep]
        inner = self.rule.aggregate(stack[keep], w)
        excluded = dict(drift_excluded)
        excluded.update({int(keep[j]): r for j, r in inner.excluded.items()})
        result = AggregateResult(inner.aggregate, dict(sorted(excluded.items())), self.rule.name, inner.info)
        if self.config.drift:
            from ztfl.robustness.drift import DriftTracker

            if self.drift is None:
                self.drift = DriftTracker(dim=stack.shape[1], seed=self.config.seed)
            result.info["drift_flagged"] = self.drift.observe(ids, stack, result.aggregate)
        return self._guarded(result)

    # -- privacy: grouped ---------------------------------------------------------------
    def split(self, agent_ids) -> list[list]:
        if self.config.privacy != "grouped":
            raise PrivacyConfigError(f"groups exist only in privacy: grouped, not {self.config.privacy}")
        groups = split_groups(agent_ids, self.config.group_size, self.rng)
        if len(groups) < self.rule.min_inputs():
            raise PrivacyConfigError(f"{len(agent_ids)} agents make {len(groups)} groups; "
                                     f"{self.rule.name} needs {self.rule.min_inputs()}")
        return groups

    def aggregate_groups(self, group_sums, group_weights, groups=None) -> AggregateResult:
        """group_sums[k] = sum of weight_i x update_i over group k (what its secure aggregation
        returns); group_weights[k] = the group's total weight."""
        if self.config.privacy != "grouped":
            raise PrivacyConfigError(f"group sums are for privacy: grouped, not {self.config.privacy}")
        sums = as_stack(group_sums)
        gw = np.asarray(group_weights, np.float64).reshape(-1)
        if gw.shape != (len(sums),) or np.any(~np.isfinite(gw)) or np.any(gw <= 0):
            raise UpdateShapeError("one positive total weight per group is needed")
        means = sums / gw[:, None]
        result = self.rule.aggregate(means, gw)
        result.rule = self.rule.name
        if groups is not None:
            result.info["excluded_agents"] = sorted(a for k in result.excluded for a in groups[k])
        return self._guarded(result)

    # -- privacy: secagg ----------------------------------------------------------------
    def aggregate_sum(self, total, total_weight: float) -> AggregateResult:
        if self.config.privacy != "secagg":
            raise PrivacyConfigError(f"a single cohort sum is privacy: secagg, not {self.config.privacy}")
        total = as_stack([total])[0]
        if not np.isfinite(total_weight) or total_weight <= 0:
            raise UpdateShapeError(f"total weight must be positive, got {total_weight}")
        return self._guarded(AggregateResult((total / total_weight).astype(np.float32), {}, "fedavg"))

    # -- validation guard (every mode) --------------------------------------------------
    def _guarded(self, result: AggregateResult) -> AggregateResult:
        if self.config.guard_margin is None:
            return result
        baseline = float(self.evaluate(np.zeros_like(result.aggregate)))
        candidate = float(self.evaluate(result.aggregate))
        accepted = candidate >= baseline - self.config.guard_margin
        result.info["guard"] = {"accepted": accepted, "baseline": baseline, "candidate": candidate,
                                "margin": self.config.guard_margin}
        if not accepted:
            result.aggregate = np.zeros_like(result.aggregate)
        return result


def make_aggregator(attributions_of: Callable | None = None,
                    evaluate: Callable[[np.ndarray], float] | None = None, **config) -> Aggregator:
    """make_aggregator(privacy="grouped", defense="median", cohort_size=20, group_size=5, ...)."""
    unknown = set(config) - set(AggregatorConfig.__dataclass_fields__)
    if unknown:
        raise PrivacyConfigError(f"unknown aggregator options: {', '.join(sorted(unknown))}")
    return Aggregator(AggregatorConfig(**config), attributions_of, evaluate)
