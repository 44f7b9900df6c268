"""`ztfl bench attest`: TPM quote and gateway verification latency (median, p95).

Against a TPM given by --tcti, or a private swtpm started for the run. Each iteration is one
round as in production: the verifier issues a nonce, the agent quotes over it with its
protocol keys, the verifier checks the evidence bytes (decode + every check of
attestation.verifier). Enrolment (MakeCredential + ActivateCredential) is timed once.

`ima`: the same with measured boot and IMA, on a list of --ima-entries entries written in the
kernel's binary format and extended into the TPM's PCRs 0-7 and 10 as firmware and Linux do:
the gateway's cost for a first quote (the whole list replayed and judged against a runtime policy
of as many files) and for incremental quotes carrying the --ima-new entries measured since.
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
    parser.add_argument("--ima-entries", type=int, default=5000, help="IMA list length (default 5000; 0: skip)")
    parser.add_argument("--ima-new", type=int, default=50, help="entries per incremental quote (default 50)")
    parser.add_argument("--ima-rounds", type=int, default=20, help="incremental quotes timed (default 20)")
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
                ima = (_measured(attestor, registry, Path(tmp), args) if args.ima_entries > 0 else None)
        finally:
            if tpm is not None:
                tpm.stop()
    result = {"benchmark": "attest", "tpm": "swtpm (private)" if args.tcti is None else tcti,
              "pcrs": str(selection), "quotes": args.quotes, "evidence_bytes": size,
              "enrolment_ms": round(enrol_s * 1e3, 3),
              "quote": _summary(quote_s), "verify": _summary(verify_s),
              "accepted": verifier.metrics.accepted_tpm, "rejected": sum(verifier.metrics.rejected.values())}
    if ima is not None:
        result["ima"] = ima
    emit(result, args.json, lambda r: (
        f"enrolment {r['enrolment_ms']} ms; quote median {r['quote']['median_ms']} ms "
        f"p95 {r['quote']['p95_ms']} ms; verify median {r['verify']['median_ms']} ms "
        f"p95 {r['verify']['p95_ms']} ms over {args.quotes} rounds ({size}-byte evidence)"
        + (f"\nIMA, {r['ima']['entries']} entries: first quote verified in {r['ima']['first']['median_ms']} ms "
           f"({r['ima']['first_evidence_bytes']} bytes); {r['ima']['new_entries']} new entries in "
           f"{r['ima']['incremental']['median_ms']} ms median, p95 {r['ima']['incremental']['p95_ms']} ms"
           if "ima" in r else "")))
    return 0


def _measured(attestor, registry, tmp: Path, args) -> dict:
    """The gateway's cost of quote -> boot log replay -> boot policy -> IMA replay -> runtime policy."""
    from ztfl.attestation.boot_policy import reference_boot_policy
    from ztfl.attestation.eventlog import EV_NO_ACTION, parse_event_log
    from ztfl.attestation.ima import ImaReplayBook, encode_ima_entry, parse_ima_log
    from ztfl.attestation.messages import AttestationReceipt
    from ztfl.attestation.policy import AttestationPolicy
    from ztfl.attestation.runtime_policy import RuntimePolicy
    from ztfl.attestation.tpm_wire import HASH_NAMES
    from ztfl.attestation.verifier import Verifier
    from ztfl.bench.fuzz_targets import boot_event_log

    if args.ima_new < 1 or args.ima_rounds < 1:
        raise SystemExit("ztfl bench attest: --ima-new and --ima-rounds must be at least 1")
    boot = boot_event_log()
    (tmp / "boot.bin").write_bytes(boot)
    for event in parse_event_log(boot).events:
        if event.event_type != EV_NO_ACTION:
            attestor.extend_pcr(event.pcr, {HASH_NAMES[a]: d for a, d in event.digests.items()})
    total = args.ima_entries + args.ima_new * args.ima_rounds
    files = {f"/opt/ztfl/lib/python3.11/site-packages/pkg{i // 100}/mod{i}.py": hashlib.sha256(b"%d" % i).digest()
             for i in range(total)}
    entries = [encode_ima_entry(path, d) for path, d in files.items()]
    ima_list = tmp / "binary_runtime_measurements"
    ima_list.write_bytes(b"")

    def measure(raw: list[bytes]) -> None:
        with open(ima_list, "ab") as f:
            f.write(b"".join(raw))
        for entry in parse_ima_log(b"".join(raw)):
            attestor.extend_pcr(entry.pcr, {b: entry.template_hash(b) for b in ("sha1", "sha256")})

    measure(entries[:args.ima_entries])
    runtime = RuntimePolicy({p: frozenset({d}) for p, d in files.items()})
    policy = AttestationPolicy(hash_alg="sha256", pcrs=(0, 1, 2, 3, 4, 5, 6, 7, 10), allowlist={"bench": {}},
                               boot=reference_boot_policy(parse_event_log(boot), "sha256"), runtime=runtime)
    verifier = Verifier(registry, policy)
    attestor.use_kernel_measurements(ima_list=ima_list, boot_log=tmp / "boot.bin")
    keys = os.urandom(64)
    round_id = 10_000

    def one_round() -> tuple[float, int]:
        nonlocal round_id
        round_id += 1
        evidence = attestor.quote(verifier.issue_nonce(round_id), round_id, keys).to_bytes()
        t0 = time.perf_counter()
        seat = verifier.verify("bench-agent", round_id, keys, evidence)
        elapsed = time.perf_counter() - t0
        attestor.acknowledge(AttestationReceipt(round_id, seat.ima_entries))
        return elapsed, len(evidence)

    first_s = []
    for _ in range(3):
        verifier.ima_book = ImaReplayBook(policy.hash_alg)       # a gateway that has seen nothing yet
        attestor.acknowledge(AttestationReceipt(0, 0))
        elapsed, first_bytes = one_round()
        first_s.append(elapsed)
    incremental_s = []
    for i in range(args.ima_rounds):
        start = args.ima_entries + i * args.ima_new
        measure(entries[start:start + args.ima_new])
        elapsed, incremental_bytes = one_round()
        incremental_s.append(elapsed)
    summary = _summary(incremental_s)
    return {"entries": args.ima_entries, "pcrs": "sha256:0,1,2,3,4,5,6,7,10 (+23)",
            "first": _summary(first_s), "first_evidence_bytes": first_bytes,
            "new_entries": args.ima_new, "incremental": summary, "incremental_evidence_bytes": incremental_bytes,
            "incremental_target_ms": 10.0, "incremental_within_target": summary["median_ms"] <= 10.0}
