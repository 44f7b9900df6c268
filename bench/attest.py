"""`ztfl bench attest`: TPM quote and gateway verification latency (median, p95).

Against a TPM given by --tcti, or a private swtpm started for the run. Each iteration is one
round as in production: the verifier issues a nonce, the agent quotes over it with its
protocol keys, the verifier checks the evidence bytes (decode + every check of
attestation.verifier). Enrolment (MakeCredential + ActivateCredential) is timed once.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from ztfl.bench.report import add_json_flag, emit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tcti", default=None, help="TPM to use (default: start a private swtpm)")
    parser.add_argument("--quotes", type=int, default=200, help="rounds to time (default 200)")
    parser.add_argument("--pcrs", default="sha256:23", help="PCR selection (default sha256:23)")
    add_json_flag(parser)


def _summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"median_ms": round(statistics.median(ordered) * 1e3, 3), "p95_ms": round(p95 * 1e3, 3),
            "min_ms": round(ordered[0] * 1e3, 3), "max_ms": round(ordered[-1] * 1e3, 3)}


def run(args) -> int:
    from ztfl.attestation.enrolment import EnrolmentAuthority
    from ztfl.attestation.measure import expected_pcr
    from ztfl.attestation.policy import AttestationPolicy
    from ztfl.attestation.registry import IdentityRegistry
    from ztfl.attestation.tpm_agent import TpmAttestor
    from ztfl.attestation.tpm_wire import PcrSelection
    from ztfl.attestation.verifier import Verifier
    from ztfl.services import start_swtpm

    if args.quotes < 1:
        raise SystemExit("ztfl bench attest: --quotes must be at least 1")
    selection = PcrSelection.parse(args.pcrs)
    with tempfile.TemporaryDirectory(prefix="ztfl-bench-attest-") as tmp:
        tpm = None if args.tcti else start_swtpm(Path(tmp) / "tpm")
        tcti = args.tcti or tpm.tcti
        try:
            with TpmAttestor(tcti, Path(tmp) / "agent") as attestor:
                measurement = hashlib.sha256(b"ztfl bench agent").digest()
                attestor.extend_measurement(measurement)
                values = dict(zip(selection.pcrs, attestor.read_pcrs(selection)))
                policy = AttestationPolicy(hash_alg="sha256", pcrs=selection.pcrs,
                                           allowlist={"bench": {p: frozenset({v}) for p, v in values.items()}})
                measured = values.get(attestor.pcr_index)
                if measured is not None and measured != expected_pcr(measurement):
                    raise SystemExit("ztfl bench attest: PCR value differs from the expected measurement")
                registry = IdentityRegistry()
                authority = EnrolmentAuthority(registry, policy)
                t0 = time.perf_counter()
                challenge = authority.begin(attestor.enrolment_request("bench-agent", "bench"))
                authority.complete(attestor.activate("bench-agent", challenge))
                enrol_s = time.perf_counter() - t0
                verifier = Verifier(registry, policy)
                keys = os.urandom(64)
                quote_s, verify_s, size = [], [], 0
                for round_id in range(1, args.quotes + 1):
                    nonce = verifier.issue_nonce(round_id)
                    t0 = time.perf_counter()
                    evidence = attestor.quote(nonce, round_id, keys, selection).to_bytes()
                    t1 = time.perf_counter()
                    verifier.verify("bench-agent", round_id, keys, evidence)
                    t2 = time.perf_counter()
                    verifier.retire_round(round_id)
                    quote_s.append(t1 - t0)
                    verify_s.append(t2 - t1)
                    size = len(evidence)
        finally:
            if tpm is not None:
                tpm.stop()
    result = {"benchmark": "attest", "tpm": "swtpm (private)" if args.tcti is None else tcti,
              "pcrs": str(selection), "quotes": args.quotes, "evidence_bytes": size,
              "enrolment_ms": round(enrol_s * 1e3, 3),
              "quote": _summary(quote_s), "verify": _summary(verify_s),
              "accepted": verifier.metrics.accepted_tpm, "rejected": sum(verifier.metrics.rejected.values())}
    emit(result, args.json, lambda r: (
        f"enrolment {r['enrolment_ms']} ms; quote median {r['quote']['median_ms']} ms "
        f"p95 {r['quote']['p95_ms']} ms; verify median {r['verify']['median_ms']} ms "
        f"p95 {r['verify']['p95_ms']} ms over {args.quotes} rounds ({size}-byte evidence)"))
    return 0
