"""An agent's own privacy ledger: what its data has spent, round by round, with the accountant the
gateway uses (privacy.accountant), and the refusal of any round that would pass its budget.

A round is spent when the agent is about to send its noisy masked input, before it leaves: from
then on the gateway can release a sum containing it without the agent's help, so that is the last
moment a refusal still protects anything. Every input sent counts (each attempt of a round adds
fresh noise, and the gateway may release any of them).
The record is JSON; the caller gives `save` (the agent's state directory, written atomically), so
a spend is on disk before the input leaves, and a restart replays it.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import asdict

from ztfl.privacy.accountant import PrivacyLedger
from ztfl.privacy.errors import PrivacyBudgetSpent
from ztfl.privacy.params import DpParams, PrivacyBudget

TOLERANCE = 1e-9        # the gateway ledger's slack when it compares epsilon with the budget


class AgentLedger:
    def __init__(self, budget: PrivacyBudget, records: list[dict] | None = None,
                 save: Callable[[bytes], None] | None = None):
        self.budget = budget
        self._save = save
        self._ledger = PrivacyLedger(budget, on_exhausted="warn")
        self.records: list[dict] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")        # a release that happened counts, whatever the budget now
            for record in records or []:
                self._account(DpParams(**record["params"]), record["round"])

    @classmethod
    def load(cls, data: bytes | None, budget: PrivacyBudget,
             save: Callable[[bytes], None] | None = None) -> "AgentLedger":
        """The ledger written by `dump` (None: a new one); ValueError when it does not parse."""
        if data is None:
            return cls(budget, save=save)
        try:
            doc = json.loads(data)
            records = doc["rounds"]
            if not isinstance(records, list) or not all(isinstance(r.get("round"), str) for r in records):
                raise ValueError("rounds must be a list of records with a round key")
            return cls(budget, records, save)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise ValueError(f"privacy ledger unreadable ({exc}): the privacy spent so far is unknown; restore "
                             "the file rather than delete it") from exc

    def dump(self) -> bytes:
        return json.dumps({"rounds": self.records}).encode()

    @property
    def epsilon_spent(self) -> float:
        return float(self._ledger.epsilon_spent)

    def check(self, params: DpParams) -> float:
        """Epsilon after one more round with these parameters; PrivacyBudgetSpent if that passes
        the budget."""
        after = float(self._ledger.projected(params, params.min_survivors))
        if after > self.budget.epsilon + TOLERANCE:
            raise PrivacyBudgetSpent(f"this agent's privacy budget: epsilon {self.epsilon_spent:.4g} spent of "
                                     f"{self.budget.epsilon:g} at delta {self.budget.delta:g}, this round would "
                                     f"reach {after:.4g}")
        return after

    def spend(self, params: DpParams, label: str) -> float:
        """Record one noisy input (`label` says which round) and save the ledger; returns epsilon spent."""
        self.check(params)
        self._account(params, label)
        if self._save is not None:
            self._save(self.dump())
        return self.epsilon_spent

    def _account(self, params: DpParams, label: str) -> None:
        self._ledger.spend(params, params.min_survivors, len(self.records))
        self.records.append({"round": label, "params": asdict(params),
                             "epsilon_after": float(self._ledger.rounds[-1].epsilon_after)})


__all__ = ["AgentLedger"]
