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


# What the firmware is not held to, each with the runner's reason: it adds no DP noise and refuses
# every DP round configuration before reading its record (it refuses these bodies too, as malformed).
CPYTHON_ONLY = {"dp.json: dp_record, dp_digest"} | {
    f"dp.json: refused {case} as ConfigurationError"
    for case in ("unknown mechanism", "poisson mean 0", "poisson mean above 2^52", "clip 0",
                 "threshold below min_survivors")}


def test_firmware_passes_every_vector_file():
    vectors = _vectors()
    out = run_json(SCRIPT, vectors, timeout=300)
    assert out["failures"] == []
    # Every file was exercised, none silently skipped.
    assert set(out["checks"]) == set(vectors)
    assert all(n > 0 for n in out["checks"].values())
    assert {"certs.json", "dp.json"} <= set(out["checks"])
    assert set(out["cpython_only"]) == CPYTHON_ONLY
    assert all("DP record" in why for why in out["cpython_only"].values())


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
    # A certificate check expecting another reason, and a DP body the decoders refuse presented
    # as the configuration without DP.
    check = next(c for c in bad["certs.json"]["checks"] if c["error"] == "certificate_expired")
    check["error"] = "certificate_revoked"
    bad["dp.json"]["plain_body"] = bad["dp.json"]["refused"][0]["body"]
    out = run_json(SCRIPT, {name: bad[name] for name in ("kdf.json", "masking.json", "session.json", "certs.json",
                                                         "dp.json")}, timeout=300)
    assert any(f.startswith("kdf.json: hkdf") for f in out["failures"])
    assert any(f.startswith("masking.json: masked client") for f in out["failures"])
    assert "session.json: round: client 2 reply 4" in out["failures"]
    assert any(f.startswith(f"session.json: refusal {refusal['name']}: WrongRound") for f in out["failures"])
    assert any(f.startswith(f"certs.json: check {check['name']}: 'certificate_expired'") for f in out["failures"])
    assert any(f.startswith("dp.json: MalformedMessage") for f in out["failures"])
