"""`ztfl bench fuzz`: mutation fuzzing of every decoder that reads a peer's bytes or a config file.

Engine `mutate` (default, in this process): inputs are valid seeds (ztfl.fuzz_targets) changed by
1-4 random edits (bit flips, interesting integers at any offset in either byte order, inserted,
deleted, duplicated or truncated ranges, splices of two seeds) plus some purely random buffers,
drawn from a seeded generator so a run is reproducible. Engine `atheris` (x86-64) runs libFuzzer's
coverage-guided loop in one subprocess per target with the same seeds as its corpus.

A decoder may accept an input or refuse it with one of the error classes its caller catches;
anything else (IndexError, RecursionError, OverflowError, a numpy ValueError...) is a crash,
reported with the input that caused it.
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ztfl.bench.fuzz_targets import Target, by_name
from ztfl.bench.report import add_json_flag, emit

INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
               0x80000000, 0xFFFFFFFF, 1 << 27, (1 << 27) + 1)


@dataclass
class Crash:
    error: str
    message: str
    input_hex: str


@dataclass
class TargetReport:
    target: str
    inputs: int = 0
    accepted: int = 0
    refused: int = 0
    crashes: int = 0
    seconds: float = 0.0
    crash_samples: list[Crash] = field(default_factory=list)
    crash_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def inputs_per_second(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    if rng.random() < 0.05:
        return rng.randbytes(rng.randrange(0, 300))
    buf = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:                                   # flip one bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:                                 # random byte
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op in (2, 3):                                    # interesting integer, 1/2/4/8 bytes
            width = rng.choice((1, 2, 4, 8))
            value = rng.choice(INTERESTING + (len(buf), len(buf) - 1, len(buf) + 1)) % (1 << (8 * width))
            order = "little" if op == 2 else "big"
            buf[pos:pos + width] = value.to_bytes(width, order)
        elif op == 4:                                         # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.randrange(1, 40))
        elif op == 5 and buf:                                 # delete a range
            del buf[pos:pos + rng.randrange(1, 40)]
        elif op == 6:                                         # truncate
            del buf[pos:]
        elif op == 7 and buf:                                 # duplicate a range
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start:start + rng.randrange(1, 64)]
        else:                                                 # splice with another seed
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:pos] + bytearray(other[cut:])
    return bytes(buf)


def run_target(target: Target, inputs: int, seed: int = 0, max_samples: int = 3) -> TargetReport:
    rng = random.Random(f"{seed}:{target.name}")
    seeds = target.seeds()
    report = TargetReport(target.name)
    valid = 0
    for s in seeds:                     # seeds are shared within a family: at least one must decode
        try:
            target.decode(s)
            valid += 1
        except target.errors:
            pass
    if not valid:
        raise RuntimeError(f"{target.name}: no seed decodes, the fuzzer would not start inside the format")
    t0 = time.perf_counter()
    for _ in range(inputs):
        data = mutate(rng, seeds)
        report.inputs += 1
        try:
            target.decode(data)
            report.accepted += 1
        except target.errors:
            report.refused += 1
        except BaseException as exc:           # noqa: BLE001 - any other escape is the finding
            if isinstance(exc, KeyboardInterrupt):
                raise
            report.crashes += 1
            kind = type(exc).__name__
            report.crash_kinds[kind] = report.crash_kinds.get(kind, 0) + 1
            if len(report.crash_samples) < max_samples:
                report.crash_samples.append(Crash(kind, str(exc)[:200], data[:256].hex()))
    report.seconds = time.perf_counter() - t0
    return report


# --- atheris: one subprocess per target (libFuzzer owns the process and exits it) ---------------
_ATHERIS_DRIVER = """
import sys, atheris
with atheris.instrument_imports():
    import ztfl.protocol.wire, ztfl.protocol.config, ztfl.attestation.messages, ztfl.attestation.tpm_wire, ztfl.fednet.messages
from ztfl.bench.fuzz_targets import by_name
target = by_name([sys.argv[1]])[0]
def one(data):
    try:
        target.decode(bytes(data))
    except target.errors:
        pass
atheris.Setup([sys.argv[0], *sys.argv[2:]], one)
atheris.Fuzz()
"""


def atheris_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("atheris") is not None


def run_atheris(target: Target, inputs: int, seed: int, workdir: Path) -> TargetReport:
    corpus = workdir / target.name / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(target.seeds()):
        (corpus / f"seed-{i}").write_bytes(s)
    artifacts = workdir / target.name / "crash-"
    cmd = [sys.executable, "-c", _ATHERIS_DRIVER, target.name, f"-runs={inputs}", f"-seed={seed + 1}",
           "-max_len=4096", f"-artifact_prefix={artifacts}", "-print_final_stats=1", str(corpus)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    report = TargetReport(target.name, seconds=time.perf_counter() - t0)
    for line in proc.stderr.splitlines():
        if line.startswith("stat::number_of_executed_units:"):
            report.inputs = int(line.split(":")[-1])
    if proc.returncode != 0:
        report.crashes = 1
        crash_files = sorted(artifacts.parent.glob("crash-*"))
        tail = [ln for ln in proc.stderr.splitlines() if "Error" in ln or "Exception" in ln][-1:]
        report.crash_samples.append(Crash("uncaught", (tail[0] if tail else proc.stderr[-200:])[:200],
                                          crash_files[0].read_bytes()[:256].hex() if crash_files else ""))
    return report


# --- CLI -----------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs per decoder")
    parser.add_argument("--targets", default="", help="comma-separated target names or groups "
                                                      "(protocol, attestation, mqtt, config); default all")
    parser.add_argument("--engine", choices=("mutate", "atheris"), default="mutate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    add_json_flag(parser)


def run(args) -> int:
    targets = by_name([n for n in args.targets.split(",") if n] or None)
    if args.list:
        for t in targets:
            print(f"{t.name:34s} {t.group:12s} errors: {', '.join(e.__name__ for e in t.errors)}")
        return 0
    if args.engine == "atheris" and not atheris_available():
        print("atheris is not installed here (x86-64 wheels only): use --engine mutate", file=sys.stderr)
        return 2
    reports = []
    with tempfile.TemporaryDirectory(prefix="ztfl-atheris-") as tmp:
        for t in targets:
            if args.engine == "atheris":
                r = run_atheris(t, args.inputs, args.seed, Path(tmp))
            else:
                r = run_target(t, args.inputs, args.seed)
            reports.append(r)
            if not args.json:
                print(f"{r.target:34s} {r.inputs:8d} inputs {r.inputs_per_second:9.0f}/s "
                      f"accepted {r.accepted:6d} refused {r.refused:8d} crashes {r.crashes}"
                      + (f" {r.crash_kinds}" if r.crash_kinds else ""), flush=True)
    summary = {
        "engine": args.engine, "seed": args.seed, "inputs_per_target": args.inputs,
        "targets": len(reports), "total_inputs": sum(r.inputs for r in reports),
        "total_crashes": sum(r.crashes for r in reports),
        "crashing_targets": [r.target for r in reports if r.crashes],
        "results": [{**asdict(r), "inputs_per_second": round(r.inputs_per_second, 1)} for r in reports],
    }
    emit(summary, args.json, lambda s: f"total: {s['total_inputs']} inputs, {s['total_crashes']} crashes "
                                       f"in {s['crashing_targets'] or 'no target'}")
    return 1 if summary["total_crashes"] else 0
