"""An agent's privacy floor: the least differential privacy it lets its update join, fixed when it
is provisioned (`privacy_floor:` of agent.yaml) and never taken from the round (docs/privacy.md).

The round's DP parameters are the ones the gateway signed into the round configuration; the
floor bounds them from the agent's side: at least `min_survivors` honest survivors counted on, an
L2 clip of at most `max_clip_norm`, and a noise multiplier (the summed noise of those survivors
over the L2 sensitivity) of at least `min_noise_multiplier`. `epsilon` and `delta` are the budget
of the agent's own ledger (privacy.ledger) over its whole life.
"""
from __future__ import annotations

from dataclasses import dataclass

from ztfl.config import setting
from ztfl.privacy.errors import ClipAboveFloor, DpRequired, NoiseBelowFloor, SurvivorsBelowFloor
from ztfl.privacy.params import DpParams, PrivacyBudget


@dataclass(frozen=True)
class PrivacyFloor:
    """`privacy_floor:`. The default noise floor (0.7) refuses rounds that cost more than about
    epsilon 7 each at delta 1e-5 (a round of the announced variance 1e-300 costs millions), and
    the default budget (epsilon 10 at delta 1e-5 for the agent's life) is the `ztfl bench dp`
    run at epsilon 8 with room to spare. `require_dp: true` also refuses rounds without DP."""
    min_noise_multiplier: float = setting(0.7, above=0)
    max_clip_norm: float = setting(10.0, above=0)
    min_survivors: int = setting(3, at_least=2)
    require_dp: bool = False
    epsilon: float = setting(10.0, above=0)
    delta: float = setting(1e-5, above=0, below=1)

    @property
    def budget(self) -> PrivacyBudget:
        return PrivacyBudget(float(self.epsilon), float(self.delta))

    def check(self, params: DpParams | None) -> None:
        """Raises the typed refusal of the first limit the round's (signed) DP breaks."""
        if params is None:
            if self.require_dp:
                raise DpRequired("the round has no differential privacy; this agent takes part only with DP "
                                 "(privacy_floor.require_dp)")
            return
        if params.min_survivors < self.min_survivors:
            raise SurvivorsBelowFloor(f"the noise counts on {params.min_survivors} honest survivors, this agent on "
                                      f"at least {self.min_survivors} (privacy_floor.min_survivors)")
        if not params.clip_norm <= self.max_clip_norm:
            raise ClipAboveFloor(f"L2 clip {params.clip_norm:g}, this agent allows at most {self.max_clip_norm:g} "
                                 "(privacy_floor.max_clip_norm)")
        z = params.noise_multiplier()
        if not z >= self.min_noise_multiplier:
            raise NoiseBelowFloor(f"noise multiplier {z:.4g} (variance {params.noise_variance:.6g} per agent over "
                                  f"{params.min_survivors} survivors), this agent needs at least "
                                  f"{self.min_noise_multiplier:g} (privacy_floor.min_noise_multiplier)")


__all__ = ["PrivacyFloor"]
