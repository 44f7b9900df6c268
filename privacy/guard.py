"""What an agent checks before its update joins a round with DP, and when it spends its budget.

The round's DP is what the gateway signed into the round configuration (protocol.config.DpConfig),
never the unsigned announcement: the announcement's `dp` must say exactly the same (else
DpMismatch), the signed parameters must meet the agent's floor (privacy.floor), and the round
must fit the agent's own ledger (privacy.ledger). `admit` runs when ROUND_CONFIG arrives, before
the agent advertises keys; `spend` when its noisy masked input is about to leave.
"""
from __future__ import annotations

from ztfl.privacy.errors import DpMismatch, DpUnsupported
from ztfl.privacy.floor import PrivacyFloor
from ztfl.privacy.params import DpParams
from ztfl.protocol.config import RoundConfig


def new_ledger(floor: PrivacyFloor, data: bytes | None = None, save=None):
    """The agent ledger for this floor's budget, or None where dp-accounting is not installed
    (such an agent refuses every round with DP: it cannot count what it spends)."""
    try:
        from ztfl.privacy.ledger import AgentLedger
    except ImportError:
        return None
    return AgentLedger.load(data, floor.budget, save)


class PrivacyGuard:
    def __init__(self, floor: PrivacyFloor, ledger):
        self.floor = floor
        self.ledger = ledger            # privacy.ledger.AgentLedger, or None (no accountant)

    @classmethod
    def in_memory(cls, floor: PrivacyFloor | None = None) -> "PrivacyGuard":
        """A guard whose ledger lives as long as this object (simulations, single rounds)."""
        floor = floor or PrivacyFloor()
        return cls(floor, new_ledger(floor))

    def admit(self, announced: DpParams | None, config: RoundConfig) -> DpParams | None:
        """The round's DP as signed, once it passes the floor and fits the budget (typed refusal else)."""
        signed = DpParams.of_round(config)
        if announced != signed:
            raise DpMismatch(f"the announcement's DP ({_said(announced)}) is not the one signed in the round "
                             f"configuration ({_said(signed)})")
        self.floor.check(signed)
        if signed is not None:
            if self.ledger is None:
                raise DpUnsupported("the round asks for DP and this agent cannot account it (dp-accounting is "
                                    "not installed)")
            self.ledger.check(signed)
        return signed

    def spend(self, params: DpParams, label: str) -> float:
        """Account one noisy input about to leave; PrivacyBudgetSpent if it no longer fits."""
        return self.ledger.spend(params, label)


def _said(params: DpParams | None) -> str:
    if params is None:
        return "none"
    return (f"clip {params.clip_norm:g}, variance {params.noise_variance:.6g}, {params.min_survivors} survivors, "
            f"{params.dim} values at {params.frac_bits} fractional bits")


__all__ = ["PrivacyGuard", "new_ledger"]
