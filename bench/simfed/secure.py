"""Secure aggregation as a deployed gateway runs it, in this process.

The gateway side is the gateway's own code: gateway.cohort.CohortRun (the cohort's state machine,
threshold, weight unit, the samples behind a result, the DP release check before unmasking) over
gateway.secagg (the round configuration it announces: fixed point and clipping per mask width)
and the protocol's ServerSession; key epochs are gateway.epochs', the privacy ledger gateway.dp's.
Each agent is the agent's own client, agent.secagg.AgentAggregation over the protocol's
ClientSession, with its key rings (agent.keyrings) and the weight the agent daemon sends. Frames
travel as bytes between them; only MQTT, attestation and the clock are absent: a stage closes
when everyone answered, or when its deadline is declared passed because nobody did.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nacl.signing import SigningKey

from ztfl.agent.keyrings import AgentKeyrings
from ztfl.agent.secagg import AgentAggregation
from ztfl.fednet.messages import RoundKeying
from ztfl.gateway.cohort import CohortRun, CohortState, Participant, cohort_name, threshold_for
from ztfl.gateway.config import Deadlines, GatewayConfig, PrivacySpec
from ztfl.gateway.dp import CohortPrivacy
from ztfl.gateway.epochs import CohortEpochs
from ztfl.gateway.secagg import FRAC_BITS, clip_q
from ztfl.privacy.sampling import KeyedWords
from ztfl.protocol.epochs import EpochPolicy


class SecureAggregationError(RuntimeError):
    """A cohort's secure aggregation ended without a sum, or the gateway would not start it."""


@dataclass
class SecureSum:
    """What the gateway learns from one cohort: the weighted mean and the samples behind it."""
    members: list
    mean: np.ndarray            # float32, CohortRun.result_mean
    weight: int                 # samples it stands for, CohortRun.samples_aggregated
    survivors: list

    @property
    def total(self) -> np.ndarray:
        """Sum of samples x update, the form robustness.modes takes a group's sum in."""
        return self.mean.astype(np.float64) * self.weight


class GatewayAggregation:
    """A fleet of agents (any hashable ids) and one gateway. `key_policy`: key epochs as the
    gateway's config sets them (None: classic rounds, new keys every round); `privacy`: distributed
    DP of every cohort, sized for `planned_rounds`; `seed` seeds the agents' noise."""

    def __init__(self, agents, mask_bits: int = 64, variant: str = "micro", key_policy: EpochPolicy | None = None,
                 privacy: PrivacySpec | None = None, planned_rounds: int = 1, seed: int = 0):
        if mask_bits not in FRAC_BITS:
            raise ValueError(f"mask_bits must be one of {sorted(FRAC_BITS)}, got {mask_bits}")
        self.sids = {a: k + 1 for k, a in enumerate(agents)}        # protocol ids are 1..65535
        self.identities = {a: SigningKey.generate() for a in self.sids}
        self.keyrings = {a: AgentKeyrings() for a in self.sids}
        self.noise = {a: KeyedWords.from_labels(seed, sid) for a, sid in self.sids.items()}   # exact, keyed
        self.server_identity = SigningKey.generate()
        self.mask_bits, self.variant, self.key_policy = mask_bits, variant, key_policy
        self.privacy_spec, self.planned_rounds = privacy, planned_rounds
        self.cohort = cohort_name(variant, mask_bits)
        self.epochs: dict[str, CohortEpochs] = {}
        self.privacy: dict[str, CohortPrivacy] = {}

    def key_setups(self, cohort: str | None = None) -> float:
        """Key setups per agent so far (agent.keyrings' count) in `cohort`."""
        return float(np.mean([k.key_setups(cohort or self.cohort) for k in self.keyrings.values()]))

    def aggregate(self, rnd: int, updates: dict, samples: dict, cohort: str | None = None) -> SecureSum:
        """One secure-aggregation round of the agents in `updates` (float deltas) with their sample
        counts; `cohort` names it (key rings, epochs and ledgers are per cohort)."""
        name = cohort or self.cohort
        members = list(updates)
        dim = int(np.asarray(updates[members[0]]).size)
        participants = {f"agent{self.sids[a]}": Participant(f"agent{self.sids[a]}", self.sids[a],
                                                            bytes(self.identities[a].verify_key), int(samples[a]))
                        for a in members}
        threshold = threshold_for(len(members), GatewayConfig.threshold_fraction)
        dp, params = self._privacy(name, dim, len(members))
        if params is not None:
            # A round with fewer survivors than the noise counts on aborts before unmasking.
            threshold = max(threshold, params.min_survivors)
        epochs = self.epochs.setdefault(name, CohortEpochs(name, self.key_policy, set()))
        plan = epochs.plan(rnd, 0, float(rnd))
        run = CohortRun(rnd, 0, self.variant, self.mask_bits, participants, threshold, Deadlines().by_stage(), False,
                        dim, self.server_identity, epoch=plan.epoch, protocol_round=plan.protocol_round,
                        key_reuse=plan.key_reuse, revealed_keys=epochs.revealed, dp=params)
        if dp is not None:
            run.release_check = lambda survivors: dp.spend(survivors, rnd)
        clients = self._clients(name, members, plan, params, run.weight_unit, updates, samples)
        drive(run, {self.sids[a]: c for a, c in clients.items()})
        for a, client in clients.items():
            self.keyrings[a].finish(name, client.session)
        if run.aggregation is not None:
            epochs.finish(run.aggregation.server, {p.sid: agent for agent, p in participants.items()})
        if run.state is not CohortState.DONE:
            raise SecureAggregationError(f"secure aggregation of cohort {name} ({len(members)} agents) failed: "
                                         f"{run.reason}")
        by_sid = {sid: a for a, sid in self.sids.items()}
        return SecureSum(members, run.result_mean, run.samples_aggregated,
                         [by_sid[s] for s in sorted(run.aggregation.survivors())])

    def _privacy(self, name: str, dim: int, n: int):
        """The cohort's ledger and this round's noise (None, None without DP); refuses a round the
        gateway would not start."""
        if self.privacy_spec is None:
            return None, None
        dp = self.privacy.setdefault(name, CohortPrivacy(name, self.privacy_spec, self.planned_rounds))
        params = dp.params_for(dim, FRAC_BITS[self.mask_bits])
        refusal = dp.refusal_before_round(n, clip_q(self.mask_bits), self.mask_bits)
        if refusal:
            raise SecureAggregationError(f"cohort {name} sits out: {refusal}")
        return dp, params

    def _clients(self, name, members, plan, params, weight_unit, updates, samples) -> dict:
        keying = RoundKeying(plan.epoch, plan.protocol_round, plan.key_reuse)
        peers = {self.sids[a]: bytes(self.identities[a].verify_key) for a in members}
        clients = {}
        for a in members:
            keys = self.keyrings[a].keys_for(name, keying, float(plan.protocol_round))
            client = AgentAggregation(self.sids[a], self.identities[a], bytes(self.server_identity.verify_key), peers,
                                      plan.protocol_round, keys, plan.key_reuse, params, self.noise[a])
            # The weight the agent daemon sends: its rows in units of the announced weight unit.
            client.provide_input(updates[a], max(1, round(samples[a] / max(1, weight_unit))))
            clients[a] = client
        return clients


def drive(run: CohortRun, clients: dict[int, AgentAggregation]) -> None:
    """Carry frames between the gateway's cohort and its agents (by protocol id) until it closes."""
    agent_of = {p.sid: agent for agent, p in run.participants.items()}
    now = 0.0
    run.start(now)
    outgoing = run.tick(now)
    while outgoing or not run.closed:
        answers = []
        for out in outgoing:
            for sid in (clients if out.to is None else (out.to,)):
                if not clients[sid].session.stage.terminal:
                    answers += [(sid, frame) for _, frame in clients[sid].receive(out.frame)]
        if run.closed:
            return
        for sid, frame in answers:
            run.receive(agent_of[sid], frame)
        if not answers:
            now = max(now, run.stage_deadline)      # nobody answered: the stage's deadline passes
        outgoing = run.tick(now)
