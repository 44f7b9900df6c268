"""What an agent checks of a round announcement before it uses any key in it (docs/wire.md):
the gateway's certificate (role gateway, this federation, the gateway id the agent serves),
every participant's certificate (role agent, certified to the participant's own agent id, valid,
not revoked, no key or id twice), and its own seat under its own certified key.

The root signature of a participant's certificate is verified when the client first uses that
participant's key (agent.secagg.PeerKeys): a client uses only its neighbours' keys, and with the
complete graph that is everyone. Each TrustStore verifies a certificate's signature once and keeps
it: later rounds of a key epoch (and later epochs) recheck only validity and revocation.
"""
from __future__ import annotations

from dataclasses import dataclass

from ztfl.fednet.messages import RoundAnnounce
from ztfl.protocol import certs


@dataclass(frozen=True)
class Seat:
    sid: int
    server_key: bytes
    peers: dict[int, bytes]                     # protocol id -> certified identity key
    certificates: dict[int, certs.Certificate]

    def checker(self, store: certs.TrustStore):
        """PeerKeys' check: the root signature of a participant's certificate, before its key is used."""
        return lambda sid: store.check_signature(self.certificates[sid])


def check_roster(store: certs.TrustStore, ann: RoundAnnounce, now: int) -> dict[int, certs.Certificate]:
    """Every participant's certificate, checked but for the signature (see check_participants)."""
    if not ann.certified:
        raise certs.Uncertified(f"round {ann.round}.{ann.attempt} announced with bare keys (version 1): "
                                "this agent takes part only with certified identities")
    return certs.check_participants(store, ann.seats(), now)


def seat(store: certs.TrustStore, ann: RoundAnnounce, gateway: str, agent_id: str, own_key: bytes, now: int,
         roster: dict[int, certs.Certificate] | None = None) -> Seat | None:
    """This agent's seat in a certified announcement, or None if it is not seated. Raises a
    protocol.certs.CertificateError (or WireError) naming what is refused. `roster`: the result of
    check_roster for this announcement, when it is shared by several agents (simulations)."""
    roster = check_roster(store, ann, now) if roster is None else roster
    sid = next((p[1] for p in ann.participants if p[0] == agent_id), None)
    if sid is None:
        return None
    if roster[sid].public_key != own_key:
        raise certs.IdentityMismatch(f"{agent_id} is seated under another key than its own")
    server = store.check(certs.Certificate.decode(ann.server_certificate()), "gateway", gateway, now)
    if ann.server_pk and ann.server_pk != server.public_key.hex():
        raise certs.IdentityMismatch("server_pk is not the key the gateway's certificate certifies")
    return Seat(sid, server.public_key, {s: c.public_key for s, c in roster.items()}, roster)
