"""The gateway's durable memory: a SQLite registry of rounds, participants and model versions,
and the model files themselves, written atomically.

A round is committed in one SQLite transaction that also records the new model versions, and
the model files are renamed into place (after fsync) *before* that transaction: a crash leaves
either the old state or the new one, never a registry row pointing at a half-written file.
What a crash can leave is a model file no version points at (written, never committed) or the
temporary file of a write cut short; `remove_uncommitted_files()` clears both at start. After a
restart the gateway resumes from `last_committed_round()` and `latest_models()`.
"""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ztfl.fednet.files import atomic_write_bytes

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    variant TEXT NOT NULL, version INTEGER NOT NULL, round INTEGER NOT NULL,
    sha256 TEXT NOT NULL, path TEXT NOT NULL, created REAL NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (variant, version));
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL,
    started REAL NOT NULL, finished REAL, reason TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (round, attempt));
CREATE TABLE IF NOT EXISTS participants (
    round INTEGER NOT NULL, attempt INTEGER NOT NULL, cohort TEXT NOT NULL, agent_id TEXT NOT NULL,
    outcome TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (round, attempt, cohort, agent_id));
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY, profile TEXT NOT NULL, model_variant TEXT NOT NULL, mask_bits INTEGER NOT NULL,
    samples INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL);
"""


# The names write_model_file gives, and the temporary names agent.files.atomic_write_bytes uses
# on the way: only these are ever removed from the models directory.
MODEL_FILE = re.compile(r"v\d{6}-[0-9a-f]{12}\.npy")
MODEL_TEMP_FILE = re.compile(r"\.v\d{6}-[0-9a-f]{12}\.npy\..+")


class RegistryError(RuntimeError):
    """The registry and the model files disagree (a file is missing or its digest changed)."""


@dataclass
class ModelVersion:
    variant: str
    version: int
    round: int
    sha256: str
    path: Path
    metrics: dict


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _npy_bytes(vector: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(vector, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


class Registry:
    def __init__(self, state_dir: str | Path):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.state_dir / "registry.sqlite3", isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # models ------------------------------------------------------------------------------------
    def write_model_file(self, variant: str, version: int, vector: np.ndarray) -> tuple[Path, str]:
        """Put a model file in place (atomically) before the round that owns it commits."""
        data = _npy_bytes(vector)
        digest = hashlib.sha256(data).hexdigest()
        path = self.state_dir / "models" / variant / f"v{version:06d}-{digest[:12]}.npy"
        atomic_write_bytes(path, data)
        return path, digest

    def remove_uncommitted_files(self) -> list[Path]:
        """Delete model files that no committed version names (a crash between writing the file
        and the commit) and temporary files of interrupted writes; returns what was removed.
        Only the gateway that owns the state directory calls this, at start, before it writes:
        a file written for a commit in progress would look uncommitted too."""
        root = self.state_dir / "models"
        if not root.is_dir():
            return []
        # Compared by variant directory and file name: the stored paths are absolute, and a state
        # directory that was moved must not lose its committed files.
        committed = {(Path(p).parent.name, Path(p).name) for (p,) in self.db.execute("SELECT path FROM models")}
        removed = []
        for variant_dir in sorted(d for d in root.iterdir() if d.is_dir()):
            for path in sorted(variant_dir.iterdir()):
                uncommitted = MODEL_FILE.fullmatch(path.name) and (variant_dir.name, path.name) not in committed
                if path.is_file() and (uncommitted or MODEL_TEMP_FILE.fullmatch(path.name)):
                    path.unlink()
                    removed.append(path)
        return removed

    def latest_models(self) -> dict[str, ModelVersion]:
        rows = self.db.execute(
            "SELECT variant, version, round, sha256, path, metrics FROM models m WHERE version = "
            "(SELECT MAX(version) FROM models WHERE variant = m.variant)").fetchall()
        return {r[0]: ModelVersion(r[0], r[1], r[2], r[3], Path(r[4]), json.loads(r[5])) for r in rows}

    def model_versions(self, variant: str) -> list[ModelVersion]:
        rows = self.db.execute("SELECT variant, version, round, sha256, path, metrics FROM models "
                               "WHERE variant = ? ORDER BY version", (variant,)).fetchall()
        return [ModelVersion(r[0], r[1], r[2], r[3], Path(r[4]), json.loads(r[5])) for r in rows]

    def load_model(self, mv: ModelVersion) -> np.ndarray:
        if not mv.path.is_file():
            raise RegistryError(f"model file {mv.path} of {mv.variant} v{mv.version} is missing")
        digest = file_sha256(mv.path)
        if digest != mv.sha256:
            raise RegistryError(f"model file {mv.path} has sha256 {digest}, registry says {mv.sha256}")
        return np.load(mv.path, allow_pickle=False)

    def commit_initial_model(self, variant: str, vector: np.ndarray) -> ModelVersion:
        path, digest = self.write_model_file(variant, 0, vector)
        self.db.execute("INSERT INTO models VALUES (?, 0, 0, ?, ?, ?, '{}')",
                        (variant, digest, str(path), time.time()))
        return ModelVersion(variant, 0, 0, digest, path, {})

    # rounds ------------------------------------------------------------------------------------
    def last_committed_round(self) -> int:
        row = self.db.execute("SELECT MAX(round) FROM rounds WHERE status = 'committed'").fetchone()
        return row[0] or 0

    def next_attempt(self, rnd: int) -> int:
        row = self.db.execute("SELECT MAX(attempt) FROM rounds WHERE round = ?", (rnd,)).fetchone()
        return 0 if row[0] is None else row[0] + 1

    def begin_round(self, rnd: int, attempt: int) -> None:
        self.db.execute("INSERT INTO rounds (round, attempt, status, started) VALUES (?, ?, 'running', ?)",
                        (rnd, attempt, time.time()))

    def record_participants(self, rnd: int, attempt: int, cohort: str, outcomes: dict[str, tuple[str, str]]):
        self.db.executemany("INSERT OR REPLACE INTO participants VALUES (?, ?, ?, ?, ?, ?)",
                            [(rnd, attempt, cohort, a, o, r) for a, (o, r) in outcomes.items()])

    def abort_round(self, rnd: int, attempt: int, reason: str, detail: dict | None = None) -> None:
        self.db.execute("UPDATE rounds SET status='aborted', finished=?, reason=?, detail=? "
                        "WHERE round=? AND attempt=?",
                        (time.time(), reason, json.dumps(detail or {}), rnd, attempt))

    def commit_round(self, rnd: int, attempt: int, new_models: list[ModelVersion], detail: dict) -> None:
        """One transaction: the round becomes committed together with its model versions."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for mv in new_models:
                self.db.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?)",
                                (mv.variant, mv.version, rnd, mv.sha256, str(mv.path), time.time(),
                                 json.dumps(mv.metrics)))
            self.db.execute("UPDATE rounds SET status='committed', finished=?, detail=? "
                            "WHERE round=? AND attempt=?", (time.time(), json.dumps(detail), rnd, attempt))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def rounds(self) -> list[dict]:
        rows = self.db.execute("SELECT round, attempt, status, started, finished, reason, detail FROM rounds "
                               "ORDER BY round, attempt").fetchall()
        return [{"round": r[0], "attempt": r[1], "status": r[2], "started": r[3], "finished": r[4],
                 "reason": r[5], **json.loads(r[6])} for r in rows]

    def participants(self, rnd: int) -> list[tuple]:
        return self.db.execute("SELECT attempt, cohort, agent_id, outcome, reason FROM participants "
                               "WHERE round = ? ORDER BY attempt, cohort, agent_id", (rnd,)).fetchall()

    # agents ------------------------------------------------------------------------------------
    def upsert_agent(self, agent_id: str, profile: str, variant: str, mask_bits: int, samples: int) -> None:
        now = time.time()
        self.db.execute("INSERT INTO agents VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(agent_id) DO UPDATE SET "
                        "profile=excluded.profile, model_variant=excluded.model_variant, "
                        "mask_bits=excluded.mask_bits, samples=excluded.samples, last_seen=excluded.last_seen",
                        (agent_id, profile, variant, mask_bits, samples, now, now))
