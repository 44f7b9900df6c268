"""The gateway's side of "no quote, no seat": evidence from an agent is checked against the
round's nonce and the agent's identity key before the agent is seated.

The TPM verifier lives in the attestation package; until its verification entry point is wired
here, evidence is refused with that reason, so a gateway that requires attestation seats nobody
rather than seating unverified agents (fail closed).
"""
from __future__ import annotations

from pathlib import Path


def verify_evidence(agent_id: str, evidence: bytes, nonce: bytes, identity_pk: bytes,
                    state_dir: Path) -> tuple[bool, str]:
    if not evidence:
        return False, "empty attestation evidence"
    return False, "TPM quote verification is not wired into this gateway build"
