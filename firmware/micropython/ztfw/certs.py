"""Identity certificates and revocation lists (protocol/certs.py, docs/wire.md), on the board.

The board trusts one root key (its trust anchor, from provisioning). Before a round's keys are
used, the gateway's certificate (role gateway, for the gateway id the board serves) and every
participant's (role agent, certified to the participant's agent id, valid, not revoked, no key or
id twice) must chain to that root. A certificate's signature is verified once per boot and kept
(`verified`): later rounds recheck only validity and revocation.

Time: the board's clock when it is set (NTP), else the newest signed time it has seen: its own
certificate's not_before and the issue time of the newest revocation list. That floor only grows,
so an expiry is still enforced against it.
"""
import hashlib
import struct

from ztfw import ed25519

CERT_MAGIC = b"ZTC1"
REVOCATIONS_MAGIC = b"ZTR1"
FORMAT_VERSION = 1
ROLES = ("agent", "gateway", "cloud", "intermediate")
CERT_HEAD = "<4sBBQII8s32s"
CERT_HEAD_BYTES = 62
LIST_HEAD = "<4sB8sIIII"
LIST_HEAD_BYTES = 29
SIGNATURE_BYTES = 64
MAX_REVOKED = 65535
UNIX_2000 = 946684800          # seconds from 1970 to 2000 (the epoch of most bare-metal ports)
CLOCK_SET_AFTER = 1704067200   # 2024-01-01: a clock before this was never set


class CertError(ValueError):
    """Base class: a certificate or a revocation list was refused; `reason` as protocol.certs."""
    reason = "certificate"


class MalformedCertificate(CertError):
    reason = "certificate_malformed"


class UntrustedIssuer(CertError):
    reason = "certificate_issuer"


class BadCertificateSignature(CertError):
    reason = "certificate_signature"


class WrongFederation(CertError):
    reason = "certificate_federation"


class WrongRole(CertError):
    reason = "certificate_role"


class IdentityMismatch(CertError):
    reason = "certificate_identity"


class CertificateExpired(CertError):
    reason = "certificate_expired"


class CertificateNotYetValid(CertError):
    reason = "certificate_not_yet_valid"


class CertificateRevoked(CertError):
    reason = "certificate_revoked"


class DuplicateIdentity(CertError):
    reason = "duplicate_identity"


class Uncertified(CertError):
    reason = "uncertified"


class MalformedRevocationList(CertError):
    reason = "revocations_malformed"


class StaleRevocationList(CertError):
    reason = "revocations_stale"


class RevocationListExpired(CertError):
    reason = "revocations_expired"


def key_id(public):
    return hashlib.sha256(bytes(public)).digest()[:8]


def _name(data, pos, what):
    if pos >= len(data):
        raise MalformedCertificate("truncated before the " + what)
    n = data[pos]
    end = pos + 1 + n
    if not 1 <= n <= 64 or end > len(data):
        raise MalformedCertificate("%s of %d bytes out of range" % (what, n))
    raw = bytes(data[pos + 1:end])
    for i, c in enumerate(raw):
        alnum = 48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122
        if not (alnum or (i and c in b"_.-")):
            raise MalformedCertificate(what + " is not 1-64 of [A-Za-z0-9_.-], starting alphanumeric")
    return raw.decode(), end


class Certificate:
    """A decoded certificate; `raw` keeps its bytes (the signature cache is keyed by them)."""

    def __init__(self, data, pos=0):
        data = bytes(data)
        if len(data) - pos < CERT_HEAD_BYTES:
            raise MalformedCertificate("shorter than a certificate header")
        (magic, version, role, self.serial, self.not_before, self.not_after, self.issuer,
         self.public_key) = struct.unpack_from(CERT_HEAD, data, pos)
        if magic != CERT_MAGIC or version != FORMAT_VERSION:
            raise MalformedCertificate("bad certificate magic or version")
        if not 1 <= role <= len(ROLES):
            raise MalformedCertificate("unknown role code %d" % role)
        if self.not_before > self.not_after:
            raise MalformedCertificate("not_before is after not_after")
        self.role = ROLES[role - 1]
        self.federation, end = _name(data, pos + CERT_HEAD_BYTES, "federation")
        self.device_id, end = _name(data, end, "device id")
        self.signed_end = end
        self.end = end + SIGNATURE_BYTES
        if self.end > len(data):
            raise MalformedCertificate("certificate truncated in its signature")
        self.raw = data[pos:self.end]
        self.signature = data[end:self.end]


def decode(data):
    cert = Certificate(data)
    if cert.end != len(data):
        raise MalformedCertificate("%d bytes after the certificate" % (len(data) - cert.end))
    return cert


class RevocationList:
    def __init__(self, data):
        data = bytes(data)
        if len(data) < LIST_HEAD_BYTES:
            raise MalformedRevocationList("shorter than a revocation list header")
        (magic, version, self.issuer, self.number, self.issued_at, self.next_update,
         count) = struct.unpack_from(LIST_HEAD, data, 0)
        if magic != REVOCATIONS_MAGIC or version != FORMAT_VERSION:
            raise MalformedRevocationList("bad revocation list magic or version")
        end = LIST_HEAD_BYTES + 8 * count
        if count > MAX_REVOKED or end + SIGNATURE_BYTES != len(data) or self.issued_at > self.next_update:
            raise MalformedRevocationList("revocation list sizes or times do not add up")
        serials = struct.unpack_from("<%dQ" % count, data, LIST_HEAD_BYTES) if count else ()
        for i in range(1, count):
            if serials[i - 1] >= serials[i]:
                raise MalformedRevocationList("revoked serials are not in strictly increasing order")
        self.revoked = set(serials)
        self.signed = data[:end]
        self.signature = data[end:]
        self.raw = data


def _verify(issuer_key, signed, signature, what):
    try:
        ed25519.verify(issuer_key, signed, signature)
    except ed25519.SignatureError:
        raise BadCertificateSignature(what + " is not signed by its issuer")


def board_time(floor):
    """Unix seconds: the clock if it was set, never below `floor` (the newest signed time seen)."""
    import time
    now = time.time()
    if time.gmtime(0)[0] == 2000:
        now += UNIX_2000
    return max(int(now) if now >= CLOCK_SET_AFTER else 0, floor)


class TrustStore:
    def __init__(self, anchor, federation):
        if len(anchor) != 32:
            raise CertError("trust anchor must be a 32-byte Ed25519 public key")
        self.anchor = bytes(anchor)
        self.anchor_id = key_id(anchor)
        self.federation = federation
        self.revocations = None          # (intermediate Certificate, RevocationList)
        self.verified = set()            # bytes of certificates whose signature was checked
        self.floor = 0
        self.signature_checks = 0

    def check_claims(self, cert, role, device_id, now):
        if cert.federation != self.federation:
            raise WrongFederation("%s certificate of %s is for federation %s" % (cert.role, cert.device_id,
                                                                                cert.federation))
        if cert.role != role:
            raise WrongRole("certificate of %s certifies a %s, not a %s" % (cert.device_id, cert.role, role))
        if device_id is not None and cert.device_id != device_id:
            raise IdentityMismatch("%s certificate of %s presented for %s" % (role, cert.device_id, device_id))
        if cert.issuer != self.anchor_id:
            raise UntrustedIssuer("%s certificate of %s is not issued by the trust anchor" % (role, cert.device_id))
        if now < cert.not_before:
            raise CertificateNotYetValid("%s certificate of %s is not valid yet" % (role, cert.device_id))
        if now > cert.not_after:
            raise CertificateExpired("%s certificate of %s expired" % (role, cert.device_id))
        if self.revocations is not None:
            rl = self.revocations[1]
            if now > rl.next_update:
                raise RevocationListExpired("revocation list %d was due for renewal" % rl.number)
            if cert.serial in rl.revoked:
                raise CertificateRevoked("%s certificate %d of %s is revoked" % (role, cert.serial, cert.device_id))
        return cert

    def check_signature(self, cert):
        if cert.raw in self.verified:
            return
        self.signature_checks += 1
        _verify(self.anchor, cert.raw[:cert.signed_end], cert.signature,
                "%s certificate of %s" % (cert.role, cert.device_id))
        if len(self.verified) >= 256:
            self.verified = set()
        self.verified.add(cert.raw)

    def check(self, cert, role, device_id, now):
        self.check_claims(cert, role, device_id, now)
        self.check_signature(cert)
        return cert

    def accept_revocations(self, payload, now):
        """Adopt a signed revocation list (intermediate certificate + list) if genuine and newer."""
        inter = Certificate(payload)
        rl = RevocationList(bytes(payload)[inter.end:])
        held, self.revocations = self.revocations, None
        try:
            self.check(inter, "intermediate", None, max(now, rl.issued_at))
        finally:
            self.revocations = held
        if rl.issuer != key_id(inter.public_key):
            raise UntrustedIssuer("revocation list %d is not issued by the intermediate" % rl.number)
        _verify(inter.public_key, rl.signed, rl.signature, "revocation list %d" % rl.number)
        if inter.serial in rl.revoked or (held is not None and inter.serial in held[1].revoked):
            raise CertificateRevoked("the intermediate is revoked")
        if held is not None and rl.raw == held[1].raw:
            return False
        if held is not None and rl.number <= held[1].number:
            raise StaleRevocationList("revocation list %d is not newer than %d" % (rl.number, held[1].number))
        if max(now, rl.issued_at) > rl.next_update:
            raise RevocationListExpired("revocation list %d expired" % rl.number)
        self.revocations = (inter, rl)
        self.floor = max(self.floor, rl.issued_at)
        return True

    def check_announcement(self, seats, server_raw, gateway, now):
        """The gateway's certificate and every participant's, signatures included: the board's
        cohorts are small and use every peer's key (the complete graph). `seats`: [(agent id,
        protocol id, certificate bytes)]. Returns (server key, {protocol id: key})."""
        server = self.check(decode(server_raw), "gateway", gateway, now)
        keys = {}
        ids = set()
        seen = set()
        for agent_id, sid, raw in seats:
            cert = self.check(decode(raw), "agent", agent_id, now)
            if agent_id in ids or sid in keys or cert.public_key in seen:
                raise DuplicateIdentity("participant %s (id %d) repeats an id or a key" % (agent_id, sid))
            ids.add(agent_id)
            seen.add(cert.public_key)
            keys[sid] = cert.public_key
        return server.public_key, keys
