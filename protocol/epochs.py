"""Key epochs: one X25519 key setup serves many rounds (docs/protocol.md, 1.2 and 2.7).

Two explicit, clock-free state machines; the caller passes `now` (seconds, any monotonic clock):

* `ClientKeyring` (agent, firmware): hands out the EpochKeys for a round, and makes new ones
  when the epoch id changes, when its own lifetime (rounds or seconds) is over, when a round id
  does not increase, or when the previous round may have revealed its mask secret.
* `EpochSchedule` (gateway): chooses the epoch id of each round by the same kind of policy and
  remembers every mask public key whose secret a round reconstructed.

Why the round id must increase: with reused keys the pairwise mask of (u, v) in a round depends
only on (epoch key, round id). Two inputs of u masked under the same round id would differ by
exactly the difference of the inputs once the server removes the (revealed) self-masks.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from enum import Enum
from typing import Callable

from ztfl.protocol.keys import EpochKeys

MAX_U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class EpochPolicy:
    """How long one key setup lives: at most `max_rounds` rounds and `max_seconds` seconds.
    `max_rounds = 1` is per-round key agreement (the Bonawitz / SecAgg+ baseline)."""
    max_rounds: int = 100
    max_seconds: float = 24 * 3600.0

    def __post_init__(self):
        if not isinstance(self.max_rounds, int) or isinstance(self.max_rounds, bool) or self.max_rounds < 1:
            raise ValueError(f"max_rounds must be an int >= 1, got {self.max_rounds!r}")
        if not (isinstance(self.max_seconds, (int, float)) and math.isfinite(self.max_seconds)
                and self.max_seconds > 0):
            raise ValueError(f"max_seconds must be a positive number, got {self.max_seconds!r}")

    def expired(self, rounds_used: int, started_at: float, now: float) -> bool:
        return rounds_used >= self.max_rounds or now - started_at >= self.max_seconds

    @classmethod
    def per_round(cls) -> "EpochPolicy":
        return cls(max_rounds=1)


class RekeyReason(Enum):
    FIRST = "first keys"
    NEW_EPOCH = "the gateway started a new epoch"
    ROUNDS = "the key lifetime in rounds is over"
    SECONDS = "the key lifetime in seconds is over"
    EXPOSED = "the last round may have revealed the mask secret"
    ROUND_NOT_INCREASING = "the round id did not increase"
    NO_REUSE = "a round without key reuse gets keys of its own"


class ClientKeyring:
    """The agent's epoch keys across rounds.

        keys = keyring.keys_for(epoch_from_round_config_header, round_id, now)
        session = ClientSession(client_id, identity, directory, keys, round_id)
        ...                                   # run the round
        keyring.finish(session)               # always, whatever the outcome

    `rekeys` lists (round id, RekeyReason) for every key generation.
    """

    def __init__(self, policy: EpochPolicy, randbytes: Callable[[int], bytes] = os.urandom):
        self.policy = policy
        self.randbytes = randbytes
        self.keys: EpochKeys | None = None
        self.revealed_peer_keys: set[bytes] = set()   # survives this client's own re-keying
        self.rounds_used = 0
        self.started_at = 0.0
        self.last_round: int | None = None
        self.exposed = False
        self.single_use = False
        self.rekeys: list[tuple[int, RekeyReason]] = []

    def _reason(self, epoch: int, round_id: int, now: float, key_reuse: bool) -> RekeyReason | None:
        if self.keys is None:
            return RekeyReason.FIRST
        if self.exposed:
            return RekeyReason.EXPOSED
        if not key_reuse or self.single_use:
            return RekeyReason.NO_REUSE
        if epoch != self.keys.epoch:
            return RekeyReason.NEW_EPOCH
        if self.last_round is not None and round_id <= self.last_round:
            return RekeyReason.ROUND_NOT_INCREASING
        if self.rounds_used >= self.policy.max_rounds:
            return RekeyReason.ROUNDS
        if now - self.started_at >= self.policy.max_seconds:
            return RekeyReason.SECONDS
        return None

    def keys_for(self, epoch: int, round_id: int, now: float, key_reuse: bool = True) -> EpochKeys:
        """The keys to use in round `round_id` of gateway epoch `epoch` (both from the ROUND_CONFIG
        frame's header; `key_reuse` from its configuration); new keys when the current ones may
        not serve it. Keys of a round without key reuse serve that round only."""
        for name, value in (("epoch", epoch), ("round_id", round_id)):
            if not isinstance(value, int) or not 0 <= value <= MAX_U32:
                raise ValueError(f"{name} must be a u32, got {value!r}")
        reason = self._reason(epoch, round_id, now, key_reuse)
        if reason is not None:
            self.keys = EpochKeys.generate(epoch, self.randbytes, self.revealed_peer_keys)
            self.rounds_used = 0
            self.started_at = now
            self.exposed = False
            self.rekeys.append((round_id, reason))
        self.single_use = not key_reuse
        self.rounds_used += 1
        self.keys.uses += 1
        self.last_round = round_id
        return self.keys

    def finish(self, session) -> bool:
        """Record how a round ended; returns True when the keys' epoch ended because of it."""
        if session.keys is not self.keys:
            raise ValueError("the session did not use this keyring's current keys")
        if session.keys_exposed:
            self.exposed = True
        return self.exposed


class EpochSchedule:
    """The gateway's epoch ids and the mask keys revealed so far.

        epoch = schedule.epoch_for(round_id, now)
        server = ServerSession(config, identity, directory, epoch, round_id,
                               revealed_keys=schedule.revealed_keys)
        ...
        ended = schedule.finish(server)       # clients whose epoch the round ended

    `revealed_keys` is kept across epochs: a client that comes back with a revealed key is
    refused whatever the epoch id.
    """

    def __init__(self, policy: EpochPolicy, first_epoch: int = 1):
        if not 0 <= first_epoch <= MAX_U32:
            raise ValueError("epoch ids are u32")
        self.policy = policy
        self.epoch = first_epoch
        self.rounds_in_epoch = 0
        self.started_at: float | None = None
        self.last_round: int | None = None
        self.revealed_keys: set[bytes] = set()
        self.ended: dict[int, list[int]] = {}      # round id -> clients whose epoch ended

    def epoch_for(self, round_id: int, now: float) -> int:
        if self.last_round is not None and round_id <= self.last_round:
            raise ValueError(f"round id {round_id} does not increase (last {self.last_round}): "
                             "reused keys would repeat pairwise masks")
        if self.started_at is None:
            self.started_at = now
        elif self.policy.expired(self.rounds_in_epoch, self.started_at, now):
            if self.epoch == MAX_U32:
                raise ValueError("epoch ids exhausted")
            self.epoch += 1
            self.rounds_in_epoch = 0
            self.started_at = now
        self.rounds_in_epoch += 1
        self.last_round = round_id
        return self.epoch

    def finish(self, server) -> list[int]:
        """The clients whose mask secret the round reconstructed (their epoch is over); none in a
        key-reuse round, where only round keys are given."""
        reconstructed = server.result is not None and not server.config.key_reuse
        ended = sorted(server.dropped) if reconstructed else []
        self.revealed_keys.update(server.adverts[d].s_pk for d in ended)
        self.ended[server.round_id] = ended
        return ended
