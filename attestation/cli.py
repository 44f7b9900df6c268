"""`ztfl attest`: TPM attestation tools.

  quote    quote the local TPM over a nonce and write the files any verifier can check
           (quote.msg = TPMS_ATTEST, quote.sig = TPMT_SIGNATURE, quote.pcrs = PCR digests
           concatenated, ak.pem, plus qualification.hex = the quote's extraData)
  verify   check such a directory in Python (signature, extraData, PCR digest, expected PCRs)
  measure  print the measurement of the agent's code and model and the PCR value it yields
  ek       read the local TPM's EK into a PEM file and print its pin (for `ztfl provision --ek`)
  approve  let an enrolled id enrol once more with a new EK or AK (logged in the gateway's audit log)
  revoke   take a device's seat away from the next round on (logged likewise)
  policy, boot-policy   the runtime (IMA) and measured-boot reference policies (attestation.measured_cli)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ztfl.attestation import measured_cli

DEFAULT_STATE = Path.home() / ".ztfl" / "attestation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="attest_command", metavar="ACTION")
    sub.required = True

    q = sub.add_parser("quote", help="quote the TPM over a nonce; write quote.msg/.sig/.pcrs and ak.pem")
    q.add_argument("--tcti", required=True, help="e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321")
    q.add_argument("--nonce", required=True, help="hex, at least 16 bytes")
    q.add_argument("--out", required=True, type=Path, help="output directory")
    q.add_argument("--round", type=int, default=0, help="round id bound into the quote (default 0)")
    q.add_argument("--public-keys", default="", help="hex of the protocol public keys bound into the quote")
    q.add_argument("--pcrs", default="sha256:23", help="PCR selection (default sha256:23)")
    q.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help=f"AK state (default {DEFAULT_STATE})")
    q.add_argument("--ak-handle", type=lambda s: int(s, 0), default=None, help="persistent AK handle")

    v = sub.add_parser("verify", help="verify a directory written by `ztfl attest quote`")
    v.add_argument("--dir", required=True, type=Path)
    v.add_argument("--nonce", required=True, help="hex")
    v.add_argument("--round", type=int, default=0)
    v.add_argument("--public-keys", default="")
    v.add_argument("--hash", default="sha256", help="hash algorithm the quote must use")
    v.add_argument("--expect", action="append", default=[], metavar="PCR=HEX",
                   help="require this PCR value (repeatable)")

    m = sub.add_parser("measure", help="measurement of agent code + model, and the expected PCR value")
    m.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    m.add_argument("--model", action="append", default=[], type=Path, help="model file (repeatable)")
    m.add_argument("--hash", default="sha256")

    e = sub.add_parser("ek", help="read the TPM's endorsement key (PEM) and print its pin")
    e.add_argument("--tcti", required=True, help="e.g. device:/dev/tpmrm0")
    e.add_argument("--out", type=Path, default=Path("ek.pem"), help="PEM file to write (default ek.pem)")
    e.add_argument("--ek-type", default="EK-RSA2048", choices=["EK-RSA2048", "EK-ECC256"])

    for action, what in [("approve", "approve one re-enrolment of an id with a new EK or AK"),
                         ("revoke", "revoke a device: no seat from the next round on, no enrolment")]:
        d = sub.add_parser(action, help=what)
        d.add_argument("--state", required=True, type=Path, help="the gateway's state directory (state_dir)")
        d.add_argument("--agent", required=True, help="the device id")
        d.add_argument("--note", default="", help="why (kept in the audit log)")
        if action == "approve":
            d.add_argument("--ek", type=Path, help="only this EK: PEM key (ztfl attest ek), certificate, or pin")


    measured_cli.add_parsers(sub)


def _hex(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise SystemExit(f"ztfl attest: --{what} is not hex") from None


def run(args) -> int:
    return {"quote": _quote, "verify": _verify, "measure": _measure, "ek": _ek, "approve": _decide,
            "revoke": _decide, **measured_cli.HANDLERS}[args.attest_command](args)


def _quote(args) -> int:
    from ztfl.attestation.binding import qualifying_data
    from ztfl.attestation.errors import TpmError
    from ztfl.attestation.tpm_agent import DEFAULT_AK_HANDLE, TpmAttestor

    nonce = _hex(args.nonce, "nonce")
    keys = _hex(args.public_keys, "public-keys")
    try:
        extra = qualifying_data(nonce, args.round, keys)
        with TpmAttestor(args.tcti, args.state_dir, ak_handle=args.ak_handle or DEFAULT_AK_HANDLE) as tpm:
            evidence = tpm.quote(nonce, args.round, keys, args.pcrs)
            ak_pem = tpm.ak_pem()
            ak_pub = tpm.ensure_ak()
    except (TpmError, ValueError) as exc:
        print(f"ztfl attest quote: {exc}", file=sys.stderr)
        return 1
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "quote.msg").write_bytes(evidence.attest)
    (out / "quote.sig").write_bytes(evidence.signature)
    (out / "quote.pcrs").write_bytes(b"".join(evidence.pcr_values))
    (out / "ak.pem").write_bytes(ak_pem)
    (out / "ak.pub").write_bytes(ak_pub)
    (out / "qualification.hex").write_text(extra.hex() + "\n")
    (out / "evidence.bin").write_bytes(evidence.to_bytes())
    print(json.dumps({"out": str(out), "pcrs": args.pcrs, "qualification": extra.hex(),
                      "pcr_values": [v.hex() for v in evidence.pcr_values]}))
    return 0


def _verify(args) -> int:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from ztfl.attestation.binding import qualifying_data
    from ztfl.attestation.errors import AttestationError
    from ztfl.attestation.tpm_wire import (DIGEST_SIZES, HASH_ALGS, parse_quote_attest, parse_signature,
                                      pcr_composite_digest)

    d = args.dir
    try:
        attest_bytes = (d / "quote.msg").read_bytes()
        attest = parse_quote_attest(attest_bytes)
        signature = parse_signature((d / "quote.sig").read_bytes())
        key = serialization.load_pem_public_key((d / "ak.pem").read_bytes())
        alg = HASH_ALGS[args.hash]
        if signature.hash_alg != alg or [b.hash_alg for b in attest.pcr_selection] != [alg]:
            raise AttestationError(f"quote does not use {args.hash} throughout")
        try:
            key.verify(encode_dss_signature(signature.r, signature.s), attest_bytes,
                       ec.ECDSA({"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
                                 "sha512": hashes.SHA512}[args.hash]()))
        except InvalidSignature:
            raise AttestationError("signature does not verify with ak.pem") from None
        extra = qualifying_data(_hex(args.nonce, "nonce"), args.round, _hex(args.public_keys, "public-keys"))
        if attest.extra_data != extra:
            raise AttestationError("extraData is not H(nonce || round || public keys)")
        raw = (d / "quote.pcrs").read_bytes()
        size = DIGEST_SIZES[alg]
        pcrs = attest.pcr_selection[0].pcrs
        if len(raw) != size * len(pcrs):
            raise AttestationError(f"quote.pcrs has {len(raw)} bytes for {len(pcrs)} PCRs")
        values = [raw[i * size:(i + 1) * size] for i in range(len(pcrs))]
        if pcr_composite_digest(signature.hash_alg, values) != attest.pcr_digest:
            raise AttestationError("PCR values do not match the signed digest")
        by_index = dict(zip(pcrs, values))
        for item in args.expect:
            index, _, value = item.partition("=")
            if by_index.get(int(index)) != _hex(value, "expect"):
                raise AttestationError(f"PCR {index} is not the expected value")
    except (AttestationError, OSError, ValueError, KeyError) as exc:
        print(json.dumps({"ok": False, "error": type(exc).__name__, "detail": str(exc)}))
        return 1
    print(json.dumps({"ok": True, "pcrs": {str(k): v.hex() for k, v in by_index.items()},
                      "clock": attest.clock_info.clock, "reset_count": attest.clock_info.reset_count}))
    return 0


def _measure(args) -> int:
    from ztfl.attestation.measure import expected_pcr, measure_agent

    measurement = measure_agent(args.repo, args.model)
    print(json.dumps({"measurement": measurement.hex(), "hash": args.hash,
                      "expected_pcr": expected_pcr(measurement, args.hash).hex()}))
    return 0


def _ek(args) -> int:
    from tpm2_pytss import ESAPI, ESYS_TR, TPM2B_SENSITIVE_CREATE, TSS2_Exception
    from tpm2_pytss.utils import NVReadEK, create_ek_template

    from ztfl.attestation.ek_pin import ek_fingerprint
    from ztfl.attestation.keys import public_bytes_to_pem

    try:
        esapi = ESAPI(args.tcti)
        try:
            cert, template = create_ek_template(args.ek_type, NVReadEK(esapi))
            handle, public, _, _, _ = esapi.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.ENDORSEMENT)
            esapi.flush_context(handle)
        finally:
            esapi.close()
    except TSS2_Exception as exc:
        print(f"ztfl attest ek: reading the EK through {args.tcti}: {exc}", file=sys.stderr)
        return 1
    ek_public = bytes(public.marshal())
    args.out.write_bytes(public_bytes_to_pem(ek_public))
    print(json.dumps({"out": str(args.out), "ek_sha256": ek_fingerprint(ek_public), "ek_type": args.ek_type,
                      "certificate": bool(cert)}))
    return 0


def _decide(args) -> int:
    """approve / revoke: one line appended to the gateway's audit log, picked up while it runs."""
    import getpass
    import re

    from ztfl.attestation.audit import AuditLog
    from ztfl.attestation.ek_pin import read_ek_pin

    command = f"ztfl attest {args.attest_command}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", args.agent):
        print(f"{command}: --agent {args.agent!r} is not a device id", file=sys.stderr)
        return 2
    if not args.state.is_dir():
        print(f"{command}: --state {args.state} is not a directory (the gateway's state_dir)", file=sys.stderr)
        return 2
    try:
        pin = read_ek_pin(args.ek) if getattr(args, "ek", None) else ""
    except ValueError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    entry = AuditLog(args.state).append(args.attest_command, args.agent, ek_sha256=pin, note=args.note,
                                        operator=getpass.getuser())
    print(json.dumps(entry))
    return 0
