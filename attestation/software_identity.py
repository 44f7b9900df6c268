"""Software-rooted identity for devices without a TPM (ESP32): an Ed25519 device key made at
provisioning time. It proves possession of the provisioned key, not the integrity of the
device's code, so the gateway admits it only where the policy allows and marks it."""
from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ztfl.attestation.binding import software_quote_message
from ztfl.attestation.messages import SoftwareEvidence


def new_device_key() -> tuple[bytes, bytes]:
    """(32-byte private seed, 32-byte public key)."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    return seed, public_key_of(seed)


def public_key_of(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign_software_quote(seed: bytes, nonce: bytes, round_id: int, public_keys: bytes) -> SoftwareEvidence:
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(software_quote_message(nonce, round_id, public_keys))
    return SoftwareEvidence(round_id, bytes(nonce), signature)
