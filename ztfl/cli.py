"""The one `ztfl` command.

Each subcommand lives in the module that owns it; this file only maps names to
modules so that `ztfl --help` stays fast (nothing heavy such as torch is imported
until a subcommand that needs it runs).

A command module exposes `add_arguments(parser)` and `run(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("ztfl.demo", "run a local demo federation"),
    "agent": ("ztfl.agent.cli", "run the agent daemon"),
    "gateway": ("ztfl.gateway.cli", "run the fog gateway"),
    "cloud": ("ztfl.gateway.cloud_cli", "run the cloud aggregator above gateways"),
    "status": ("ztfl.gateway.status_cli", "show a gateway's live status"),
    "train": ("ztfl.models.cli_train", "train the IDS model centrally"),
    "evaluate": ("ztfl.models.cli_evaluate", "evaluate an IDS model on a data file"),
    "export": ("ztfl.models.export.cli", "export a model to int8 ONNX or TFLite"),
    "experiment": ("ztfl.bench.experiment", "run robustness experiments"),
    "attest": ("ztfl.attestation.cli", "TPM attestation tools (quote, verify)"),
    "provision": ("ztfl.attestation.provision", "make CA, certificates, broker and device configs"),
    "firmware": ("ztfl.firmware_tools.cli", "build the MicroPython firmware bundle"),
    "flash": ("ztfl.firmware_tools.flash", "flash a board"),
}

# `ztfl bench NAME`: benchmark name -> (module, help)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "secagg": ("ztfl.bench.secagg", "secure aggregation, all clients in one process"),
    "epochs": ("ztfl.bench.epochs", "per-round client cost with and without key reuse"),
    "dp": ("ztfl.bench.dp", "accuracy against epsilon: distributed DP federated training on real data"),
    "model": ("ztfl.bench.model", "IDS model size, latency and int8 agreement"),
    "baseline": ("ztfl.bench.baseline", "reference trees and the IDS model on random and leave-attack-type-out splits"),
    "adversarial": ("ztfl.bench.adversarial", "robust accuracy with and without adversarial training"),
    "attest": ("ztfl.bench.attest", "TPM quote and verification latency"),
    "gateway": ("ztfl.bench.gateway", "gateway rounds through the broker"),
    "firmware": ("ztfl.bench.firmware", "ESP32 agent round work in the MicroPython unix port"),
    "fuzz": ("ztfl.bench.fuzz", "mutation fuzzing of every decoder of peer bytes and config files"),
}


def _load(module_name: str):
    return importlib.import_module(module_name)


def _available(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ztfl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    argv = sys.argv[1:]
    for name, (module_name, help_text) in COMMANDS.items():
        if not _available(module_name):
            continue
        p = sub.add_parser(name, help=help_text)
        # Only the chosen command's module is imported to add its arguments.
        if argv[:1] == [name]:
            _load(module_name).add_arguments(p)
        p.set_defaults(_module=module_name)
    bench = sub.add_parser("bench", help="benchmarks (print JSON with --json)")
    bench_sub = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    bench_sub.required = True
    for name, (module_name, help_text) in BENCHMARKS.items():
        if not _available(module_name):
            continue
        p = bench_sub.add_parser(name, help=help_text)
        if argv[:2] == ["bench", name]:
            _load(module_name).add_arguments(p)
        p.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    args = build_parser().parse_args()
    return int(_load(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
