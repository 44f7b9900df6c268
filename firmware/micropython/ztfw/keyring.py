"""Key epochs on the board (docs/protocol.md 1.2, 2.7): firmware twin of protocol.epochs.

`ClientKeyring` hands out the EpochKeys for each round and makes new ones when the current
ones may not serve it: the gateway started a new epoch id, the keys' lifetime (rounds or
seconds, `EpochPolicy`) is over, the round id does not increase, the round is classic, or the
last round may have revealed the mask secret. No clock is read here: the caller passes `now`
(seconds of a monotonic clock).

The keys live in RAM only. A reboot means new keys: epoch secrets are never written to flash,
so a stolen board's flash holds no pairwise masks of past or current rounds.
"""
import os

from ztfw.secagg_keys import EpochKeys

MAX_U32 = 0xFFFFFFFF

# Why the keyring made new keys (the same reasons and wording as protocol.epochs.RekeyReason).
FIRST = "first keys"
NEW_EPOCH = "the gateway started a new epoch"
ROUNDS = "the key lifetime in rounds is over"
SECONDS = "the key lifetime in seconds is over"
EXPOSED = "the last round may have revealed the mask secret"
ROUND_NOT_INCREASING = "the round id did not increase"
NO_REUSE = "a round without key reuse gets keys of its own"


class EpochPolicy:
    """One key setup lives at most `max_rounds` rounds and `max_seconds` seconds;
    `max_rounds = 1` is per-round key agreement."""

    def __init__(self, max_rounds=100, max_seconds=24 * 3600.0):
        if not isinstance(max_rounds, int) or isinstance(max_rounds, bool) or max_rounds < 1:
            raise ValueError("max_rounds must be an int >= 1, got %r" % (max_rounds,))
        if (isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float))
                or not max_seconds > 0 or max_seconds == float("inf")):
            raise ValueError("max_seconds must be a positive number, got %r" % (max_seconds,))
        self.max_rounds = max_rounds
        self.max_seconds = max_seconds

    @classmethod
    def per_round(cls):
        return cls(max_rounds=1)


def _u32(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_U32:
        raise ValueError("%s must be a u32, got %r" % (name, value))


class ClientKeyring:
    """The agent's epoch keys across rounds.

        keys = keyring.keys_for(epoch, round_id, now, key_reuse)
        session = ClientSession(client_id, seed, directory, keys, round_id)
        ...                                   # run the round
        keyring.finish(session)               # always, whatever the outcome

    `rekeys` lists (round id, reason) of recent key generations (bounded: the board keeps
    the last few only).
    """

    MAX_HISTORY = 16

    def __init__(self, policy, randbytes=os.urandom):
        self.policy = policy
        self.randbytes = randbytes
        self.keys = None
        # Survives this client's own re-keying: a peer key whose secret it helped reveal stays refused.
        self.revealed_peer_keys = set()
        self.rounds_used = 0
        self.started_at = 0.0
        self.last_round = None
        self.exposed = False
        self.single_use = False
        self.rekeys = []

    def _reason(self, epoch, round_id, now, key_reuse):
        if self.keys is None:
            return FIRST
        if self.exposed:
            return EXPOSED
        if not key_reuse or self.single_use:
            return NO_REUSE
        if epoch != self.keys.epoch:
            return NEW_EPOCH
        if self.last_round is not None and round_id <= self.last_round:
            return ROUND_NOT_INCREASING
        if self.rounds_used >= self.policy.max_rounds:
            return ROUNDS
        if now - self.started_at >= self.policy.max_seconds:
            return SECONDS
        return None

    def keys_for(self, epoch, round_id, now, key_reuse=True):
        """The keys for round `round_id` of gateway epoch `epoch` (both from the ROUND_CONFIG
        header; `key_reuse` from its configuration); new keys when the current ones may not
        serve it. Keys of a round without key reuse serve that round only."""
        _u32("epoch", epoch)
        _u32("round_id", round_id)
        reason = self._reason(epoch, round_id, now, key_reuse)
        if reason is not None:
            # Drop the old secrets first: the board never holds two key sets at once.
            self.keys = None
            self.keys = EpochKeys.generate(epoch, self.randbytes, self.revealed_peer_keys)
            self.rounds_used = 0
            self.started_at = now
            self.exposed = False
            self.rekeys.append((round_id, reason))
            if len(self.rekeys) > self.MAX_HISTORY:
                self.rekeys.pop(0)
        self.single_use = not key_reuse
        self.rounds_used += 1
        self.keys.uses += 1
        self.last_round = round_id
        return self.keys

    def finish(self, session):
        """Record how a round ended; True when the keys' epoch ended because of it."""
        if session.keys is not self.keys:
            raise ValueError("the session did not use this keyring's current keys")
        if session.keys_exposed:
            self.exposed = True
        return self.exposed
