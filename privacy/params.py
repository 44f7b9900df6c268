"""The parameters of the distributed Skellam mechanism and what they imply.

Units: the protocol's fixed-point domain, q = round(x * 2^frac_bits). One client's contribution
(weight 1) is an integer vector whose L2 norm is at most the clip norm times 2^f plus the
rounding error sqrt(dim)/2; that bound is the L2 sensitivity of the sum for adding or removing
one client. Every client adds Skellam noise of variance `noise_variance` per coordinate, so the
sum over n honest clients carries Skellam noise of variance n * noise_variance (a sum of
independent Skellam variables is Skellam).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ztfl.protocol.config import DpConfig, RoundConfig


def _positive(name: str, value, integer: bool = False) -> None:
    ok_type = (isinstance(value, int) and not isinstance(value, bool)) if integer else \
        isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok_type or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive {'int' if integer else 'number'}, got {value!r}")


@dataclass(frozen=True)
class PrivacyBudget:
    """The (epsilon, delta) a whole training run may spend."""
    epsilon: float
    delta: float

    def __post_init__(self):
        _positive("epsilon", self.epsilon)
        if not (isinstance(self.delta, (int, float)) and 0 < self.delta < 1):
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")


@dataclass(frozen=True)
class DpParams:
    clip_norm: float          # L2 bound of one client's update, in model units
    frac_bits: int            # the round configuration's fixed-point bits
    dim: int                  # coordinates of the update
    noise_variance: float     # Skellam variance per coordinate added by each client
    min_survivors: int        # honest clients whose noise the guarantee counts on

    def __post_init__(self):
        _positive("clip_norm", self.clip_norm)
        _positive("dim", self.dim, integer=True)
        _positive("noise_variance", self.noise_variance)
        _positive("min_survivors", self.min_survivors, integer=True)
        if not isinstance(self.frac_bits, int) or not 0 <= self.frac_bits <= 62:
            raise ValueError(f"frac_bits must be an int in 0..62, got {self.frac_bits!r}")

    @property
    def scale(self) -> float:
        return float(2 ** self.frac_bits)

    @property
    def l2_sensitivity(self) -> float:
        """Largest L2 norm of one client's rounded, clipped integer update."""
        return self.clip_norm * self.scale + math.sqrt(self.dim) / 2.0

    @property
    def l1_sensitivity(self) -> float:
        # Integer vectors: |v|_1 <= |v|_2^2; any vector: |v|_1 <= sqrt(d) |v|_2.
        d2 = self.l2_sensitivity
        return min(math.sqrt(self.dim) * d2, d2 * d2)

    def aggregate_variance(self, honest: int) -> float:
        return honest * self.noise_variance

    def noise_multiplier(self, honest: int | None = None) -> float:
        """Standard deviation of the summed noise over the L2 sensitivity (the Gaussian analogue)."""
        n = self.min_survivors if honest is None else honest
        return math.sqrt(self.aggregate_variance(n)) / self.l2_sensitivity

    @property
    def poisson_mean(self) -> int:
        """Each coordinate's noise is Poisson(m) - Poisson(m) with this integer m (never less
        variance than `noise_variance`)."""
        return max(1, math.ceil(self.noise_variance / 2))

    def signed(self) -> "DpParams":
        """These parameters as the round configuration carries them (`to_config`): the clip rounded
        down to whole fixed-point units, the variance up to an even integer, both conservative.
        The gateway announces, signs and accounts these, so that every party counts the same."""
        return DpParams.from_config(self.to_config(), self.dim, self.frac_bits)

    def to_config(self) -> DpConfig:
        """The DP record of the round configuration (docs/protocol.md 1.6)."""
        return DpConfig(min_survivors=self.min_survivors, l2_clip_q=max(1, math.floor(self.clip_norm * self.scale)),
                        poisson_mean=self.poisson_mean)

    @classmethod
    def from_config(cls, record: DpConfig, dim: int, frac_bits: int) -> "DpParams":
        return cls(record.l2_clip_q / 2 ** frac_bits, frac_bits, dim, 2.0 * record.poisson_mean,
                   record.min_survivors)

    @classmethod
    def of_round(cls, config: RoundConfig) -> "DpParams | None":
        """The DP a signed round configuration asks for, or None for a round without DP."""
        return None if config.dp is None else cls.from_config(config.dp, config.dim, config.frac_bits)

    def headroom_ok(self, max_clients: int, clip_q: int, mask_bits: int, tail_sigmas: float = 40.0) -> bool:
        """Whether the noisy sum of max_clients inputs stays inside the signed range of 2^mask_bits
        (a Skellam tail beyond 40 standard deviations has probability far below 2^-100)."""
        spread = tail_sigmas * math.sqrt(self.aggregate_variance(max_clients))
        return max_clients * clip_q + spread < 2 ** (mask_bits - 1) - 1
