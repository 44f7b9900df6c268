"""Gateway side of distributed DP: noise sizing and the privacy ledger, on dp-accounting.

Privacy of one round. Agarwal, Kairouz and Liu (NeurIPS 2021, "The Skellam Mechanism for
Differentially Private Federated Learning") bound the Renyi DP of the Skellam mechanism with
variance mu per coordinate, L2 / L1 sensitivities D2 / D1, for every integer order a > 1:

    eps(a) <= a D2^2 / (2 mu) + min( ((2a - 1) D2^2 + 6 D1) / (4 mu^2),  3 D1 / (2 mu) )

Taking the first branch of the min gives the linear form xi + rho * a with

    rho = D2^2 / (2 mu) + D2^2 / (2 mu^2),   xi = max(0, (6 D1 - D2^2) / (4 mu^2))

which is dp-accounting's `ZCDpEvent(rho, xi)`. Because the bound holds at integer orders only,
the accountant is built with integer orders. With the mu that DP training needs (about 1e10 in
16-bit fixed point) the mu^-2 terms are below 1e-9 of rho: the mechanism is accounted as the
Gaussian of the same variance, plus that correction.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from dp_accounting import dp_event, mechanism_calibration
from dp_accounting.rdp import rdp_privacy_accountant

from ztfl.privacy.params import DpParams, PrivacyBudget

# Integer RDP orders only (see above).
ORDERS: tuple[int, ...] = tuple(range(2, 257)) + (320, 384, 448, 512, 768, 1024)


class BudgetExceeded(RuntimeError):
    """Releasing this round's sum would take the cumulative epsilon past the budget."""


class TooFewSurvivors(RuntimeError):
    """Fewer survivors than the noise sizing assumed: the sum would carry too little noise."""


def new_accountant() -> rdp_privacy_accountant.RdpAccountant:
    return rdp_privacy_accountant.RdpAccountant(orders=ORDERS)


def skellam_event(l2_sensitivity: float, l1_sensitivity: float, variance: float) -> dp_event.ZCDpEvent:
    """One release of a sum carrying Skellam noise of `variance` per coordinate."""
    d2sq = l2_sensitivity ** 2
    rho = d2sq / (2.0 * variance) + d2sq / (2.0 * variance ** 2)
    xi = max(0.0, (6.0 * l1_sensitivity - d2sq) / (4.0 * variance ** 2))
    return dp_event.ZCDpEvent(rho=rho, xi=xi)


def round_event(params: DpParams, honest: int | None = None) -> dp_event.ZCDpEvent:
    n = params.min_survivors if honest is None else honest
    return skellam_event(params.l2_sensitivity, params.l1_sensitivity, params.aggregate_variance(n))


def epsilon_for(params: DpParams, rounds: int, delta: float) -> float:
    """Epsilon after `rounds` releases with `min_survivors` honest clients each."""
    accountant = new_accountant()
    accountant.compose(dp_event.SelfComposedDpEvent(round_event(params), rounds))
    return accountant.get_epsilon(delta)


def calibrate(budget: PrivacyBudget, rounds: int, clip_norm: float, frac_bits: int, dim: int,
              min_survivors: int) -> DpParams:
    """The smallest per-client noise such that `rounds` rounds, each summing at least
    `min_survivors` honest clients, spend at most the budget. The search runs over the noise
    multiplier z (aggregate standard deviation / L2 sensitivity) with dp-accounting's calibration."""
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    probe = DpParams(clip_norm, frac_bits, dim, 1.0, min_survivors)
    d2 = probe.l2_sensitivity

    def params_for(z: float) -> DpParams:
        return DpParams(clip_norm, frac_bits, dim, max((z * d2) ** 2 / min_survivors, 1e-12), min_survivors)

    def event_for(z: float) -> dp_event.DpEvent:
        return dp_event.SelfComposedDpEvent(round_event(params_for(z)), rounds)

    z = mechanism_calibration.calibrate_dp_mechanism(
        new_accountant, event_for, budget.epsilon, budget.delta,
        bracket_interval=mechanism_calibration.LowerEndpointAndGuess(0.01, 1.0), tol=1e-6)
    return params_for(z)


@dataclass
class RoundSpend:
    round_id: int
    survivors: int
    honest_assumed: int
    epsilon_after: float


@dataclass
class PrivacyLedger:
    """Cumulative privacy loss of a training run, round by round.

    Call `spend(params, survivors, round_id)` after the masked inputs are in (the survivor set
    U3 is known) and before the unmasking shares are requested: on `BudgetExceeded` or
    `TooFewSurvivors` (with on_exhausted="stop") abort the round, and nothing was released.
    With on_exhausted="warn" the round is recorded anyway and a RuntimeWarning is issued.
    """
    budget: PrivacyBudget
    on_exhausted: str = "stop"
    rounds: list[RoundSpend] = field(default_factory=list)

    def __post_init__(self):
        if self.on_exhausted not in ("stop", "warn"):
            raise ValueError("on_exhausted is 'stop' or 'warn'")
        self._accountant = new_accountant()

    @property
    def epsilon_spent(self) -> float:
        return self._accountant.get_epsilon(self.budget.delta) if self.rounds else 0.0

    @property
    def exhausted(self) -> bool:
        return self.epsilon_spent > self.budget.epsilon

    def projected(self, params: DpParams, survivors: int) -> float:
        """Epsilon after releasing one more round with these survivors (nothing recorded)."""
        event = round_event(params, min(survivors, params.min_survivors))
        trial = new_accountant()
        trial.compose(self._accountant.ledger)
        trial.compose(event)
        return trial.get_epsilon(self.budget.delta)

    def spend(self, params: DpParams, survivors: int, round_id: int = 0) -> float:
        """Record one released sum; returns epsilon spent so far. Only `min_survivors` of the
        survivors are trusted to be honest, so more survivors never lowers the accounted cost."""
        if not isinstance(survivors, int) or survivors < 0:
            raise ValueError(f"survivors must be a non-negative int, got {survivors!r}")
        if survivors == 0:
            raise TooFewSurvivors("no survivors: nothing is released")
        honest = min(survivors, params.min_survivors)
        problems = []
        if survivors < params.min_survivors:
            problems.append((TooFewSurvivors, f"{survivors} survivors, the noise assumes at least "
                             f"{params.min_survivors}"))
        after = self.projected(params, survivors)
        if after > self.budget.epsilon + 1e-9:
            problems.append((BudgetExceeded, f"releasing round {round_id} would spend epsilon {after:.4g}, "
                             f"budget {self.budget.epsilon:g} at delta {self.budget.delta:g}"))
        if problems:
            if self.on_exhausted == "stop":
                cls, message = problems[0]
                raise cls(message)
            for _, message in problems:
                warnings.warn(message, RuntimeWarning, stacklevel=2)
        self._accountant.compose(round_event(params, honest))
        self.rounds.append(RoundSpend(round_id, survivors, honest, after))
        return after

    def summary(self) -> dict:
        """For summary.json and metrics."""
        return {"mechanism": "skellam", "accountant": "dp-accounting RDP (integer orders)",
                "epsilon_budget": self.budget.epsilon, "delta": self.budget.delta,
                "epsilon_spent": self.epsilon_spent, "rounds": len(self.rounds),
                "exhausted": self.exhausted,
                "per_round": [{"round": r.round_id, "survivors": r.survivors,
                               "honest_assumed": r.honest_assumed, "epsilon_after": r.epsilon_after}
                              for r in self.rounds]}


def gaussian_equivalent_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon of the continuous Gaussian mechanism with the same noise multiplier (for comparison)."""
    accountant = new_accountant()
    accountant.compose(dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(noise_multiplier), rounds))
    return accountant.get_epsilon(delta)


__all__ = ["BudgetExceeded", "ORDERS", "PrivacyLedger", "RoundSpend", "TooFewSurvivors", "calibrate",
           "epsilon_for", "gaussian_equivalent_epsilon", "new_accountant", "round_event",
           "skellam_event"]
