"""Device-key attestation evidence (attestation.binding / attestation.messages): a board
without a TPM signs, with its provisioned Ed25519 device key, the round's nonce bound to
the protocol public keys it advertises. It proves possession of the provisioned key, not
the integrity of the firmware."""
import hashlib
import struct

from ztfw import ed25519

SOFTWARE_QUOTE_LABEL = b"ztfl/software-quote/v1\x00"
TAG_SOFTWARE = b"ZSQ\x01"
MIN_NONCE_BYTES = 16
MAX_NONCE_BYTES = 64


class AttestError(ValueError):
    pass


def qualifying_data(nonce, round_id, public_keys):
    """SHA-256(nonce || u64_be(round) || public keys)."""
    if not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        raise AttestError("nonce must be 16..64 bytes, got %d" % len(nonce))
    if not 0 <= round_id < 1 << 64:
        raise AttestError("round id out of range")
    h = hashlib.sha256(bytes(nonce))
    h.update(struct.pack(">Q", round_id))
    h.update(bytes(public_keys))
    return h.digest()


def software_evidence(seed, public, nonce, round_id, public_keys):
    """SoftwareEvidence bytes: tag, u64 round, blob8 nonce, blob8 signature."""
    message = SOFTWARE_QUOTE_LABEL + qualifying_data(nonce, round_id, public_keys)
    signature = ed25519.sign(seed, message, public)
    return (TAG_SOFTWARE + struct.pack(">Q", round_id) + bytes((len(nonce),)) + bytes(nonce)
            + bytes((len(signature),)) + signature)
