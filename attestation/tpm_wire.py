"""Pure parsers and encoders for the few TPM 2.0 structures a verifier reads.

No TPM and no tpm2-pytss here: the gateway verifies quotes with these functions and
`cryptography` only. Every parser reads at explicit offsets through `_Reader`, checks each
size before slicing, and refuses trailing bytes (TPM 2.0 Library, Part 2: Structures).
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from ztfl.attestation.errors import AttestFormatError, PublicKeyFormatError, SignatureFormatError

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018

ALG_RSA = 0x0001
ALG_SHA1 = 0x0004
ALG_NULL = 0x0010
ALG_SHA256 = 0x000B
ALG_SHA384 = 0x000C
ALG_SHA512 = 0x000D
ALG_RSASSA = 0x0014
ALG_ECDSA = 0x0018
ALG_ECC = 0x0023
ECC_NIST_P256 = 0x0003

HASH_ALGS: dict[str, int] = {"sha1": ALG_SHA1, "sha256": ALG_SHA256, "sha384": ALG_SHA384, "sha512": ALG_SHA512}
HASH_NAMES: dict[int, str] = {v: k for k, v in HASH_ALGS.items()}
DIGEST_SIZES: dict[int, int] = {ALG_SHA1: 20, ALG_SHA256: 32, ALG_SHA384: 48, ALG_SHA512: 64}

# TPMA_OBJECT bits
FIXED_TPM = 1 << 1
FIXED_PARENT = 1 << 4
SENSITIVE_DATA_ORIGIN = 1 << 5
USER_WITH_AUTH = 1 << 6
ADMIN_WITH_POLICY = 1 << 7
RESTRICTED = 1 << 16
DECRYPT = 1 << 17
SIGN_ENCRYPT = 1 << 18

# The permanent handle of the endorsement hierarchy; it starts the qualified name of an
# AK created as a primary object there.
TPM_RH_ENDORSEMENT = 0x4000000B

MAX_PCR_SELECT_BYTES = 4          # 32 PCRs; PC-client TPMs have 24
MAX_BANKS = 4


def hash_name(alg: int) -> str:
    try:
        return HASH_NAMES[alg]
    except KeyError:
        raise ValueError(f"unsupported hash algorithm 0x{alg:04x}") from None


def digest(alg: int, data: bytes) -> bytes:
    return hashlib.new(hash_name(alg), data).digest()


class _Reader:
    """Bounds-checked big-endian reader; `error` is the exception type for this structure."""

    def __init__(self, data: bytes, error: type[Exception], what: str):
        self.data = memoryview(bytes(data))
        self.pos = 0
        self.error = error
        self.what = what

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.error(f"{self.what}: truncated at byte {self.pos} (need {n} more, "
                             f"{len(self.data) - self.pos} left)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self._take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self._take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self._take(8))[0]

    def tpm2b(self, limit: int, field: str) -> bytes:
        size = self.u16()
        if size > limit:
            raise self.error(f"{self.what}: {field} of {size} bytes exceeds {limit}")
        return bytes(self._take(size))

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self.error(f"{self.what}: {len(self.data) - self.pos} trailing bytes")


# --- PCR selections ------------------------------------------------------------------------

@dataclass(frozen=True)
class PcrSelection:
    """One bank and the PCR indices selected in it (ascending)."""

    hash_alg: int
    pcrs: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> "PcrSelection":
        """`sha256:0,16,23` (the tpm2-tools spelling)."""
        try:
            bank, _, indices = text.partition(":")
            alg = HASH_ALGS[bank.strip().lower()]
            pcrs = tuple(sorted({int(i) for i in indices.split(",") if i.strip()}))
        except (KeyError, ValueError):
            raise ValueError(f"bad PCR selection {text!r}: expected e.g. sha256:0,16,23") from None
        if not pcrs or any(p < 0 or p >= 8 * MAX_PCR_SELECT_BYTES for p in pcrs):
            raise ValueError(f"bad PCR selection {text!r}: indices must be in 0..31")
        return cls(alg, pcrs)

    def __str__(self) -> str:
        return f"{hash_name(self.hash_alg)}:{','.join(map(str, self.pcrs))}"

    def marshal(self) -> bytes:
        """TPML_PCR_SELECTION with this one bank (3-byte bitmap, as PC-client TPMs use)."""
        size = max(3, (max(self.pcrs) // 8) + 1)
        bitmap = bytearray(size)
        for p in self.pcrs:
            bitmap[p // 8] |= 1 << (p % 8)
        return struct.pack(">IHB", 1, self.hash_alg, size) + bytes(bitmap)


def _read_pcr_selection(r: _Reader) -> tuple[PcrSelection, ...]:
    count = r.u32()
    if count > MAX_BANKS:
        raise r.error(f"{r.what}: {count} PCR banks selected (at most {MAX_BANKS})")
    banks = []
    for _ in range(count):
        alg = r.u16()
        size = r.u8()
        if size > MAX_PCR_SELECT_BYTES:
            raise r.error(f"{r.what}: PCR bitmap of {size} bytes")
        bitmap = bytes(r._take(size))
        pcrs = tuple(i for i in range(8 * size) if bitmap[i // 8] & (1 << (i % 8)))
        banks.append(PcrSelection(alg, pcrs))
    return tuple(banks)


# --- TPMS_ATTEST (quote) -------------------------------------------------------------------

@dataclass(frozen=True)
class ClockInfo:
    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True)
class QuoteAttest:
    """The fields of a TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE."""

    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_selection: tuple[PcrSelection, ...]
    pcr_digest: bytes


def parse_quote_attest(data: bytes) -> QuoteAttest:
    """Parse a marshalled TPMS_ATTEST and require it to be a quote, with nothing after it."""
    r = _Reader(data, AttestFormatError, "TPMS_ATTEST")
    magic = r.u32()
    if magic != TPM_GENERATED_VALUE:
        raise AttestFormatError(f"TPMS_ATTEST: magic 0x{magic:08x} is not TPM_GENERATED_VALUE "
                                "(not produced by a TPM)")
    kind = r.u16()
    if kind != TPM_ST_ATTEST_QUOTE:
        raise AttestFormatError(f"TPMS_ATTEST: type 0x{kind:04x} is not TPM_ST_ATTEST_QUOTE")
    signer = r.tpm2b(2 + 64, "qualifiedSigner")
    extra = r.tpm2b(64, "extraData")
    clock = ClockInfo(clock=r.u64(), reset_count=r.u32(), restart_count=r.u32(), safe=bool(r.u8()))
    firmware = r.u64()
    selection = _read_pcr_selection(r)
    pcr_digest = r.tpm2b(64, "pcrDigest")
    r.end()
    return QuoteAttest(signer, extra, clock, firmware, selection, pcr_digest)


# --- TPMT_SIGNATURE ------------------------------------------------------------------------

@dataclass(frozen=True)
class EcdsaSignature:
    hash_alg: int
    r: int
    s: int


def parse_signature(data: bytes) -> EcdsaSignature:
    """Parse a marshalled TPMT_SIGNATURE; only ECDSA (the AK's scheme) is accepted."""
    r = _Reader(data, SignatureFormatError, "TPMT_SIGNATURE")
    alg = r.u16()
    if alg != ALG_ECDSA:
        raise SignatureFormatError(f"TPMT_SIGNATURE: scheme 0x{alg:04x} is not ECDSA")
    hash_alg = r.u16()
    sig_r = r.tpm2b(66, "signatureR")
    sig_s = r.tpm2b(66, "signatureS")
    r.end()
    if not sig_r or not sig_s:
        raise SignatureFormatError("TPMT_SIGNATURE: empty r or s")
    return EcdsaSignature(hash_alg, int.from_bytes(sig_r, "big"), int.from_bytes(sig_s, "big"))


# --- TPM2B_PUBLIC --------------------------------------------------------------------------

@dataclass(frozen=True)
class PublicArea:
    """What a verifier needs from a TPMT_PUBLIC: type, attributes, scheme and the key itself."""

    key_type: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    scheme: int
    scheme_hash: int
    curve: int                  # ECC only
    ecc_x: bytes
    ecc_y: bytes
    rsa_bits: int               # RSA only
    rsa_exponent: int
    rsa_modulus: bytes
    tpmt_public: bytes          # the marshalled TPMT_PUBLIC (what the name hashes)

    @property
    def name(self) -> bytes:
        """TPM object name: nameAlg || H_nameAlg(TPMT_PUBLIC)."""
        return struct.pack(">H", self.name_alg) + digest(self.name_alg, self.tpmt_public)

    def has(self, bits: int) -> bool:
        return self.attributes & bits == bits


def parse_public(data: bytes) -> PublicArea:
    """Parse a marshalled TPM2B_PUBLIC (ECC or RSA key)."""
    outer = _Reader(data, PublicKeyFormatError, "TPM2B_PUBLIC")
    inner_bytes = outer.tpm2b(1024, "publicArea")
    outer.end()
    r = _Reader(inner_bytes, PublicKeyFormatError, "TPMT_PUBLIC")
    key_type = r.u16()
    if key_type not in (ALG_ECC, ALG_RSA):
        raise PublicKeyFormatError(f"TPMT_PUBLIC: key type 0x{key_type:04x} is neither ECC nor RSA")
    name_alg = r.u16()
    if name_alg not in DIGEST_SIZES:
        raise PublicKeyFormatError(f"TPMT_PUBLIC: nameAlg 0x{name_alg:04x} unsupported")
    attributes = r.u32()
    auth_policy = r.tpm2b(64, "authPolicy")
    sym = r.u16()
    if sym != ALG_NULL:
        r.u16()                                   # keyBits
        r.u16()                                   # mode
    scheme = r.u16()
    scheme_hash = r.u16() if scheme != ALG_NULL else ALG_NULL
    curve = rsa_bits = rsa_exponent = 0
    ecc_x = ecc_y = rsa_modulus = b""
    if key_type == ALG_ECC:
        curve = r.u16()
        kdf = r.u16()
        if kdf != ALG_NULL:
            r.u16()
        ecc_x = r.tpm2b(66, "unique.x")
        ecc_y = r.tpm2b(66, "unique.y")
    else:
        rsa_bits = r.u16()
        rsa_exponent = r.u32() or 65537           # 0 means the default exponent
        rsa_modulus = r.tpm2b(512, "unique.rsa")
    r.end()
    return PublicArea(key_type, name_alg, attributes, auth_policy, scheme, scheme_hash, curve,
                      ecc_x, ecc_y, rsa_bits, rsa_exponent, rsa_modulus, inner_bytes)


def qualified_name_under_endorsement(name: bytes, name_alg: int = ALG_SHA256) -> bytes:
    """Qualified name of a primary object of the endorsement hierarchy:
    nameAlg || H(handle(TPM_RH_ENDORSEMENT) || name). The TPM puts it in a quote's qualifiedSigner."""
    return struct.pack(">H", name_alg) + digest(name_alg, struct.pack(">I", TPM_RH_ENDORSEMENT) + name)


def pcr_composite_digest(hash_alg: int, values: list[bytes] | tuple[bytes, ...]) -> bytes:
    """The quote's pcrDigest: H_sign(concatenated PCR values in selection order)."""
    return digest(hash_alg, b"".join(values))
