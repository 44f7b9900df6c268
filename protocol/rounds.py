"""Round and attempt ids, named once for every part that needs them.

A federated round may be retried (a stage timed out, too few survivors). Each attempt gets its own
id so that nothing signed, quoted or keyed for one attempt is accepted in another:

- the attestation nonce space and the quote's round binding use `attempt_id(round, attempt)`;
- a classic round (no key epochs) uses the same number as its protocol epoch id.

At most ATTEMPTS_PER_ROUND attempts per round keep the ids of different rounds apart. The firmware
writes the same formula (ztfw/agent_wire.py, ztfw/agent.py); the parity test checks it.
"""
from __future__ import annotations

ATTEMPTS_PER_ROUND = 16


def attempt_id(round_id: int, attempt: int) -> int:
    """The id of one attempt of one round: round * 16 + attempt."""
    return round_id * ATTEMPTS_PER_ROUND + attempt
