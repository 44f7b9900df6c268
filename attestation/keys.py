"""Turn TPM public areas into `cryptography` keys (and PEM, for tpm2_checkquote)."""
from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ztfl.attestation.errors import PublicKeyFormatError
from ztfl.attestation.tpm_wire import ALG_ECC, ECC_NIST_P256, PublicArea, parse_public


def public_area_to_key(area: PublicArea):
    if area.key_type == ALG_ECC:
        if area.curve != ECC_NIST_P256:
            raise PublicKeyFormatError(f"ECC curve 0x{area.curve:04x} unsupported (only NIST P-256)")
        try:
            return ec.EllipticCurvePublicNumbers(int.from_bytes(area.ecc_x, "big"),
                                                 int.from_bytes(area.ecc_y, "big"),
                                                 ec.SECP256R1()).public_key()
        except ValueError as exc:
            raise PublicKeyFormatError(f"ECC point is not on P-256: {exc}") from None
    try:
        return rsa.RSAPublicNumbers(area.rsa_exponent, int.from_bytes(area.rsa_modulus, "big")).public_key()
    except ValueError as exc:
        raise PublicKeyFormatError(f"RSA key invalid: {exc}") from None


def public_bytes_to_pem(tpm2b_public: bytes) -> bytes:
    key = public_area_to_key(parse_public(tpm2b_public))
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
