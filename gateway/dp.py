"""Distributed DP at the gateway, per cohort (docs/privacy.md, docs/deployment.md): the noise the
agents are told to add, the privacy ledger, and its record on disk.

The noise is sized once per cohort with privacy.accountant.calibrate for the model's dimension
and the cohort's fixed-point bits, then rounded as the round configuration signs it (the agents
add and account exactly that). A round's release is accounted with the actual number of
survivors when the gateway is about to ask for the unmasking shares (the last moment at which a
refusal costs no privacy); with mode `stop` a round that would pass the budget (or has fewer
survivors than the noise assumes) is aborted there, and a cohort whose next round could not fit
the budget sits out from then on. Every spend is written to `privacy.json` before the unmasking
request goes out, and replayed into the ledger when the gateway starts again.
"""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ztfl.fednet.files import atomic_write_bytes
from ztfl.models.spec import flat_to_tensors
from ztfl.gateway.config import PrivacySpec
from ztfl.privacy.accountant import BudgetExceeded, PrivacyLedger, TooFewSurvivors, calibrate, epsilon_for
from ztfl.privacy.params import DpParams, PrivacyBudget

log = logging.getLogger("ztfl.gateway.privacy")
TOLERANCE = 1e-9          # the ledger's own slack when it compares epsilon with the budget


class CohortPrivacy:
    def __init__(self, name: str, spec: PrivacySpec, planned_rounds: int):
        self.name = name
        self.spec = spec
        self.planned_rounds = planned_rounds
        self.budget = PrivacyBudget(float(spec.epsilon), float(spec.delta))
        self.ledger = PrivacyLedger(self.budget, on_exhausted=spec.mode)
        self.params: DpParams | None = None
        self.stopped = ""                          # why this cohort sits out for good
        self.last_round: dict | None = None        # the last spend: survivors, epsilon after
        self._status: dict | None = None           # status() is read often, changes only here

    def params_for(self, dim: int, frac_bits: int) -> DpParams:
        if self.params is None or (self.params.dim, self.params.frac_bits) != (dim, frac_bits):
            spec = self.spec
            if spec.round_epsilon is not None:
                target, rounds = PrivacyBudget(float(spec.round_epsilon), self.budget.delta), 1
            else:
                target, rounds = self.budget, self.planned_rounds
            # As signed in the round configuration (whole fixed-point clip, even integer variance),
            # so that the agents, their ledgers and this one all count the same parameters.
            self.params = calibrate(target, rounds, float(spec.clip_norm), frac_bits, dim,
                                    spec.min_survivors).signed()
            self._status = None
            log.info("cohort %s: Skellam noise of variance %.6g per agent and coordinate (noise multiplier %.4g "
                     "over %d honest survivors); epsilon %.4g per round at delta %g", self.name,
                     self.params.noise_variance, self.params.noise_multiplier(), spec.min_survivors,
                     epsilon_for(self.params, 1, self.budget.delta), self.budget.delta)
        return self.params

    def refusal_before_round(self, participants: int, clip_q: int, mask_bits: int) -> str:
        """Why the cohort may not run a round now ('' if it may)."""
        params = self.params
        if self.stopped:
            return self.stopped
        if participants < params.min_survivors:
            return (f"{participants} agents, the noise counts on {params.min_survivors} honest survivors "
                    "(privacy.min_survivors)")
        if not params.headroom_ok(participants, clip_q, mask_bits):
            return f"the noise does not fit {mask_bits}-bit words: use 64-bit masks or a larger epsilon"
        projected = self.ledger.projected(params, params.min_survivors)
        if projected > self.budget.epsilon + TOLERANCE:
            message = (f"privacy budget exhausted: epsilon spent {self.ledger.epsilon_spent:.6g} of "
                       f"{self.budget.epsilon:g} at delta {self.budget.delta:g}; one more round would reach "
                       f"{projected:.6g}")
            if self.spec.mode == "stop":
                self.stopped, self._status = message, None
                return message
            log.warning("cohort %s: %s (mode warn: the round goes on)", self.name, message)
        return ""

    def spend(self, survivors: int, rnd: int) -> str:
        """Account one release; returns a refusal ('' when the release may go ahead)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                after = self.ledger.spend(self.params, survivors, rnd)
            except (BudgetExceeded, TooFewSurvivors) as exc:
                return f"privacy: {exc}"
        for w in caught:
            log.warning("cohort %s: %s (mode warn: released anyway)", self.name, w.message)
        self.last_round = {"round": rnd, "survivors": survivors, "epsilon_after": after}
        self._status = None
        return ""

    def replay(self, record: dict) -> None:
        """A release accounted before a restart: it happened, whatever the budget says now."""
        self.ledger.on_exhausted = "warn"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.ledger.spend(DpParams(**record["params"]), record["survivors"], record["round"])
        finally:
            self.ledger.on_exhausted = self.spec.mode
            self._status = None

    def status(self) -> dict:
        if self._status is None:
            self._status = _plain(self._make_status())
        return self._status

    def _make_status(self) -> dict:
        summary = self.ledger.summary()
        out = {"epsilon_spent": summary["epsilon_spent"], "epsilon_budget": summary["epsilon_budget"],
               "delta": summary["delta"], "rounds": summary["rounds"], "exhausted": summary["exhausted"],
               "mode": self.spec.mode, "min_survivors": self.spec.min_survivors, "clip_norm": self.spec.clip_norm,
               "stopped": self.stopped, "mechanism": summary["mechanism"], "accountant": summary["accountant"],
               "per_round": summary["per_round"]}
        if self.params is not None:
            out["noise_variance"] = self.params.noise_variance
            out["noise_multiplier"] = self.params.noise_multiplier()
            out["epsilon_per_round"] = epsilon_for(self.params, 1, self.budget.delta)
            out["dim"], out["frac_bits"] = self.params.dim, self.params.frac_bits
        return out


def _plain(value):
    """numpy scalars (the accountant returns them) as Python numbers, for JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def clamp_variances(flat: np.ndarray, shape_table) -> int:
    """The noise lands on every float of an update, BatchNorm running variances included; a
    negative variance would make the model undefined (NaN on export). They are clamped to 0:
    post-processing of the released sum, which costs no privacy. Returns how many were clamped."""
    clamped = 0
    for name, values in flat_to_tensors(flat, shape_table).items():
        if name.endswith("running_var"):
            negative = values < 0
            clamped += int(negative.sum())
            values[negative] = 0.0
    return clamped


class PrivacyBook:
    """The ledgers of every cohort with DP, and `privacy.json`: one record per accounted release."""

    def __init__(self, state_dir: Path, spec_of, planned_rounds: int):
        self.path = Path(state_dir) / "privacy.json"
        self.spec_of = spec_of                     # cohort name -> PrivacySpec | None
        self.planned_rounds = planned_rounds
        self.records = self._load()
        self.cohorts: dict[str, CohortPrivacy] = {}

    def _load(self) -> dict[str, list[dict]]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or not all(isinstance(v, list) for v in doc.values()):
                raise ValueError("not an object of lists")
            for records in doc.values():
                for r in records:
                    DpParams(**r["params"])
                    if not all(isinstance(r[k], int) for k in ("round", "attempt", "survivors")) \
                            or r["survivors"] < 1:
                        raise ValueError("round, attempt and survivors must be integers, survivors >= 1")
            return doc
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"{self.path}: privacy record unreadable ({exc}): the privacy spent so far is "
                             "unknown; restore the file rather than delete it") from exc

    def cohort(self, name: str) -> CohortPrivacy | None:
        """The cohort's privacy state, or None if it runs without DP."""
        if name not in self.cohorts:
            spec = self.spec_of(name)
            if spec is None:
                return None
            state = self.cohorts[name] = CohortPrivacy(name, spec, self.planned_rounds)
            for record in self.records.get(name, []):
                state.replay(record)
            if state.ledger.rounds:
                log.info("cohort %s: %d earlier releases replayed, epsilon spent %.6g", name,
                         len(state.ledger.rounds), state.ledger.epsilon_spent)
        return self.cohorts[name]

    def spend(self, name: str, survivors: int, rnd: int, attempt: int) -> str:
        state = self.cohorts[name]
        refusal = state.spend(survivors, rnd)
        if not refusal:
            self.records.setdefault(name, []).append(
                {"round": rnd, "attempt": attempt, "survivors": survivors, "params": asdict(state.params)})
            # On disk before the unmasking request leaves: a crash cannot forget a release.
            atomic_write_bytes(self.path, json.dumps(self.records).encode())
        return refusal

    def status(self) -> dict:
        return {name: c.status() for name, c in sorted(self.cohorts.items())}
