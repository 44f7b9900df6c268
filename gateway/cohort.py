"""One cohort's part of one round, as an explicit state machine with a deadline per stage.

    ANNOUNCED --(attestation verified or not required)--> AGGREGATING --(last stage)--> DONE
        \\                                                  \\
         `---------------- below threshold / protocol abort ---`--> FAILED

While AGGREGATING, the secure-aggregation server session (protocol package) decides what each
stage needs; this class owns the clock: when a stage's deadline passes, whoever has not answered
is a dropout from then on, and the session closes the stage with those who did. Before the
unmasking request goes out, `release_check` (distributed DP: the privacy ledger) may refuse the
release, which aborts the round with nothing unmasked.
"""
from __future__ import annotations

import enum
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ztfl.gateway.secagg import CohortAggregation, Outgoing
from ztfl.privacy.params import DpParams
from ztfl.protocol.errors import InvalidTransition, UnknownSender
from ztfl.protocol.stages import Stage
from ztfl.protocol.rounds import attempt_id

log = logging.getLogger("ztfl.gateway.cohort")


def weight_unit(samples, mask_bits: int, n: int) -> int:
    """Samples per unit of secure-aggregation weight: the biggest agent's weight must fit."""
    return max(1, math.ceil(max(samples) / CohortAggregation.max_weight(mask_bits, n)))


class CohortState(enum.Enum):
    ANNOUNCED = "announced"
    AGGREGATING = "aggregating"
    DONE = "done"
    FAILED = "failed"


ALLOWED = {
    CohortState.ANNOUNCED: {CohortState.AGGREGATING, CohortState.FAILED},
    CohortState.AGGREGATING: {CohortState.DONE, CohortState.FAILED},
    CohortState.DONE: set(),
    CohortState.FAILED: set(),
}


class CohortTransitionError(RuntimeError):
    pass


def cohort_name(variant: str, mask_bits: int) -> str:
    return f"{variant}-{mask_bits}"


def threshold_for(n: int, fraction: float) -> int:
    """At least the active-security bound t > 2n/3 (protocol.config), at least 2."""
    return min(n, max(2, math.ceil(fraction * n), 2 * n // 3 + 1))


@dataclass
class Participant:
    agent_id: str
    sid: int                   # protocol client id (u16, stable per agent)
    identity_pk: bytes
    samples: int
    evidence_ok: bool = False
    outcome: str = "seated"
    reason: str = ""


@dataclass
class CohortRun:
    round: int
    attempt: int
    variant: str
    mask_bits: int
    participants: dict[str, Participant]
    threshold: int
    deadlines_s: dict
    require_attestation: bool
    dim: int
    server_identity: object
    nonce: bytes = field(default_factory=lambda: os.urandom(32))
    state: CohortState = CohortState.ANNOUNCED
    stage_deadline: float = 0.0
    reason: str = ""
    aggregation: CohortAggregation | None = None
    result_mean: np.ndarray | None = None
    result_weight: int = 0
    # Key epochs (gateway.epochs.RoundPlan): None keeps the classic ids round * 16 + attempt, round.
    epoch: int | None = None
    protocol_round: int | None = None
    key_reuse: bool = False
    revealed_keys: set | None = None
    # Distributed DP (None: none): signed into the round configuration, every agent weighs 1, and
    # the release is accounted before unmasking: release_check(survivors) returns why the release
    # is refused ('' to go ahead).
    dp: DpParams | None = None
    release_check: Callable[[int], str] | None = None
    privacy_spent: dict | None = None      # the accounted release: survivors, epsilon after
    # Whether a frame arrived or the offline set changed since completion was last checked: the
    # check costs O(cohort) and ticks come once per batch of messages, so it runs only on news.
    _news: bool = field(default=True, repr=False)
    _gone: frozenset = field(default=frozenset(), repr=False)

    @property
    def name(self) -> str:
        return cohort_name(self.variant, self.mask_bits)

    def _move(self, new: CohortState, reason: str = "") -> None:
        if new not in ALLOWED[self.state]:
            raise CohortTransitionError(f"cohort {self.name}: {self.state.value} -> {new.value} not allowed")
        self.state = new
        if reason:
            self.reason = reason

    @property
    def epoch_id(self) -> int:
        return attempt_id(self.round, self.attempt) if self.epoch is None else self.epoch

    @property
    def protocol_round_id(self) -> int:
        return self.round if self.protocol_round is None else self.protocol_round

    @property
    def samples_aggregated(self) -> int:
        """Samples behind the aggregate, to combine cohorts of one variant: with DP every agent
        weighs 1, so the survivors' announced sample counts stand in for the weights."""
        if self.dp is not None:
            survivors = self.aggregation.survivors() if self.aggregation else set()
            return sum(p.samples for p in self.participants.values() if p.sid in survivors)
        return self.result_weight * self.weight_unit

    @property
    def weight_unit(self) -> int:
        return weight_unit([p.samples for p in self.participants.values()], self.mask_bits, len(self.participants))

    def start(self, now: float) -> None:
        self.stage_deadline = now + self.deadlines_s["attest"]
        if not self.require_attestation:
            for p in self.participants.values():
                p.evidence_ok = True

    def attested(self, agent_id: str, ok: bool, reason: str) -> None:
        p = self.participants.get(agent_id)
        if p is None or self.state is not CohortState.ANNOUNCED:
            return
        p.evidence_ok = ok
        if not ok:
            p.outcome, p.reason = "refused", reason

    def _begin_aggregation(self, now: float) -> list[Outgoing]:
        seated = {p.sid: p for p in self.participants.values() if p.evidence_ok}
        for p in self.participants.values():
            if not p.evidence_ok and p.outcome == "seated":
                p.outcome, p.reason = "refused", "no attestation evidence before the deadline"
        if len(seated) < self.threshold:
            self._move(CohortState.FAILED, f"{len(seated)} attested agents, threshold {self.threshold}")
            return []
        self.aggregation = CohortAggregation(
            round_id=self.protocol_round_id, epoch=self.epoch_id, mask_bits=self.mask_bits,
            dim=self.dim, threshold=self.threshold, max_clients=len(self.participants),
            identities={sid: p.identity_pk for sid, p in seated.items()}, server_identity=self.server_identity,
            key_reuse=self.key_reuse, revealed_keys=self.revealed_keys, dp=self.dp)
        self._move(CohortState.AGGREGATING)
        self.stage_deadline = now + self.deadlines_s[self.aggregation.deadline_key]
        return self.aggregation.start()

    def tick(self, now: float, offline: set[str] = frozenset()) -> list[Outgoing]:
        """Advance on completion or deadline; returns frames to send. Participants in `offline`
        are not waited for."""
        if self.state is CohortState.ANNOUNCED:
            everyone = all(p.evidence_ok or p.outcome == "refused" for p in self.participants.values())
            if everyone or now >= self.stage_deadline:
                return self._begin_aggregation(now)
            return []
        if self.state is not CohortState.AGGREGATING:
            return []
        agg = self.aggregation
        gone = frozenset(self.participants[a].sid for a in offline if a in self.participants)
        if gone != self._gone:
            self._gone, self._news = gone, True
        if now < self.stage_deadline and not self._news:
            return []
        self._news = False
        if not (now >= self.stage_deadline or agg.stage_complete(gone)):
            return []
        self._news = True                  # the next stage may be complete already
        closing = agg.server.stage
        out = agg.close_stage()
        if closing is Stage.CONSISTENCY_CHECK and agg.server.stage is Stage.UNMASKING and self.release_check:
            refusal = self.release_check(len(agg.server.survivors))
            if refusal:
                out = agg.abort(refusal)
        if agg.failed:
            self._finish_outcomes()
            self._move(CohortState.FAILED, agg.failure_reason)
        elif agg.finished:
            self.result_mean, self.result_weight = agg.result()
            self._finish_outcomes()
            self._move(CohortState.DONE)
        else:
            self.stage_deadline = now + self.deadlines_s[agg.deadline_key]
        return out

    def receive(self, agent_id: str, frame: bytes) -> None:
        """A protocol frame from a participant; ProtocolError propagates to the caller's counter."""
        p = self.participants.get(agent_id)
        if p is None:
            raise UnknownSender(f"{agent_id} is not in cohort {self.name}")
        if self.state is not CohortState.AGGREGATING:
            raise InvalidTransition(f"cohort {self.name} is {self.state.value}, not aggregating")
        self.aggregation.receive(p.sid, frame)
        self._news = True

    def _finish_outcomes(self) -> None:
        if self.aggregation is None:
            return
        survivors = self.aggregation.survivors()
        by_sid = {p.sid: p for p in self.participants.values()}
        for sid, p in by_sid.items():
            if p.outcome == "refused":
                continue
            if sid in survivors:
                p.outcome, p.reason = "aggregated", ""
            else:
                p.outcome = "dropped"
                p.reason = self.aggregation.dropped_reason(sid)

    @property
    def closed(self) -> bool:
        return self.state in (CohortState.DONE, CohortState.FAILED)

    def outcomes(self) -> dict[str, tuple[str, str]]:
        return {a: (p.outcome, p.reason) for a, p in self.participants.items()}

