"""Cumulative drift tracking across rounds, against slow poisoning.

A slow-poisoning agent shifts its update a little (alpha < 0.1 of its norm) in the same
direction every round: each round it looks like any other agent, but its deviations from
the aggregate add up while honest noise partly cancels. The tracker keeps, per agent, the
running sum of (update - aggregate) in a fixed random projection (`sketch_dim` values, so
memory does not grow with the model) and flags an agent whose mean cumulative deviation
||sum_t d_t|| / t stands out from the cohort's (above both median + z * 1.4826 * MAD and
min_ratio x median) for
`patience` consecutive rounds after `min_rounds` rounds of history.

Honest agents with persistently different data (strong non-IID) also accumulate deviation;
the cohort comparison keeps them in unless they are outliers among their peers.
Needs per-agent updates: `privacy: none` only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ztfl.robustness.result import RobustnessError, as_stack


class DriftConfigError(RobustnessError):
    """The drift tracker was fed something inconsistent."""


@dataclass
class _AgentTrack:
    total: np.ndarray
    rounds: int = 0
    over: int = 0


@dataclass
class DriftTracker:
    dim: int
    sketch_dim: int = 256
    z: float = 3.0
    min_ratio: float = 1.25
    min_rounds: int = 5
    patience: int = 2
    seed: int = 0
    tracks: dict = field(default_factory=dict)
    flagged: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.dim < 1 or self.sketch_dim < 1:
            raise DriftConfigError("dim and sketch_dim must be positive")
        rng = np.random.default_rng(self.seed)
        k = min(self.sketch_dim, self.dim)
        # Small models are tracked exactly; larger ones through a Gaussian projection
        # (Johnson-Lindenstrauss: norms kept up to a small factor).
        self._proj = None if k == self.dim else rng.normal(0, 1 / np.sqrt(k), size=(k, self.dim))

    def _sketch(self, v: np.ndarray) -> np.ndarray:
        return v if self._proj is None else self._proj @ v

    def observe(self, agent_ids, updates, aggregate) -> dict:
        """Feed one round. Returns the agents newly flagged this round, with the reason."""
        stack = as_stack(updates)
        if stack.shape[1] != self.dim:
            raise DriftConfigError(f"updates have {stack.shape[1]} values, tracker expects {self.dim}")
        agent_ids = list(agent_ids)
        if len(agent_ids) != len(stack) or len(set(agent_ids)) != len(agent_ids):
            raise DriftConfigError("one distinct agent id per update is needed")
        agg = np.asarray(aggregate, np.float64).reshape(-1)
        for aid, row in zip(agent_ids, stack):
            track = self.tracks.get(aid)
            d = self._sketch(row - agg)
            if track is None:
                track = self.tracks[aid] = _AgentTrack(np.zeros_like(d))
            track.total += d
            track.rounds += 1
        present = [aid for aid in agent_ids if self.tracks[aid].rounds >= self.min_rounds]
        new = {}
        if len(present) < 3:
            return new
        drift = np.array([self.drift(aid) for aid in present])
        med = float(np.median(drift))
        mad = float(np.median(np.abs(drift - med)))
        # Both a robust z-score and a relative margin: with a dozen agents the MAD is itself
        # noisy, and a cumulative figure re-tests the same agent every round.
        cut = max(med + self.z * 1.4826 * mad, self.min_ratio * med)
        for aid, value in zip(present, drift):
            track = self.tracks[aid]
            track.over = track.over + 1 if value > cut else 0
            if track.over >= self.patience and aid not in self.flagged:
                reason = (f"cumulative drift {value:.4g} above {cut:.4g} for {track.over} rounds "
                          f"(after {track.rounds} rounds)")
                self.flagged[aid] = reason
                new[aid] = reason
        return new

    def drift(self, agent_id) -> float:
        track = self.tracks[agent_id]
        return float(np.linalg.norm(track.total)) / max(track.rounds, 1)
