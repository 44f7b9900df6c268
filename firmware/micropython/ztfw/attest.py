"""Device-key attestation evidence (attestation.binding / attestation.messages): a board
without a TPM signs, with its provisioned Ed25519 device key, the round's nonce bound to
the protocol public keys it advertises. It proves possession of the provisioned key, not
the integrity of the firmware.

With a bundle digest (attestation.bundle) the board also reports what is on its filesystem:
the digest of every flashed file, bound into the signature with its identity key. Computed by
the board's own code, it is a self-report unless that code is frozen into an image that Secure
Boot v2 verifies (docs/attestation.md)."""
import hashlib
import os
import struct

from ztfw import ed25519

SOFTWARE_QUOTE_LABEL = b"ztfl/software-quote/v1\x00"
TAG_SOFTWARE = b"ZSQ\x01"
TAG_BUNDLE = b"ZSB\x01"
NOT_FLASHED = ("manifest.json", "state.json", "state.json.tmp")
S_IFDIR = 0x4000
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


def _join(base, name):
    return name if not base else (base + name if base.endswith("/") else base + "/" + name)


def _files(base_dir, rel, out):
    for name in os.listdir(_join(base_dir, rel) if rel else (base_dir or ".")):
        path = _join(rel, name)
        if os.stat(_join(base_dir, path))[0] & S_IFDIR:
            _files(base_dir, path, out)
        elif path not in NOT_FLASHED:
            out.append(path)
    return out


def bundle_digest(base_dir, skip=()):
    """SHA-256 over (u16_be(len(path)) || path || SHA-256(content)) of every file under base_dir,
    sorted by relative path, except build output and the agent's state (and `skip`)."""
    buf = bytearray(512)
    h = hashlib.sha256()
    for path in sorted(p for p in _files(base_dir, "", []) if p not in skip):
        fh = hashlib.sha256()
        with open(_join(base_dir, path), "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                fh.update(memoryview(buf)[:n])
        name = path.encode()
        h.update(struct.pack(">H", len(name)) + name + fh.digest())
    return h.digest()


def bundle_evidence(seed, public, nonce, round_id, public_keys, digest):
    """BundleEvidence bytes: tag, blob8 bundle digest, blob16 SoftwareEvidence signed over
    public_keys || digest."""
    inner = software_evidence(seed, public, nonce, round_id, bytes(public_keys) + bytes(digest))
    return TAG_BUNDLE + bytes((len(digest),)) + bytes(digest) + struct.pack(">H", len(inner)) + inner
