"""Test helpers for measured boot and IMA: a simulated kernel that writes its logs in the kernel's
exact binary formats and extends each measurement into a real (software) TPM as Linux does, and
a runner for keylime's IMA verifier (an independent implementation, in its own venv)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from ztfl.attestation.eventlog import EV_NO_ACTION, parse_event_log
from ztfl.attestation.ima import ImaEntry, encode_ima_entry, parse_ima_log
from ztfl.attestation.tpm_wire import HASH_NAMES

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "attestation-fixtures"
KEYLIME_PYTHON = REPO / ".venv-keylime" / "bin" / "python"
BOOT_LOGS = ("event-arch-linux.bin", "event-gce-ubuntu-2104-log.bin", "event-sd-boot-fedora37.bin")


def boot_log(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


class SimulatedKernel:
    """A board with firmware measured boot and IMA (ima_template=ima-ng, ima_hash=sha256), on a TPM
    reached through a TpmAttestor: the firmware's events are extended into PCRs 0-7 (and any other
    PCR the log names), IMA's entries are appended to a binary list file and extended into PCR 10
    of every bank, each with the template data hashed by that bank's algorithm (Linux >= 5.11)."""

    def __init__(self, attestor, workdir: Path, banks: tuple[str, ...] = ("sha1", "sha256")):
        self.attestor = attestor
        self.banks = banks
        self.list_path = Path(workdir) / "binary_runtime_measurements"
        self.list_path.parent.mkdir(parents=True, exist_ok=True)
        self.list_path.write_bytes(b"")
        self.entries: list[ImaEntry] = []

    def boot(self, log: bytes | None) -> None:
        """Firmware extends its log, then IMA's first entry: boot_aggregate over PCRs 0-9 (sha256)."""
        if log is not None:
            self.firmware(log)
        self.boot_aggregate()

    def firmware(self, log: bytes) -> None:
        for event in parse_event_log(log).events:
            if event.event_type != EV_NO_ACTION:
                self.attestor.extend_pcr(event.pcr, {HASH_NAMES[a]: d for a, d in event.digests.items()
                                                     if a in HASH_NAMES})

    def boot_aggregate(self) -> None:
        from ztfl.attestation.tpm_wire import PcrSelection
        pcrs = self.attestor.read_pcrs(PcrSelection.parse("sha256:0,1,2,3,4,5,6,7,8,9"))
        self.record(encode_ima_entry("boot_aggregate", hashlib.sha256(b"".join(pcrs)).digest()))

    def load(self, path: Path) -> None:
        """A process opens `path` for reading or executing: IMA measures it (by its real path)."""
        real = Path(path).resolve()
        self.record(encode_ima_entry(str(real), hashlib.sha256(real.read_bytes()).digest()))

    def record(self, raw: bytes) -> None:
        entry = parse_ima_log(raw, len(self.entries))[0]
        with open(self.list_path, "ab") as f:
            f.write(raw)
        self.entries.append(entry)
        self.attestor.extend_pcr(entry.pcr, {b: entry.template_hash(b) for b in self.banks})


def copy_release(root: Path, dependency: str = "nacl") -> dict[str, Path]:
    """A release tree as an agent board installs it: ztfl's agent/, privacy/ and hw_profiles/
    folders and one installed dependency, with checked-hash bytecode compiled at install time."""
    import importlib.util

    from ztfl.attestation.runtime_policy import compile_bytecode
    out = {}
    for folder in ("agent", "privacy", "hw_profiles"):
        out[folder] = root / "ztfl" / folder
        shutil.copytree(REPO / folder, out[folder], ignore=shutil.ignore_patterns("__pycache__"))
    spec = importlib.util.find_spec(dependency)
    out[dependency] = root / "site-packages" / dependency
    shutil.copytree(Path(spec.origin).parent, out[dependency], ignore=shutil.ignore_patterns("__pycache__"))
    compile_bytecode(out.values())
    return out


def release_files(release: dict[str, Path]) -> list[Path]:
    return sorted(p for d in release.values() for p in d.rglob("*") if p.is_file())


# --- keylime -----------------------------------------------------------------------------------

_KEYLIME = r"""
import json, sys, logging
logging.disable(logging.CRITICAL)
from keylime.common.algorithms import Hash
from keylime.ima import ima
job = json.load(sys.stdin)
policy = ima.empty_policy()
policy["digests"] = job["digests"]
policy["excludes"] = job["excludes"]
policy["ima"]["log_hash_alg"] = "sha1"
running, failure = ima.process_measurement_list(None, job["lines"], policy, job["pcr"],
                                                hash_alg=Hash(job["bank"]))
print(json.dumps({"running": running, "failures": sorted(set(failure.get_event_ids()))}))
"""


def keylime_available() -> bool:
    return KEYLIME_PYTHON.exists()


def keylime_verify(lines: list[str], digests: dict[str, list[str]], excludes: list[str], pcr: bytes | None,
                   bank: str) -> dict:
    """keylime's verdict on an ASCII measurement list: its replayed PCR 10 and the ids of every
    failure it found (for example ima.validation.ima-ng.not_in_allowlist)."""
    job = {"lines": [line + "\n" for line in lines], "digests": digests, "excludes": excludes,
           "pcr": pcr.hex() if pcr is not None else None, "bank": bank}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run([str(KEYLIME_PYTHON), "-c", _KEYLIME], input=json.dumps(job), capture_output=True,
                          text=True, timeout=120, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"keylime failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
