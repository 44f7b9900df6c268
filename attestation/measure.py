"""What the agent extends into its measurement PCR, and what the gateway should expect there.

measurement = SHA-256 over the sorted list of (relative path, SHA-256 of content) of the
agent's code (Python sources and the hardware profiles it reads) and model files, each entry
framed as u16 path length || path || 32-byte digest.
The agent resets the PCR and runs PCR_Event(measurement), so every bank ends at
    H(0^n || H(measurement))      (expected_pcr below)
which is what the allow-list of each hardware profile lists for a released agent.

PCR 23 is resettable at locality 0, so this is the agent's own claim about its code: it is an
application-level measurement. Where the kernel keeps an IMA list, the gateway judges the code
by that list and the signed runtime policy instead (attestation.ima, attestation.runtime_policy),
whatever PCR 23 holds.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from pathlib import Path

CODE_PACKAGES = ("agent", "fednet", "protocol", "attestation", "models", "privacy", "hw_profiles", "config")
CODE_SUFFIXES = (".py", ".yaml")


def measure_files(files: Iterable[str | Path], root: str | Path) -> bytes:
    root = Path(root).resolve()
    entries = []
    for f in files:
        path = Path(f).resolve()
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        entries.append((rel, hashlib.sha256(path.read_bytes()).digest()))
    h = hashlib.sha256()
    for rel, digest in sorted(entries):
        name = rel.encode("utf-8")
        h.update(struct.pack(">H", len(name)) + name + digest)
    return h.digest()


def agent_code_files(repo_root: str | Path) -> list[Path]:
    """The Python sources (and data files such as the hardware profiles) of the packages an agent runs."""
    root = Path(repo_root)
    return sorted(p for pkg in CODE_PACKAGES if (root / pkg).is_dir() for p in (root / pkg).rglob("*")
                  if p.suffix in CODE_SUFFIXES and p.is_file())


def measure_agent(repo_root: str | Path, model_files: Iterable[str | Path] = ()) -> bytes:
    files = agent_code_files(repo_root) + [Path(m) for m in model_files]
    return measure_files(files, repo_root)


def expected_pcr(measurement: bytes, hash_alg: str = "sha256") -> bytes:
    """PCR value after reset and PCR_Event(measurement) in bank `hash_alg`."""
    size = hashlib.new(hash_alg).digest_size
    return hashlib.new(hash_alg, bytes(size) + hashlib.new(hash_alg, measurement).digest()).digest()
