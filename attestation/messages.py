"""The attestation messages agents and gateways exchange, as dataclasses with
`to_bytes()` / `from_bytes()` (framing in attestation.framing). The gateway's transport
carries these bytes; nothing here knows about MQTT.
"""
from __future__ import annotations

from dataclasses import dataclass

from ztfl.attestation.binding import MIN_NONCE_BYTES
from ztfl.attestation.errors import MalformedEvidence
from ztfl.attestation.framing import Reader, Writer

MAX_PCRS = 24
MAX_TPM_STRUCT = 1024
MAX_CERT = 4096
MAX_BOOT_LOG = 1 << 20               # attestation.eventlog.MAX_LOG_BYTES
MAX_IMA_BYTES = 15 << 20             # a first quote carries the whole list since boot
MAX_MEASURED_EVIDENCE = 16 << 20

TAG_QUOTE = b"ZQT\x01"
TAG_QUOTE_LOGS = b"ZQT\x02"         # the same quote, with the boot event log and IMA entries
TAG_RECEIPT = b"ZAR\x01"
TAG_SOFTWARE = b"ZSQ\x01"
TAG_ENROL = b"ZER\x01"
TAG_CHALLENGE = b"ZEC\x01"
TAG_ACTIVATION = b"ZEA\x01"


@dataclass(frozen=True)
class QuoteEvidence:
    """A TPM quote for one round: the raw TPM structures plus the PCR values it covers.

    attest: marshalled TPMS_ATTEST; signature: marshalled TPMT_SIGNATURE; pcr_values: the
    digests of the selected PCRs in the order of the attest's selection (what tpm2_checkquote
    reads as its PCR file). On boards with measured boot and IMA: boot_log, the TCG2 event log
    (binary_bios_measurements), and ima_entries, the binary IMA entries from entry ima_offset
    on (those since the gateway's last receipt). Without them the evidence keeps its first
    encoding (ZQT 1) byte for byte."""

    round_id: int
    nonce: bytes
    attest: bytes
    signature: bytes
    pcr_values: tuple[bytes, ...]
    boot_log: bytes = b""
    ima_offset: int = 0
    ima_entries: bytes = b""

    @property
    def has_logs(self) -> bool:
        return bool(self.boot_log or self.ima_entries or self.ima_offset)

    def to_bytes(self) -> bytes:
        w = (Writer(TAG_QUOTE_LOGS if self.has_logs else TAG_QUOTE).u64(self.round_id).blob8(self.nonce)
             .blob16(self.attest).blob16(self.signature).u8(len(self.pcr_values)))
        for value in self.pcr_values:
            w.blob8(value)
        if self.has_logs:
            w.blob32(self.boot_log).u32(self.ima_offset).blob32(self.ima_entries)
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> "QuoteEvidence":
        logs = bytes(data[:4]) == TAG_QUOTE_LOGS if isinstance(data, (bytes, bytearray, memoryview)) else False
        r = (Reader(data, TAG_QUOTE_LOGS, "QuoteEvidence", MAX_MEASURED_EVIDENCE) if logs
             else Reader(data, TAG_QUOTE, "QuoteEvidence"))
        round_id = r.u64("round_id")
        nonce = r.blob8("nonce", MIN_NONCE_BYTES, 64)
        attest = r.blob16("attest", 1, MAX_TPM_STRUCT)
        signature = r.blob16("signature", 1, MAX_TPM_STRUCT)
        count = r.u8("pcr count")
        if count > MAX_PCRS:
            raise MalformedEvidence(f"QuoteEvidence: {count} PCR values (at most {MAX_PCRS})")
        values = tuple(r.blob8("pcr value", 20, 64) for _ in range(count))
        boot_log, ima_offset, ima_entries = b"", 0, b""
        if logs:
            boot_log = r.blob32("boot log", 0, MAX_BOOT_LOG)
            ima_offset = r.u32("ima offset")
            ima_entries = r.blob32("ima entries", 0, MAX_IMA_BYTES)
        r.end()
        return cls(round_id, nonce, attest, signature, values, boot_log, ima_offset, ima_entries)


@dataclass(frozen=True)
class AttestationReceipt:
    """Gateway -> agent after each quote: how many IMA entries of the agent's current list the
    gateway holds, so the next quote sends only the entries after them."""

    round_id: int
    ima_accepted: int

    @classmethod
    def from_bytes(cls, data: bytes) -> "AttestationReceipt":
        r = Reader(data, TAG_RECEIPT, "AttestationReceipt")
        round_id, accepted = r.u64("round_id"), r.u32("ima_accepted")
        r.end()       # the receipt is exactly 16 bytes
        return cls(round_id, accepted)

    def to_bytes(self) -> bytes:
        return Writer(TAG_RECEIPT).u64(self.round_id).u32(self.ima_accepted).finish()


@dataclass(frozen=True)
class SoftwareEvidence:
    """A software-rooted device's answer to a nonce: an Ed25519 signature over
    attestation.binding.software_quote_message(nonce, round, public keys)."""

    round_id: int
    nonce: bytes
    signature: bytes

    def to_bytes(self) -> bytes:
        return Writer(TAG_SOFTWARE).u64(self.round_id).blob8(self.nonce).blob8(self.signature).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> "SoftwareEvidence":
        r = Reader(data, TAG_SOFTWARE, "SoftwareEvidence")
        out = cls(r.u64("round_id"), r.blob8("nonce", MIN_NONCE_BYTES, 64), r.blob8("signature", 64, 64))
        r.end()
        return out


def decode_evidence(data: bytes) -> QuoteEvidence | SoftwareEvidence:
    """Either kind of evidence, chosen by its tag."""
    head = bytes(data[:4]) if isinstance(data, (bytes, bytearray, memoryview)) else b""
    if head in (TAG_QUOTE, TAG_QUOTE_LOGS):
        return QuoteEvidence.from_bytes(data)
    if head == TAG_SOFTWARE:
        return SoftwareEvidence.from_bytes(data)
    raise MalformedEvidence(f"evidence: unknown tag {head!r}")


@dataclass(frozen=True)
class EnrolmentRequest:
    """An agent asks to enrol its AK: both keys as marshalled TPM2B_PUBLIC, the EK
    certificate (DER) if the TPM holds one, and the hardware profile it runs."""

    agent_id: str
    profile: str
    ek_public: bytes
    ak_public: bytes
    ek_certificate: bytes = b""

    def to_bytes(self) -> bytes:
        return (Writer(TAG_ENROL).text(self.agent_id).text(self.profile).blob16(self.ek_public)
                .blob16(self.ak_public).blob16(self.ek_certificate).finish())

    @classmethod
    def from_bytes(cls, data: bytes) -> "EnrolmentRequest":
        r = Reader(data, TAG_ENROL, "EnrolmentRequest")
        out = cls(r.text("agent_id"), r.text("profile"), r.blob16("ek_public", 1, MAX_TPM_STRUCT),
                  r.blob16("ak_public", 1, MAX_TPM_STRUCT), r.blob16("ek_certificate", 0, MAX_CERT))
        r.end()
        return out


@dataclass(frozen=True)
class EnrolmentChallenge:
    """MakeCredential's output: TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET, marshalled."""

    credential_blob: bytes
    encrypted_secret: bytes

    def to_bytes(self) -> bytes:
        return Writer(TAG_CHALLENGE).blob16(self.credential_blob).blob16(self.encrypted_secret).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> "EnrolmentChallenge":
        r = Reader(data, TAG_CHALLENGE, "EnrolmentChallenge")
        out = cls(r.blob16("credential_blob", 1, MAX_TPM_STRUCT), r.blob16("encrypted_secret", 1, MAX_TPM_STRUCT))
        r.end()
        return out


@dataclass(frozen=True)
class ActivationResponse:
    """The secret ActivateCredential recovered; only the TPM holding both EK and AK can."""

    agent_id: str
    secret: bytes

    def to_bytes(self) -> bytes:
        return Writer(TAG_ACTIVATION).text(self.agent_id).blob8(self.secret).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ActivationResponse":
        r = Reader(data, TAG_ACTIVATION, "ActivationResponse")
        out = cls(r.text("agent_id"), r.blob8("secret", 16, 64))
        r.end()
        return out
