"""Why an agent keeps its update out of a round's DP sum: one typed refusal per cause, each with
its own stable reason code (protocol.refusal), raised before anything of the round leaves it.

They are ConfigurationErrors: what is refused is the round's configuration, signed or announced.
"""
from __future__ import annotations

from ztfl.protocol.errors import ConfigurationError


class PrivacyRefused(ConfigurationError):
    """The round's differential privacy is not one this agent takes part in."""

    reason = "privacy_refused"


class NoiseBelowFloor(PrivacyRefused):
    """The signed noise gives a noise multiplier below the agent's provisioned floor."""

    reason = "dp_noise_below_floor"


class ClipAboveFloor(PrivacyRefused):
    """The signed L2 clip is above the agent's provisioned maximum."""

    reason = "dp_clip_above_floor"


class SurvivorsBelowFloor(PrivacyRefused):
    """The signed noise counts on fewer honest survivors than the agent's provisioned minimum."""

    reason = "dp_survivors_below_floor"


class DpRequired(PrivacyRefused):
    """The round has no DP, and this agent takes part only in rounds with DP."""

    reason = "dp_required"


class DpMismatch(PrivacyRefused):
    """The announcement's `dp` differs from the DP signed in the round configuration."""

    reason = "dp_announcement_mismatch"


class DpUnsupported(PrivacyRefused):
    """The round asks for DP this agent cannot provide (no noise sampler, or no accountant)."""

    reason = "dp_unsupported"


class PrivacyBudgetSpent(PrivacyRefused):
    """Contributing to this round would take the agent's own ledger past its budget."""

    reason = "dp_budget_spent"


__all__ = ["ClipAboveFloor", "DpMismatch", "DpRequired", "DpUnsupported", "NoiseBelowFloor",
           "PrivacyBudgetSpent", "PrivacyRefused", "SurvivorsBelowFloor"]
