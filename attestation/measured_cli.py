"""`ztfl attest policy` and `ztfl attest boot-policy`: the reference policies the gateway judges
IMA lists and boot event logs by, made from a release and from a known-good board.

  policy       hash a release (interpreter, standard library, installed packages, ztfl with its
               data files and bytecode) into a runtime policy, signed with an Ed25519 or EC key
  boot-policy  the measured-boot policy (YAML) admitting exactly a known-good board's event log
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_MODEL_GLOB = "/var/lib/ztfl/agent/detector-v*.int8.onnx"    # agent.yaml's default state_dir


def add_parsers(sub) -> None:
    p = sub.add_parser("policy", help="signed runtime policy (IMA file digests) of this installed release")
    p.add_argument("--out", required=True, type=Path, help="signed policy to write (JSON)")
    p.add_argument("--key", required=True, type=Path, help="signing key: Ed25519 or EC private key, PEM")
    p.add_argument("--path", action="append", default=[], type=Path,
                   help="another file or folder the agent loads (repeatable)")
    p.add_argument("--no-defaults", action="store_true",
                   help="only the --path roots, not the interpreter, libraries and ztfl of this installation")
    p.add_argument("--exclude", action="append", default=[], metavar="PREFIX",
                   help="absolute path prefix whose IMA entries are not judged (data files; repeatable)")
    p.add_argument("--model", action="append", default=None, metavar="GLOB",
                   help=f"where agents keep the model files the gateway distributes (default {DEFAULT_MODEL_GLOB})")
    p.add_argument("--compile", action="store_true",
                   help="first compile ztfl and the installed packages to checked-hash bytecode")
    p.add_argument("--release", default=None, help="release name recorded in the policy (default: ztfl's version)")

    b = sub.add_parser("boot-policy", help="measured-boot policy (YAML) admitting a known-good event log")
    b.add_argument("--log", required=True, type=Path, help="binary_bios_measurements of a known-good board")
    b.add_argument("--bank", default="sha256", help="PCR bank the gateway quotes (default sha256)")
    b.add_argument("--pcrs", default="0,1,2,3,4,5,6,7", help="PCRs to judge (default 0-7)")
    b.add_argument("--secure-boot", choices=("required", "disabled", "any"), default="any")


def policy(args: argparse.Namespace) -> int:
    from importlib.metadata import PackageNotFoundError, version

    from ztfl.attestation.errors import RuntimePolicyError
    from ztfl.attestation.runtime_policy import ReleaseScan, compile_bytecode, project_dirs, release_roots, sign_policy

    roots = ([] if args.no_defaults else release_roots()) + list(args.path)
    try:
        release = args.release or version("ztfl")
    except PackageNotFoundError:
        release = "unreleased"
    try:
        if args.compile:
            compile_bytecode(project_dirs() + [r for r in roots if r.is_dir()])
        scan = ReleaseScan()
        for root in roots:
            scan.add(root)
        built = scan.policy([str(e) for e in args.exclude], args.model or [DEFAULT_MODEL_GLOB],
                            release)
        document = sign_policy(built, args.key.read_bytes())
    except (RuntimePolicyError, OSError) as exc:
        print(f"ztfl attest policy: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(document)
    print(json.dumps({"out": str(args.out), "files": len(built.files), "release": built.release,
                      "roots": [str(r) for r in roots]}))
    return 0


def boot_policy(args: argparse.Namespace) -> int:
    import yaml

    from ztfl.attestation.boot_policy import reference_boot_policy
    from ztfl.attestation.errors import AttestationError
    from ztfl.attestation.eventlog import parse_event_log

    try:
        log = parse_event_log(args.log.read_bytes())
        if args.bank not in log.banks():
            raise ValueError(f"the log has no {args.bank} bank (it has {', '.join(log.banks())})")
        pcrs = [int(p) for p in args.pcrs.split(",") if p.strip()]
        secure = {"required": True, "disabled": False, "any": None}[args.secure_boot]
        reference = reference_boot_policy(log, args.bank, pcrs, secure)
    except (AttestationError, OSError, ValueError) as exc:
        print(f"ztfl attest boot-policy: {exc}", file=sys.stderr)
        return 1
    print(yaml.safe_dump({"measured_boot": reference.to_mapping()}, sort_keys=False), end="")
    return 0


HANDLERS = {"policy": policy, "boot-policy": boot_policy}
