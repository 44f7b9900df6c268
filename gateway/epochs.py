"""The gateway's key epochs, per cohort (docs/protocol.md 2.7, docs/deployment.md).

For every attempt of a cohort's round the gateway chooses the protocol's epoch id and round id
and whether the round reuses the epoch's keys:

* Protocol round ids are `round * 256 + attempt`: a retried attempt gets a new id, and ids keep
  increasing across gateway restarts (the registry numbers attempts), so an agent that reuses its
  keys never sees a round id twice (reused keys with a repeated id would repeat pairwise masks).
* Epoch ids come from protocol.epochs.EpochSchedule; a schedule made when the gateway starts
  begins at the protocol round id of its first round, above every epoch id an earlier process
  used, so agents holding keys from before a restart make new ones.
* A cohort without a policy runs classic rounds announced as agents without key epochs expect
  them: epoch `round * 16 + attempt`, round id `round`, no key fields in the announcement.

Mask public keys whose secret a classic round reconstructed are refused for good; they are kept
in `revealed_keys.json` in the state directory (public keys only: no epoch secret is ever stored).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ztfl.fednet.files import atomic_write_bytes
from ztfl.protocol.epochs import MAX_U32, EpochPolicy, EpochSchedule
from ztfl.protocol.rounds import attempt_id

ATTEMPT_SLOTS = 256


@dataclass(frozen=True)
class RoundPlan:
    epoch: int
    protocol_round: int
    key_reuse: bool
    announced: bool           # the announcement carries epoch, protocol_round and key_reuse


class CohortEpochs:
    """One cohort's epoch schedule and what its rounds did to the agents' keys."""

    def __init__(self, cohort: str, policy: EpochPolicy | None, revealed: set[bytes]):
        self.cohort = cohort
        self.policy = policy
        self.revealed = revealed
        self.schedule: EpochSchedule | None = None
        self.plan_now: RoundPlan | None = None
        self.last_keys: dict[str, bytes] = {}      # agent -> the mask public key it advertised last
        self.key_setups = 0                        # advertisements of keys not seen from that agent before

    def plan(self, rnd: int, attempt: int, now: float) -> RoundPlan:
        if self.policy is None:
            self.plan_now = RoundPlan(attempt_id(rnd, attempt), rnd, False, False)
            return self.plan_now
        if not 0 <= attempt < ATTEMPT_SLOTS:
            raise ValueError(f"attempt {attempt} of round {rnd}: key epochs number at most "
                             f"{ATTEMPT_SLOTS} attempts per round")
        protocol_round = rnd * ATTEMPT_SLOTS + attempt
        if protocol_round > MAX_U32:
            raise ValueError(f"round {rnd}: protocol round ids are exhausted")
        if self.schedule is None:
            self.schedule = EpochSchedule(self.policy, first_epoch=protocol_round)
            self.schedule.revealed_keys = self.revealed
        epoch = self.schedule.epoch_for(protocol_round, now)
        self.plan_now = RoundPlan(epoch, protocol_round, self.policy.max_rounds > 1, True)
        return self.plan_now

    def finish(self, server, agent_of_sid: dict[int, str]) -> dict:
        """Record a closed round (its protocol.server.ServerSession); returns the round's key detail."""
        plan = self.plan_now
        if self.schedule is not None:
            ended = self.schedule.finish(server)
        else:
            # Classic: a dropped client's secret was reconstructed (the session added its key to
            # `revealed` itself).
            ended = sorted(server.dropped) if server.result is not None and not server.config.key_reuse else []
        new, kept = [], []
        for sid, entry in sorted(server.adverts.items()):
            agent = agent_of_sid.get(sid, str(sid))
            (kept if self.last_keys.get(agent) == entry.s_pk else new).append(agent)
            self.last_keys[agent] = entry.s_pk
        self.key_setups += len(new)
        return {"epoch": plan.epoch, "protocol_round": plan.protocol_round, "key_reuse": plan.key_reuse,
                "new_keys": sorted(new), "kept_keys": sorted(kept),
                "epoch_ended": sorted(agent_of_sid.get(s, str(s)) for s in ended)}

    def status(self, now: float) -> dict:
        plan = self.plan_now
        out = {"classic": self.policy is None, "key_setups": self.key_setups, "revealed_keys": len(self.revealed)}
        if plan is not None:
            out.update(epoch=plan.epoch, protocol_round=plan.protocol_round, key_reuse=plan.key_reuse)
        if self.policy is not None:
            out.update(max_rounds=self.policy.max_rounds, max_seconds=self.policy.max_seconds)
        if self.schedule is not None and self.schedule.started_at is not None:
            out.update(rounds_in_epoch=self.schedule.rounds_in_epoch,
                       age_s=round(now - self.schedule.started_at, 3))
        return out


class KeyEpochs:
    """Every cohort's CohortEpochs, and the revealed mask keys on disk."""

    def __init__(self, state_dir: Path, policy_of):
        self.path = Path(state_dir) / "revealed_keys.json"
        self.policy_of = policy_of                  # cohort name -> EpochPolicy | None
        self.revealed = self._load()
        self.saved = self._document()
        self.cohorts: dict[str, CohortEpochs] = {}

    def _document(self) -> dict:
        return {c: sorted(k.hex() for k in keys) for c, keys in sorted(self.revealed.items()) if keys}

    def _load(self) -> dict[str, set[bytes]]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            out = {}
            for cohort, keys in doc.items():
                if not isinstance(keys, list) or not all(isinstance(k, str) and len(k) == 64 for k in keys):
                    raise ValueError(f"cohort {cohort!r:.40}: not a list of 32-byte hex keys")
                out[cohort] = {bytes.fromhex(k) for k in keys}
            return out
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"{self.path}: {exc}") from exc

    def cohort(self, name: str) -> CohortEpochs:
        if name not in self.cohorts:
            self.cohorts[name] = CohortEpochs(name, self.policy_of(name), self.revealed.setdefault(name, set()))
        return self.cohorts[name]

    def finish(self, name: str, server, agent_of_sid: dict[int, str]) -> dict:
        detail = self.cohort(name).finish(server, agent_of_sid)
        # The server session adds to the set as it reconstructs; written once per round.
        doc = self._document()
        if doc != self.saved:
            atomic_write_bytes(self.path, json.dumps(doc).encode())
            self.saved = doc
        return detail

    def status(self, now: float) -> dict:
        return {name: c.status(now) for name, c in sorted(self.cohorts.items())}
