"""The gateway's certified identity and what it does with certificates (docs/deployment.md).

The gateway signs its rounds with the key its own certificate (role gateway) certifies. It relays
certificates, it does not vouch for keys: each agent's hello carries its certificate, which the
gateway checks against the same trust anchor (an agent every peer would refuse is counted and
gets no seat) and puts, unchanged, into the round announcements next to its own. It broadcasts the newest revocation
list (retained), reloads it when `ztfl provision revoke` replaces the file, and, holding the
online intermediate's key, renews it before its next_update with the same serials.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from nacl.signing import SigningKey

from ztfl.fednet.messages import Hello, WireError, certificate_text
from ztfl.fednet.trust import TrustFileError, adopt_revocations, load_identity, save_revocations
from ztfl.gateway.config import GatewayTrustFiles
from ztfl.protocol import certs
from ztfl.protocol.certs import next_number
from ztfl.protocol.refusal import Refusal

log = logging.getLogger("ztfl.gateway.trust")
RELOAD_EVERY_S = 5.0


class GatewayCertificates:
    def __init__(self, files: GatewayTrustFiles, federation: str, gateway: str, now: int):
        self.files = files
        self.identity = load_identity(files, federation, "gateway", gateway, now)
        self.intermediate: SigningKey | None = None
        if files.intermediate_key:
            seed = Path(files.intermediate_key).read_bytes()
            if len(seed) != 32:
                raise TrustFileError(f"trust.intermediate_key: {files.intermediate_key} must hold a 32-byte seed")
            self.intermediate = SigningKey(seed)
        self._published: bytes | None = None
        self._mtime: float | None = None
        self._next_look = 0.0

    @property
    def store(self) -> certs.TrustStore:
        return self.identity.trust

    @property
    def certificate_text(self) -> str:
        return certificate_text(self.identity.certificate_bytes)

    def refusal(self, msg: Hello, identity_pk: bytes, now: int) -> Refusal | None:
        """Why an agent may not be seated, if so: no certificate, one that does not certify this
        agent id and key as an agent of this federation, or one expired or revoked since."""
        try:
            raw = msg.certificate_bytes()
            if not raw:
                raise certs.Uncertified(f"{msg.agent_id} sent no certificate with its hello")
            cert = self.store.check(certs.Certificate.decode(raw), "agent", msg.agent_id, now)
            if cert.public_key != identity_pk:
                raise certs.IdentityMismatch(f"{msg.agent_id}'s certificate certifies another key than its hello's")
        except (certs.CertificateError, WireError) as exc:
            return exc
        return None

    def revocations_update(self, now: int, monotonic: float) -> bytes | None:
        """The signed revocation list to broadcast when it changed (file replaced, or renewed)."""
        if monotonic < self._next_look or not self.files.revocations:
            return None
        self._next_look = monotonic + RELOAD_EVERY_S
        path = Path(self.files.revocations)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        if mtime != self._mtime:
            self._mtime = mtime
            if adopt_revocations(self.store, path, now):
                log.info("revocation list %d loaded from %s", self.store.revocations.revocations.number, path)
        self._renew(path, now)
        held = self.store.revocations
        payload = held.encode() if held is not None else None
        if payload == self._published:
            return None
        self._published = payload
        return payload

    def republish(self) -> bytes | None:
        """The held list again (after a broker restart lost the retained copy)."""
        held = self.store.revocations
        return held.encode() if held is not None else None

    def _renew(self, path: Path, now: int) -> None:
        held = self.store.revocations
        if self.intermediate is None or held is None:
            return
        rl = held.revocations
        span = max(1, rl.next_update - rl.issued_at)
        if rl.next_update - now > span // 2 or held.intermediate.public_key != bytes(self.intermediate.verify_key):
            return
        fresh = certs.SignedRevocations(held.intermediate, certs.sign_revocations(
            self.intermediate, number=next_number(rl, now), issued_at=now, next_update=now + span, revoked=rl.revoked))
        self.store.accept_revocations(fresh, now)
        save_revocations(path, fresh)
        self._mtime = os.stat(path).st_mtime
        log.info("revocation list renewed as number %d (valid until %d)", fresh.revocations.number, now + span)
