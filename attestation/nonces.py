"""Nonces the gateway issues: at least 128 bits from the OS CSPRNG, bound to a round (and
optionally to one agent), valid for a limited time, and usable once per agent."""
from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ztfl.attestation.binding import NONCE_BYTES
from ztfl.attestation.errors import ReplayedNonce, StaleNonce, UnknownNonce

MAX_OPEN_NONCES = 100_000


@dataclass
class _Issued:
    round_id: int
    agent_id: str | None
    expires_at: float
    used_by: set[str] = field(default_factory=set)


class NonceBook:
    """issue() hands out nonces; check() says whether one may be used now; consume() marks it
    used by an agent once the rest of the evidence has verified (so a forged quote cannot burn
    an honest agent's nonce)."""

    def __init__(self, ttl_s: float = 120.0, clock: Callable[[], float] = time.monotonic,
                 nonce_bytes: int = NONCE_BYTES):
        if nonce_bytes < 16:
            raise ValueError("nonces must have at least 128 bits")
        self.ttl_s = ttl_s
        self.clock = clock
        self.nonce_bytes = nonce_bytes
        self._issued: dict[bytes, _Issued] = {}
        self._lock = threading.Lock()

    def issue(self, round_id: int, agent_id: str | None = None) -> bytes:
        """A fresh nonce for `round_id`; for every agent of the round unless agent_id is given."""
        with self._lock:
            self._expire()
            if len(self._issued) >= MAX_OPEN_NONCES:
                raise RuntimeError("too many open nonces")
            nonce = secrets.token_bytes(self.nonce_bytes)
            self._issued[nonce] = _Issued(round_id, agent_id, self.clock() + self.ttl_s)
            return nonce

    def retire_round(self, round_id: int) -> None:
        """Forget every nonce of a round once it is closed: later use is stale."""
        with self._lock:
            for nonce in [n for n, i in self._issued.items() if i.round_id == round_id]:
                self._issued[nonce].expires_at = float("-inf")

    def check(self, nonce: bytes, agent_id: str, round_id: int) -> None:
        with self._lock:
            self._check_locked(nonce, agent_id, round_id)

    def consume(self, nonce: bytes, agent_id: str, round_id: int) -> None:
        with self._lock:
            self._check_locked(nonce, agent_id, round_id)
            self._issued[nonce].used_by.add(agent_id)

    def _check_locked(self, nonce: bytes, agent_id: str, round_id: int) -> None:
        issued = self._issued.get(bytes(nonce))
        if issued is None or (issued.agent_id is not None and issued.agent_id != agent_id):
            raise UnknownNonce(f"nonce {bytes(nonce)[:8].hex()}... was not issued to {agent_id}")
        if issued.round_id != round_id:
            raise StaleNonce(f"nonce was issued for round {issued.round_id}, not round {round_id}")
        if self.clock() > issued.expires_at:
            raise StaleNonce(f"nonce for round {round_id} has expired")
        if agent_id in issued.used_by:
            raise ReplayedNonce(f"nonce for round {round_id} was already used by {agent_id}")

    def _expire(self) -> None:
        # Expired nonces are kept one extra TTL so that their late use reads as stale, not unknown.
        horizon = self.clock() - self.ttl_s
        for nonce in [n for n, i in self._issued.items() if i.expires_at < horizon]:
            del self._issued[nonce]
