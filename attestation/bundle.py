"""The digest of what is flashed to a device-key board, and the evidence that reports it.

    bundle digest = SHA-256( for each file, sorted by relative path:
                             u16_be(len(path)) || path || SHA-256(content) )     (attestation.measure)

over every file of the board's filesystem that `ztfl flash esp32` copies (lib/, boot.py,
main.py, config.json, records, certificates): everything but the agent's own state file and
the build's manifest. `ztfl firmware build` computes it over the bundle and records it in the
device list; the board (ztfw.attest) computes it over its filesystem at start.

Evidence bytes, big-endian:

    BundleEvidence "ZSB\\x01" | u8 32, bundle digest | u16 n, SoftwareEvidence[n]

where the device key's signature inside the SoftwareEvidence binds `identity key || bundle
digest` in place of the identity key alone, so a relay cannot swap the reported digest.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ztfl.attestation.framing import Reader, Writer
from ztfl.attestation.measure import measure_files

TAG_BUNDLE = b"ZSB\x01"
DIGEST_BYTES = 32
MAX_INNER_BYTES = 512
NOT_FLASHED = ("manifest.json", "state.json", "state.json.tmp")    # build output / written by the agent


def bundle_files(root: str | Path) -> list[Path]:
    root = Path(root)
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and p.relative_to(root).as_posix() not in NOT_FLASHED)


def bundle_digest(root: str | Path) -> bytes:
    return measure_files(bundle_files(root), root)


def bound_keys(identity_key: bytes, digest: bytes) -> bytes:
    """What the device key signs over in place of the identity key alone."""
    return bytes(identity_key) + bytes(digest)


@dataclass(frozen=True)
class BundleEvidence:
    digest: bytes
    evidence: bytes             # SoftwareEvidence bytes, signed over bound_keys(identity key, digest)

    def to_bytes(self) -> bytes:
        return Writer(TAG_BUNDLE).blob8(self.digest).blob16(self.evidence).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> "BundleEvidence":
        r = Reader(data, TAG_BUNDLE, "BundleEvidence")
        digest = r.blob8("bundle digest", DIGEST_BYTES, DIGEST_BYTES)
        inner = r.blob16("evidence", 1, MAX_INNER_BYTES)
        r.end()
        return cls(digest, inner)
