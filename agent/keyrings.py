"""An agent's key epochs: one protocol.epochs.ClientKeyring per cohort, in memory only.

Epoch secrets never touch the disk: an agent that restarts generates new keys, which the gateway
accepts in any round (docs/protocol.md 2.7). Each round takes its keys from the announcement's
epoch id, protocol round id and key-reuse flag, and is finished whatever its outcome, so a round
that may have revealed the mask secret ends the epoch before the next one.
"""
from __future__ import annotations

import logging

from ztfl.fednet.messages import RoundKeying
from ztfl.protocol.epochs import ClientKeyring, EpochPolicy
from ztfl.protocol.keys import EpochKeys

log = logging.getLogger("ztfl.agent.keys")


class AgentKeyrings:
    def __init__(self, policy: EpochPolicy | None = None):
        # The agent's own ceiling on a key's lifetime; the gateway's schedule usually ends epochs first.
        self.policy = policy or EpochPolicy()
        self.by_cohort: dict[str, ClientKeyring] = {}

    def keys_for(self, cohort: str, keying: RoundKeying, now: float) -> EpochKeys:
        """Keys for one round; ValueError if the ids are not u32."""
        ring = self.by_cohort.setdefault(cohort, ClientKeyring(self.policy))
        before = len(ring.rekeys)
        keys = ring.keys_for(keying.epoch, keying.protocol_round, now, keying.key_reuse)
        if len(ring.rekeys) != before and keying.key_reuse:
            log.info("cohort %s: new keys for epoch %d (%s)", cohort, keying.epoch, ring.rekeys[-1][1].value)
        return keys

    def finish(self, cohort: str, session) -> bool:
        """Record how a round ended (any ClientSession of this cohort's keyring); True when it ended
        the keys' epoch. A session whose keys were already replaced changes nothing."""
        ring = self.by_cohort.get(cohort)
        if ring is None or session.keys is not ring.keys:
            return False
        ended = ring.finish(session)
        if ended:
            log.info("cohort %s: round %d may have revealed the mask secret: its epoch ends", cohort,
                     session.round_id)
        return ended

    def key_setups(self, cohort: str) -> int:
        ring = self.by_cohort.get(cohort)
        return len(ring.rekeys) if ring else 0
