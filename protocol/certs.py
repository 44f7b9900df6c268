"""Certified protocol identities: compact Ed25519 certificates and revocation lists (docs/wire.md).

The fleet's offline root CA signs one certificate per device: it binds the federation, the
device id, its role (agent, gateway, cloud, or the online intermediate that signs revocation
lists) and its protocol identity key (the Ed25519 key that signs its protocol messages) for a
validity period. A party trusts exactly one root key (its trust anchor) and refuses, with a typed
reason, any key it cannot tie to that root: the gateway relays certificates, it no longer vouches
for keys.

Everything here is pure: the caller passes the time (`now`, Unix seconds) and the bytes.
"""
from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, field, replace

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from ztfl.protocol.errors import ProtocolError

CERT_MAGIC = b"ZTC1"
REVOCATIONS_MAGIC = b"ZTR1"
FORMAT_VERSION = 1
ROLES = ("agent", "gateway", "cloud", "intermediate")       # role code = index + 1
KEY_BYTES = 32
SIGNATURE_BYTES = 64
KEY_ID_BYTES = 8
MAX_U32 = 0xFFFFFFFF
MAX_U64 = 0xFFFFFFFFFFFFFFFF
MAX_REVOKED = 65535
_CERT_HEAD = struct.Struct("<4sBBQII8s32s")       # magic .. subject key: 62 bytes
_LIST_HEAD = struct.Struct("<4sB8sIIII")          # magic .. revoked count: 29 bytes
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# --- refusals ----------------------------------------------------------------------------------

class CertificateError(ProtocolError):
    """Base class: a certificate, a revocation list or a missing one was refused."""

    reason = "certificate"


class MalformedCertificate(CertificateError):
    """The bytes are not a certificate: magic, version, role, lengths, names, trailing bytes."""

    reason = "certificate_malformed"


class UntrustedIssuer(CertificateError):
    """The certificate names an issuer other than the trust anchor (or the intermediate expected)."""

    reason = "certificate_issuer"


class BadCertificateSignature(CertificateError):
    """The issuer's signature over the certificate or revocation list does not verify."""

    reason = "certificate_signature"


class WrongFederation(CertificateError):
    """The certificate belongs to another federation."""

    reason = "certificate_federation"


class WrongRole(CertificateError):
    """The certificate certifies another role (an agent key presented as a gateway's...)."""

    reason = "certificate_role"


class IdentityMismatch(CertificateError):
    """The certificate's device id or key is not the one it is presented for."""

    reason = "certificate_identity"


class CertificateExpired(CertificateError):
    """`now` is past the certificate's not_after."""

    reason = "certificate_expired"


class CertificateNotYetValid(CertificateError):
    """`now` is before the certificate's not_before."""

    reason = "certificate_not_yet_valid"


class CertificateRevoked(CertificateError):
    """The certificate's serial is on the newest revocation list."""

    reason = "certificate_revoked"


class DuplicateIdentity(CertificateError):
    """Two participants of one announcement share a key or a device id."""

    reason = "duplicate_identity"


class Uncertified(CertificateError):
    """A key is offered without a certificate where one is required (or nothing to check it with)."""

    reason = "uncertified"


class MalformedRevocationList(CertificateError):
    """The bytes are not a revocation list (lengths, order of serials, trailing bytes)."""

    reason = "revocations_malformed"


class StaleRevocationList(CertificateError):
    """A revocation list not newer than the one held (a replay or a rollback)."""

    reason = "revocations_stale"


class RevocationListExpired(CertificateError):
    """The newest revocation list is past its next_update: revocation state is unknown."""

    reason = "revocations_expired"


# --- encoding ----------------------------------------------------------------------------------

def key_id(public_key: bytes) -> bytes:
    """How certificates and revocation lists name their issuer: SHA-256 of its key, 8 bytes."""
    return hashlib.sha256(bytes(public_key)).digest()[:KEY_ID_BYTES]


def _name(value: str, what: str, error: type) -> bytes:
    if not isinstance(value, str) or not _ID.match(value):
        raise error(f"{what} {value!r:.80}: 1-64 of [A-Za-z0-9_.-], starting alphanumeric")
    return value.encode("ascii")


def _read_name(data: bytes, pos: int, what: str, error: type) -> tuple[str, int]:
    if pos >= len(data):
        raise error(f"truncated before the {what}")
    n = data[pos]
    end = pos + 1 + n
    if end > len(data):
        raise error(f"{what} of {n} bytes runs past the end")
    try:
        text = bytes(data[pos + 1:end]).decode("ascii")
    except UnicodeDecodeError:
        raise error(f"{what} is not ASCII") from None
    _name(text, what, error)
    return text, end


def _check_validity(not_before: int, not_after: int, error: type) -> None:
    for value in (not_before, not_after):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_U32:
            raise error(f"validity bound {value!r} is not a u32")
    if not_before > not_after:
        raise error(f"not_before {not_before} is after not_after {not_after}")


class _IssuerSigned:
    """The wire form and the signature check of what an issuer signs: signed_bytes() followed by
    the issuer's 64-byte Ed25519 signature, the issuer named by its key id."""
    _malformed: type = MalformedCertificate

    def encode(self) -> bytes:
        if len(self.signature) != SIGNATURE_BYTES:
            raise self._malformed(f"an unsigned {self.described()} has no wire form")
        return self.signed_bytes() + self.signature

    def check_signature(self, issuer_key: bytes) -> None:
        if key_id(issuer_key) != self.issuer:
            raise UntrustedIssuer(f"{self.described()} is issued by key {self.issuer.hex()}, "
                                  f"not by {key_id(issuer_key).hex()}")
        try:
            # libsodium's open of signature || message: the same check as VerifyKey.verify, without
            # building a key object per certificate.
            crypto_sign_open(self.signature + self.signed_bytes(), issuer_key)
        except BadSignatureError:
            raise BadCertificateSignature(f"{self.described()} is not signed by its issuer") from None


@dataclass(frozen=True)
class Certificate(_IssuerSigned):
    """One certified identity (layout: docs/wire.md "Identity certificate")."""
    federation: str
    device_id: str
    role: str
    public_key: bytes
    not_before: int
    not_after: int
    serial: int
    issuer: bytes                       # key_id() of the issuer's public key
    signature: bytes = b""

    def __post_init__(self):
        if self.role not in ROLES:
            raise MalformedCertificate(f"unknown role {self.role!r:.40}")
        if not isinstance(self.public_key, bytes) or len(self.public_key) != KEY_BYTES:
            raise MalformedCertificate(f"subject key must be {KEY_BYTES} bytes")
        if not isinstance(self.issuer, bytes) or len(self.issuer) != KEY_ID_BYTES:
            raise MalformedCertificate(f"issuer key id must be {KEY_ID_BYTES} bytes")
        if not isinstance(self.serial, int) or not 0 <= self.serial <= MAX_U64:
            raise MalformedCertificate(f"serial {self.serial!r} is not a u64")
        _check_validity(self.not_before, self.not_after, MalformedCertificate)
        _name(self.federation, "federation", MalformedCertificate)
        _name(self.device_id, "device id", MalformedCertificate)

    def signed_bytes(self) -> bytes:
        """Everything before the signature: what the issuer signs."""
        head = _CERT_HEAD.pack(CERT_MAGIC, FORMAT_VERSION, ROLES.index(self.role) + 1, self.serial,
                               self.not_before, self.not_after, self.issuer, self.public_key)
        fed, dev = self.federation.encode("ascii"), self.device_id.encode("ascii")
        return head + bytes([len(fed)]) + fed + bytes([len(dev)]) + dev

    def described(self) -> str:
        return f"{self.role} certificate of {self.device_id}"

    @classmethod
    def decode(cls, data: bytes) -> "Certificate":
        """Exactly one certificate: MalformedCertificate on anything else."""
        cert, end = cls.decode_prefix(data)
        if end != len(data):
            raise MalformedCertificate(f"{len(data) - end} bytes after the certificate")
        return cert

    @classmethod
    def decode_prefix(cls, data: bytes) -> tuple["Certificate", int]:
        """The certificate at the start of `data` and where it ends."""
        data = bytes(data)
        if len(data) < _CERT_HEAD.size:
            raise MalformedCertificate(f"{len(data)} bytes, shorter than a certificate header")
        magic, version, role, serial, not_before, not_after, issuer, key = _CERT_HEAD.unpack_from(data, 0)
        if magic != CERT_MAGIC:
            raise MalformedCertificate("bad certificate magic")
        if version != FORMAT_VERSION:
            raise MalformedCertificate(f"certificate format version {version}, expected {FORMAT_VERSION}")
        if not 1 <= role <= len(ROLES):
            raise MalformedCertificate(f"unknown role code {role}")
        federation, pos = _read_name(data, _CERT_HEAD.size, "federation", MalformedCertificate)
        device_id, pos = _read_name(data, pos, "device id", MalformedCertificate)
        if pos + SIGNATURE_BYTES > len(data):
            raise MalformedCertificate("certificate truncated in its signature")
        return cls(federation, device_id, ROLES[role - 1], key, not_before, not_after, serial, issuer,
                   data[pos:pos + SIGNATURE_BYTES]), pos + SIGNATURE_BYTES


def issue(issuer: SigningKey, *, federation: str, device_id: str, role: str, public_key: bytes,
          not_before: int, not_after: int, serial: int) -> Certificate:
    """A certificate for `public_key`, signed by `issuer` (the root, at provisioning)."""
    cert = Certificate(federation, device_id, role, bytes(public_key), not_before, not_after, serial,
                       key_id(bytes(issuer.verify_key)))
    return replace(cert, signature=issuer.sign(cert.signed_bytes()).signature)


@dataclass(frozen=True)
class RevocationList(_IssuerSigned):
    """The serials the root's certificates are revoked by, signed by the intermediate
    (layout: docs/wire.md "Revocation list"). `number` grows with every list an issuer signs."""
    issuer: bytes
    number: int
    issued_at: int
    next_update: int
    revoked: tuple[int, ...] = ()
    signature: bytes = b""
    _malformed = MalformedRevocationList

    def __post_init__(self):
        if not isinstance(self.issuer, bytes) or len(self.issuer) != KEY_ID_BYTES:
            raise MalformedRevocationList(f"issuer key id must be {KEY_ID_BYTES} bytes")
        if not isinstance(self.number, int) or not 0 <= self.number <= MAX_U32:
            raise MalformedRevocationList(f"number {self.number!r} is not a u32")
        _check_validity(self.issued_at, self.next_update, MalformedRevocationList)
        if len(self.revoked) > MAX_REVOKED:
            raise MalformedRevocationList(f"{len(self.revoked)} revoked serials, at most {MAX_REVOKED}")
        if any(not 0 <= s <= MAX_U64 for s in self.revoked) or \
                any(a >= b for a, b in zip(self.revoked, self.revoked[1:])):
            raise MalformedRevocationList("revoked serials must be u64 in strictly increasing order")

    def signed_bytes(self) -> bytes:
        return (_LIST_HEAD.pack(REVOCATIONS_MAGIC, FORMAT_VERSION, self.issuer, self.number, self.issued_at,
                                self.next_update, len(self.revoked))
                + struct.pack(f"<{len(self.revoked)}Q", *self.revoked))

    def described(self) -> str:
        return f"revocation list {self.number}"

    @classmethod
    def decode(cls, data: bytes) -> "RevocationList":
        data = bytes(data)
        if len(data) < _LIST_HEAD.size:
            raise MalformedRevocationList(f"{len(data)} bytes, shorter than a revocation list header")
        magic, version, issuer, number, issued_at, next_update, count = _LIST_HEAD.unpack_from(data, 0)
        if magic != REVOCATIONS_MAGIC:
            raise MalformedRevocationList("bad revocation list magic")
        if version != FORMAT_VERSION:
            raise MalformedRevocationList(f"revocation list format version {version}, expected {FORMAT_VERSION}")
        if count > MAX_REVOKED:
            raise MalformedRevocationList(f"{count} revoked serials, at most {MAX_REVOKED}")
        end = _LIST_HEAD.size + 8 * count
        if end + SIGNATURE_BYTES != len(data):
            raise MalformedRevocationList(f"{len(data)} bytes, a list of {count} serials has {end + SIGNATURE_BYTES}")
        revoked = struct.unpack_from(f"<{count}Q", data, _LIST_HEAD.size)
        return cls(issuer, number, issued_at, next_update, revoked, data[end:])


def sign_revocations(intermediate: SigningKey, *, number: int, issued_at: int, next_update: int,
                     revoked=()) -> RevocationList:
    """A revocation list signed by the online intermediate."""
    rl = RevocationList(key_id(bytes(intermediate.verify_key)), number, issued_at, next_update,
                        tuple(sorted(set(revoked))))
    return replace(rl, signature=intermediate.sign(rl.signed_bytes()).signature)


def next_number(current: RevocationList | None, now: int) -> int:
    """The number of the next list: above the current one and at least `now`, so that lists signed
    later from different copies of the tree (the gateway's renewal, an operator's revocation)
    still come out in order."""
    return max(0 if current is None else current.number + 1, min(now, MAX_U32))


@dataclass(frozen=True)
class SignedRevocations:
    """What the gateway broadcasts (retained) and provisioning writes into every bundle: the
    intermediate's certificate followed by the revocation list it signed."""
    intermediate: Certificate
    revocations: RevocationList

    def encode(self) -> bytes:
        return self.intermediate.encode() + self.revocations.encode()

    @classmethod
    def decode(cls, data: bytes) -> "SignedRevocations":
        cert, end = Certificate.decode_prefix(data)
        return cls(cert, RevocationList.decode(bytes(data)[end:]))


# --- trust -------------------------------------------------------------------------------------

def check_validity(cert: Certificate, now: int) -> None:
    if now < cert.not_before:
        raise CertificateNotYetValid(f"{cert.role} certificate of {cert.device_id} is valid from "
                                     f"{cert.not_before}, now is {now}")
    if now > cert.not_after:
        raise CertificateExpired(f"{cert.role} certificate of {cert.device_id} expired at {cert.not_after}, "
                                 f"now is {now}")


@dataclass
class TrustStore:
    """One party's trust: the root key (anchor), its federation, the newest revocation list it
    accepted, and the certificates whose root signature it already verified (a signature never
    changes, so it is checked once per certificate; validity and revocation on every use)."""
    anchor: bytes
    federation: str
    revocations: SignedRevocations | None = None
    cache_limit: int = 1 << 14
    verified: set = field(default_factory=set)     # certificates whose root signature verified
    decoded: dict = field(default_factory=dict)     # certificate bytes -> Certificate, as seen before
    signature_checks: int = 0            # root signatures verified so far (not served by the cache)

    def __post_init__(self):
        if not isinstance(self.anchor, bytes) or len(self.anchor) != KEY_BYTES:
            raise ValueError(f"trust anchor must be a {KEY_BYTES}-byte Ed25519 public key")
        self.anchor_id = key_id(self.anchor)

    @property
    def revoked(self) -> frozenset:
        return frozenset(self.revocations.revocations.revoked) if self.revocations else frozenset()

    def check_claims(self, cert: Certificate, role: str, device_id: str | None, now: int) -> Certificate:
        """Everything but the signature: federation, role, device id, issuer, validity, revocation
        (and the revocation list still current)."""
        if cert.federation != self.federation:
            raise WrongFederation(f"{cert.role} certificate of {cert.device_id} is for federation "
                                  f"{cert.federation}, not {self.federation}")
        if cert.role != role:
            raise WrongRole(f"certificate of {cert.device_id} certifies a {cert.role}, not a {role}")
        if device_id is not None and cert.device_id != device_id:
            raise IdentityMismatch(f"{role} certificate of {cert.device_id} presented for {device_id}")
        if cert.issuer != self.anchor_id:
            raise UntrustedIssuer(f"{role} certificate of {cert.device_id} is issued by key {cert.issuer.hex()}, "
                                  f"not by the trust anchor {self.anchor_id.hex()}")
        check_validity(cert, now)
        if self.revocations is not None:
            current = self.revocations.revocations
            if now > current.next_update:
                raise RevocationListExpired(f"revocation list {current.number} was due for renewal at "
                                            f"{current.next_update}, now is {now}")
            if cert.serial in current.revoked:
                raise CertificateRevoked(f"{role} certificate {cert.serial} of {cert.device_id} is revoked "
                                         f"(list {current.number})")
        return cert

    def decode(self, raw: bytes) -> Certificate:
        """Certificate.decode, kept: the same participants come back every round of an epoch."""
        cert = self.decoded.get(raw)
        if cert is None:
            cert = Certificate.decode(raw)
            if len(self.decoded) >= self.cache_limit:
                self.decoded.clear()
            self.decoded[raw] = cert
        return cert

    def check_signature(self, cert: Certificate) -> None:
        """The root's signature over `cert`, verified once per certificate."""
        if cert in self.verified:               # equal in every field, signature included
            return
        self.signature_checks += 1
        cert.check_signature(self.anchor)
        if len(self.verified) >= self.cache_limit:
            self.verified.clear()
        self.verified.add(cert)

    def check(self, cert: Certificate, role: str, device_id: str | None, now: int) -> Certificate:
        """A certificate fully checked for `role` (and `device_id`, when given)."""
        self.check_claims(cert, role, device_id, now)
        self.check_signature(cert)
        return cert

    def accept_revocations(self, signed: SignedRevocations, now: int) -> bool:
        """Adopt a revocation list if it is genuine and newer than the one held; True if adopted.
        The intermediate must be certified by the root for this federation and not revoked by the
        list it signs; a list not newer than the current one is refused (a rollback)."""
        issuer = self._check_intermediate(signed.intermediate, now)
        rl = signed.revocations
        rl.check_signature(issuer.public_key)
        if now > rl.next_update:
            raise RevocationListExpired(f"revocation list {rl.number} expired at {rl.next_update}, now is {now}")
        if issuer.serial in rl.revoked:
            raise CertificateRevoked(f"the intermediate {issuer.serial} is on its own revocation list")
        current = self.revocations.revocations if self.revocations is not None else None
        if current is not None and rl.encode() == current.encode():
            return False
        if current is not None and rl.number <= current.number:
            raise StaleRevocationList(f"revocation list {rl.number} is not newer than list {current.number}")
        self.revocations = signed
        return True

    def _check_intermediate(self, cert: Certificate, now: int) -> Certificate:
        # Checked without the held list's expiry: a fresh list is how an expired one is replaced.
        held, self.revocations = self.revocations, None
        try:
            self.check(cert, "intermediate", None, now)
        finally:
            self.revocations = held
        if held is not None and cert.serial in held.revocations.revoked:
            raise CertificateRevoked(f"intermediate certificate {cert.serial} is revoked")
        return cert


def check_participants(store: TrustStore, entries, now: int) -> dict[int, Certificate]:
    """The certificates of a round's participants, `entries` as (agent id, protocol id, certificate
    bytes): each decoded strictly, certified to that agent id as an agent of this federation,
    valid and not revoked, no key or id twice. Signatures are left to `store.check_signature`, run
    before a participant's key is first used (a client uses only its neighbours' keys)."""
    certs: dict[int, Certificate] = {}
    ids, keys = set(), set()
    for agent_id, sid, raw in entries:
        cert = store.check_claims(store.decode(raw), "agent", agent_id, now)
        if agent_id in ids or cert.public_key in keys or sid in certs:
            raise DuplicateIdentity(f"participant {agent_id} (id {sid}) repeats an id or a key")
        ids.add(agent_id)
        keys.add(cert.public_key)
        certs[sid] = cert
    return certs
