"""The firmware passes the protocol's conformance vectors (tests/vectors/*.json) in real
MicroPython: the same files the CPython implementation is held to."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from ztfl.firmware_tools.micropython_host import FIRMWARE_DIR, run_json

VECTORS = Path(__file__).resolve().parent / "vectors"
SCRIPT = (FIRMWARE_DIR / "host" / "conformance.py").read_text()


def _vectors() -> dict:
    files = {p.name: json.loads(p.read_text()) for p in sorted(VECTORS.glob("*.json"))}
    assert files, f"no vectors in {VECTORS}"
    return files


def test_firmware_passes_every_vector_file():
    vectors = _vectors()
    out = run_json(SCRIPT, vectors, timeout=300)
    assert out["failures"] == []
    # Every file was exercised, none silently skipped.
    assert set(out["checks"]) == set(vectors)
    assert all(n > 0 for n in out["checks"].values())


def test_conformance_run_reports_a_corrupted_vector():
    vectors = _vectors()
    bad = copy.deepcopy(vectors)
    case = bad["kdf.json"]["hkdf_sha256_zero_salt"][0]
    case["okm"] = ("0" if case["okm"][0] != "0" else "1") + case["okm"][1:]
    bad["masking.json"]["clients"][0]["masked"][0] ^= 1
    # A key-reuse round whose client 2 would have to send another CONSISTENCY_TAGS frame, and a
    # refusal expecting another error class.
    replies = bad["session.json"]["round"]["clients"][1]["replies"]
    replies[4] = replies[4][:-2] + ("00" if replies[4][-2:] != "00" else "01")
    refusal = next(r for r in bad["session.json"]["refusals"] if r["error"] == "WrongRound")
    refusal["error"] = "BadSignature"
    out = run_json(SCRIPT, {"kdf.json": bad["kdf.json"], "masking.json": bad["masking.json"],
                            "session.json": bad["session.json"]}, timeout=300)
    assert any(f.startswith("kdf.json: hkdf") for f in out["failures"])
    assert any(f.startswith("masking.json: masked client") for f in out["failures"])
    assert "session.json: round: client 2 reply 4" in out["failures"]
    assert any(f.startswith(f"session.json: refusal {refusal['name']}: WrongRound") for f in out["failures"])
