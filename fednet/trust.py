"""The certified-identity files of one role (written by `ztfl provision`, docs/deployment.md):
the root CA's public key (the trust anchor), this role's certificate and the identity key it
certifies, and the newest signed revocation list, read into a protocol.certs.TrustStore.

An agent or a gateway checks its own certificate when it starts, so a bundle of another
federation, role or device, or a key that does not match, stops it with one line naming the file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from ztfl.fednet.files import atomic_write_bytes
from ztfl.protocol import certs

log = logging.getLogger("ztfl.trust")


class TrustFileError(ValueError):
    """A trust file is missing, unreadable or does not belong to this role; the message says which."""


@dataclass(frozen=True)
class TrustFiles:
    """`trust:` of agent.yaml and gateway.yaml: paths of this role's bundle files."""
    anchor: str                         # root.pub: hex of the root CA's Ed25519 public key
    certificate: str                    # identity.crt: this role's certificate
    identity_key: str                   # identity.key: the 32-byte Ed25519 seed it certifies (0600)
    revocations: str | None = None      # revocations.bin: intermediate certificate + revocation list


@dataclass
class CertifiedIdentity:
    key: SigningKey
    certificate: certs.Certificate
    trust: certs.TrustStore

    @property
    def certificate_bytes(self) -> bytes:
        return self.certificate.encode()


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TrustFileError(f"trust.{what}: cannot read {path}: {exc.strerror or exc}") from None


def read_anchor(path: str | Path) -> bytes:
    text = _read(path, "anchor").decode("ascii", "replace").strip()
    try:
        anchor = bytes.fromhex(text)
    except ValueError:
        anchor = b""
    if len(anchor) != certs.KEY_BYTES:
        raise TrustFileError(f"trust.anchor: {path} must hold the root's Ed25519 public key as 64 hex digits")
    return anchor


def read_revocations(path: str | Path) -> certs.SignedRevocations:
    try:
        return certs.SignedRevocations.decode(_read(path, "revocations"))
    except certs.CertificateError as exc:
        raise TrustFileError(f"trust.revocations: {path}: {exc}") from None


def adopt_revocations(store: certs.TrustStore, path: str | Path | None, now: int) -> bool:
    """Take the revocation list stored at `path` if it exists, is genuine and is newer than the
    one held; a stale or expired copy on disk is skipped with a warning (a fresh one comes from
    the gateway's retained broadcast)."""
    if path is None or not Path(path).exists():
        return False
    try:
        return store.accept_revocations(read_revocations(path), now)
    except (TrustFileError, certs.CertificateError) as exc:
        log.warning("revocation list %s not used: %s", path, exc)
        return False


def save_revocations(path: str | Path, signed: certs.SignedRevocations) -> None:
    atomic_write_bytes(Path(path), signed.encode())


def load_identity(files: TrustFiles, federation: str, role: str, device_id: str, now: int) -> CertifiedIdentity:
    """This role's key, certificate and trust store; TrustFileError if they do not fit together.
    The own certificate's validity is not a reason to stop: peers refuse an expired one."""
    store = certs.TrustStore(read_anchor(files.anchor), federation)
    seed = _read(files.identity_key, "identity_key")
    if len(seed) != 32:
        raise TrustFileError(f"trust.identity_key: {files.identity_key} must hold a 32-byte Ed25519 seed")
    key = SigningKey(seed)
    try:
        cert = certs.Certificate.decode(_read(files.certificate, "certificate"))
        if cert.public_key != bytes(key.verify_key):
            raise certs.IdentityMismatch(f"it certifies another key than {files.identity_key}")
        store.check(cert, role, device_id, max(cert.not_before, min(now, cert.not_after)))
    except certs.CertificateError as exc:
        raise TrustFileError(f"trust.certificate: {files.certificate}: {exc}") from None
    if now > cert.not_after:
        log.error("this %s's certificate expired at %d: peers refuse it until it is provisioned again",
                  role, cert.not_after)
    if files.revocations:
        adopt_revocations(store, files.revocations, now)
    return CertifiedIdentity(key, cert, store)
