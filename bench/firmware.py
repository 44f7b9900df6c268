"""`ztfl bench firmware`: the ESP32 agent's per-round client work, measured in the MicroPython
unix port, with per-round key agreement and with key reuse.

One firmware client (a MicroPython process running the compiled firmware modules, its keys
from the firmware keyring) and CPython clients go through rounds run by the CPython server.
Before every round the firmware client trains the micro model on random records; its update
is what it masks. For each cohort size two runs of `--rounds` rounds:

* per-round key agreement: classic rounds (ROUND_CONFIG flag clear), fresh keys every round
  (two X25519 key pairs, then the agreements), every frame Ed25519-signed: the Bonawitz /
  SecAgg+ baseline;
* key reuse: key-reuse rounds of one gateway epoch (docs/protocol.md 1.8, 2.7): the first
  round makes the keys, the agreements and the session key; later rounds run no X25519 and
  authenticate with session tags.

`certificates`: the extra work of certified identities per peer (ztfw/certs.py): the first
announcement with a set of peers verifies each certificate's root signature, later ones only
recheck validity and revocation.

Reported per run: each part (key setup, each protocol stage, training) in wall and CPU
milliseconds of the MicroPython process, the Ed25519 / X25519 / tag counts, and the reduction
of the later key-reuse rounds against the classic rounds, with and without training (which key
reuse does not change). Medians over the rounds counted. CPU time is the interpreter's own
(Linux process CPU clock): on a machine shared with other jobs it is the steadier figure.

Peak heap (`--heap-search`): the smallest `micropython -X heapsize=N` (KiB) with which a classic
round and two key-reuse rounds still succeed, by bisection. This build has 8-byte words, so it
is a pessimistic stand-in for a 4-byte-word ESP32 without PSRAM.

ESP32 estimate: unix-port time x `--esp32-factor`, the ratio of pystone scores (unix port on
this machine against a published 240 MHz ESP32 figure; docs/firmware.md gives the derivation).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from ztfl.bench.report import add_json_flag, emit
from ztfl.protocol.config import SecurityFloor

# pystones/s of the unix port measured on this machine (70,016, best of 3) over the 1,661
# pystones/s reported for MicroPython on a 240 MHz ESP32 (docs/firmware.md).
ESP32_FACTOR = 42.0
STAGES = ("AdvertiseKeys", "ShareKeys", "MaskedInputCollection", "ConsistencyCheck", "Unmasking")


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"cohort sizes are integers separated by commas, got {text!r}") from None
    # Every client takes part only in sharing groups of its security floor's size or more.
    smallest = SecurityFloor().min_group
    if not sizes or any(not smallest <= n <= 64 for n in sizes):
        raise argparse.ArgumentTypeError(f"cohort sizes must be {smallest}..64 (the agents' security floor)")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features", type=int, default=121, help="input features (NSL-KDD encodes to 121)")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--clients", type=_sizes, default=[5, 8],
                        help="cohort sizes, comma-separated (one firmware client, the rest CPython)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="rounds per run: key reuse counts the rounds after the first")
    parser.add_argument("--samples", type=int, default=64, help="local training samples (one epoch)")
    parser.add_argument("--heap-search", action="store_true", help="find the smallest heap the rounds fit in")
    parser.add_argument("--esp32-factor", type=float, default=ESP32_FACTOR)
    add_json_flag(parser)


class _Cohort:
    """Identities, the CPython clients' keyrings and the firmware process of one cohort."""

    def __init__(self, n: int, files, heapsize: str | None):
        from nacl.signing import SigningKey

        from ztfl.firmware_tools.micropython_host import FirmwareClient, MicroPythonError
        blob_path, records_path, dim, lib = files
        self.n, self.dim = n, dim
        self.ids = list(range(1, n + 1))
        self.fw_id = n
        self.identities = {c: SigningKey.generate() for c in self.ids}
        self.server_key = SigningKey.generate()
        self.directory = {0: self.server_key.verify_key, **{c: k.verify_key for c, k in self.identities.items()}}
        self.fw = FirmwareClient(heapsize, path=lib, script=lib / "start.py", measure_cpu=True)
        self.code_heap = self.fw.call(op="heap")["live"]      # the imported modules' bytecode and objects
        r = self.fw.call(op="model", blob=str(blob_path), records=str(records_path))
        if "error" in r:
            self.fw.close()
            raise MicroPythonError(r.get("message", r["error"]))

    def close(self) -> None:
        self.fw.close()


def _check(reply: dict) -> dict:
    from ztfl.firmware_tools.micropython_host import MicroPythonError
    if "error" in reply:
        raise MicroPythonError(f"{reply['error']}: {reply.get('message', '')}")
    return reply


def _run(cohort: _Cohort, key_reuse: bool, rounds: int, samples: int, first_round: int = 1) -> list[dict]:
    """`rounds` rounds of one kind; per round the firmware's parts, work counts and the result."""
    from dataclasses import replace

    from ztfl.protocol.client import ClientSession
    from ztfl.protocol.config import RoundConfig, minimum_threshold
    from ztfl.protocol.epochs import ClientKeyring, EpochPolicy, EpochSchedule
    from ztfl.protocol.server import ServerSession
    from ztfl.firmware_tools.micropython_host import MicroPythonError, drive_round

    n = cohort.n
    config = RoundConfig(dim=cohort.dim, threshold=minimum_threshold(n), max_clients=n, mask_bits=32,
                         max_weight=64)
    config = replace(config, key_reuse=key_reuse)
    policy = EpochPolicy(max_rounds=rounds) if key_reuse else EpochPolicy.per_round()
    schedule = EpochSchedule(policy)
    keyrings = {c: ClientKeyring(policy) for c in cohort.ids if c != cohort.fw_id}
    fw = cohort.fw
    _check(fw.start_keyring(policy.max_rounds, policy.max_seconds))
    rng = np.random.default_rng(n)
    raw_directory = {k: bytes(v) for k, v in cohort.directory.items()}
    out = []
    agreements_before = 0
    for round_id in range(first_round, first_round + rounds):
        epoch = schedule.epoch_for(round_id, float(round_id))
        server = ServerSession(config, cohort.server_key, cohort.directory, epoch, round_id,
                               revealed_keys=schedule.revealed_keys)
        clients = {}
        for c in cohort.ids:
            if c == cohort.fw_id:
                continue
            keys = keyrings[c].keys_for(epoch, round_id, float(round_id), key_reuse)
            clients[c] = ClientSession(c, cohort.identities[c], cohort.directory, keys, round_id)
            clients[c].set_input(rng.normal(0, 0.01, cohort.dim).astype(np.float32), 3)
        opened = _check(fw.open_keyring_session(cohort.fw_id, cohort.identities[cohort.fw_id].encode(),
                                                raw_directory, epoch, round_id, key_reuse, float(round_id)))
        trained = _check(fw.call(op="train", round=round_id, epochs=1, lr=0.05, max_samples=samples, weight=3))
        heap_after_train = fw.call(op="heap")["live"]
        clients[cohort.fw_id] = fw
        replies = drive_round(server, clients)[cohort.fw_id]
        if server.result is None:
            raise MicroPythonError(f"round {round_id} aborted: {server.abort_reason}")
        finished = _check(fw.finish())
        for c, ring in keyrings.items():
            ring.finish(clients[c])
        schedule.finish(server)
        stats = fw.stats()
        x25519 = finished["agreements"] - (agreements_before if opened["reused_keys"] else 0)
        agreements_before = finished["agreements"]
        parts = {"keys": opened, **{s: replies[s] for s in STAGES}}
        out.append({
            "wall_ms": {k: r["us"] / 1e3 for k, r in parts.items()},
            "cpu_ms": {k: r.get("cpu_us", 0) / 1e3 for k, r in parts.items()},
            "train_wall_ms": trained["us"] / 1e3, "train_cpu_ms": trained.get("cpu_us", 0) / 1e3,
            "reused_keys": opened["reused_keys"], "x25519": x25519, **finished["work"],
            "upload_bytes": len(bytes.fromhex(replies["MaskedInputCollection"]["reply"])),
            "aggregated": list(server.result.survivors), "live_heap_after_training": heap_after_train,
            "peak_live_heap": stats["peak_live"],
        })
    return out


def _median_round(rounds: list[dict]) -> dict:
    """Medians over rounds of every part, and the counts (equal in every round counted)."""
    med = lambda xs: round(statistics.median(xs), 2)  # noqa: E731
    wall = {k: med([r["wall_ms"][k] for r in rounds]) for k in rounds[0]["wall_ms"]}
    cpu = {k: med([r["cpu_ms"][k] for r in rounds]) for k in rounds[0]["cpu_ms"]}
    return {
        "rounds": len(rounds),
        "protocol_wall_ms": med([sum(r["wall_ms"].values()) for r in rounds]),
        "protocol_cpu_ms": med([sum(r["cpu_ms"].values()) for r in rounds]),
        "train_wall_ms": med([r["train_wall_ms"] for r in rounds]),
        "train_cpu_ms": med([r["train_cpu_ms"] for r in rounds]),
        "wall_ms": wall, "cpu_ms": cpu,
        "ed25519_verify": rounds[-1]["ed25519_verify"], "ed25519_sign": rounds[-1]["ed25519_sign"],
        "x25519": rounds[-1]["x25519"], "session_tags": rounds[-1]["session_tags"],
        "consistency_tags": rounds[-1]["consistency_tags"], "upload_bytes": rounds[-1]["upload_bytes"],
    }


def _reduction(before: float, after: float) -> float | None:
    return round(100.0 * (1.0 - after / before), 1) if before > 0 else None


def _compare(cohort: _Cohort, rounds: int, samples: int) -> dict:
    # An untimed classic round first: it finds the largest live heap (a collection after every
    # command) and builds what a running board has built long before (Ed25519 tables).
    warm = _run(cohort, False, 1, samples, first_round=1)[0]
    _check(cohort.fw.call(op="track_heap", on=False))
    classic = _run(cohort, False, rounds, samples, first_round=2)
    reuse = _run(cohort, True, rounds, samples, first_round=rounds + 2)
    per_round = _median_round(classic)
    first = _median_round(reuse[:1])
    later = _median_round(reuse[1:] or reuse)
    out = {"clients": cohort.n, "classic_per_round_keys": per_round, "key_reuse_first_round": first,
           "key_reuse_later_rounds": later,
           "aggregated": classic[-1]["aggregated"] == cohort.ids and reuse[-1]["aggregated"] == cohort.ids}
    train_wall = statistics.median([r["train_wall_ms"] for r in classic + reuse])
    train_cpu = statistics.median([r["train_cpu_ms"] for r in classic + reuse])
    out["reduction_pct"] = {
        "protocol_cpu": _reduction(per_round["protocol_cpu_ms"], later["protocol_cpu_ms"]),
        "protocol_wall": _reduction(per_round["protocol_wall_ms"], later["protocol_wall_ms"]),
        "with_training_cpu": _reduction(per_round["protocol_cpu_ms"] + train_cpu, later["protocol_cpu_ms"] + train_cpu),
        "with_training_wall": _reduction(per_round["protocol_wall_ms"] + train_wall,
                                         later["protocol_wall_ms"] + train_wall),
    }
    out["train_ms"] = {"wall": round(train_wall, 2), "cpu": round(train_cpu, 2)}
    classic[0]["live_heap_after_training"] = warm["live_heap_after_training"]
    classic[0]["peak_live_heap"] = warm["peak_live_heap"]
    out["_classic_rounds"] = classic
    return out


def _fixtures(args, work: Path):
    from ztfl.models.spec import flat_to_tensors, layout
    from ztfl.fednet.messages import ModelBlob
    from ztfl.models.micro import MicroConfig, MicroMLP
    from ztfl.models.params import get_flat
    from ztfl.firmware_tools.records import encode_records
    import torch
    torch.manual_seed(0)
    model = MicroMLP(MicroConfig.fitting(args.features, args.classes))
    flat = get_flat(model)
    blob = ModelBlob(0, "micro", "0" * 64, flat_to_tensors(flat, layout(model))).encode()
    rng = np.random.default_rng(1)
    x = rng.random((max(args.samples, 32), args.features)).astype(np.float32)
    y = rng.integers(0, args.classes, len(x))
    (work / "model.bin").write_bytes(blob)
    (work / "records.bin").write_bytes(encode_records(x, y))
    # The board imports compiled .mpy files (no compiler run on the device): so does the bench.
    from ztfl.firmware_tools.cli import PACKAGE, SOURCE_MODULES, compile_module
    from ztfl.firmware_tools.micropython_host import FIRMWARE_DIR
    lib = work / "lib"
    (lib / PACKAGE).mkdir(parents=True)
    for src in (FIRMWARE_DIR / PACKAGE).glob("*.py"):
        if src.name in SOURCE_MODULES:
            (lib / PACKAGE / src.name).write_bytes(src.read_bytes())
        else:
            compile_module(src, lib / PACKAGE / (src.stem + ".mpy"))
    compile_module(FIRMWARE_DIR / "host" / "secagg_stdio.py", lib / "secagg_stdio.mpy")
    # The unix port runs a source file as its script: a one-line one imports the compiled driver.
    (lib / "start.py").write_text("import secagg_stdio\n")
    return work / "model.bin", work / "records.bin", flat.size, lib


_CERT_CHECK = r"""
import sys, json, time
from binascii import unhexlify
from ztfw import certs
d = json.loads(sys.stdin.read())
store = certs.TrustStore(unhexlify(d["anchor"]), d["federation"])
seats = [(a, s, unhexlify(c)) for a, s, c in d["seats"]]
server = unhexlify(d["server"])
out = []
for _ in range(2):
    t0 = time.ticks_us()
    store.check_announcement(seats, server, d["gateway"], d["now"])
    out.append(time.ticks_diff(time.ticks_us(), t0))
print(json.dumps({"first_us": out[0], "cached_us": out[1], "signature_checks": store.signature_checks}))
"""


def _certificate_work(lib: Path, peers: int, factor: float) -> dict:
    """The firmware's extra work per peer of a round (ztfw/certs.py): the first announcement of a
    set of peers (decode, claims, the root's signature each) and a later one (signatures cached)."""
    from nacl.signing import SigningKey

    from ztfl.firmware_tools.micropython_host import run_json
    from ztfl.protocol import certs
    root, now = SigningKey.generate(), int(time.time())

    def issue(device_id: str, role: str, serial: int) -> str:
        return certs.issue(root, federation="plant", device_id=device_id, role=role,
                           public_key=bytes(SigningKey.generate().verify_key), not_before=now - 60,
                           not_after=now + 3600, serial=serial).encode().hex()

    got = run_json(_CERT_CHECK, {"anchor": bytes(root.verify_key).hex(), "federation": "plant", "gateway": "fog1",
                                 "now": now, "server": issue("fog1", "gateway", 0),
                                 "seats": [[f"esp-{i}", i, issue(f"esp-{i}", "agent", i)] for i in range(1, peers + 1)]},
                   path=lib)
    first, cached = got["first_us"] / 1e3 / (peers + 1), got["cached_us"] / 1e3 / (peers + 1)
    return {"peers": peers, "signature_checks": got["signature_checks"], "first_ms_per_peer": round(first, 2),
            "cached_ms_per_peer": round(cached, 3), "esp32_estimate_first_s_per_peer": round(first * factor / 1000, 2)}


def _heap_search(files, args, n: int) -> dict:
    """Smallest heap (KiB) in which a classic round and two key-reuse rounds succeed."""
    from ztfl.firmware_tools.micropython_host import MicroPythonError
    fits: dict[int, bool] = {}

    def fits_in(kib: int) -> bool:
        if kib not in fits:
            cohort = None
            try:
                cohort = _Cohort(n, files, f"{kib}K")
                _run(cohort, False, 1, args.samples)
                _run(cohort, True, 2, args.samples, first_round=2)
                fits[kib] = True
            except (MicroPythonError, BrokenPipeError, json.JSONDecodeError):
                fits[kib] = False
            finally:
                if cohort is not None:
                    cohort.close()
        return fits[kib]

    lo, hi = 16, 512        # KiB: lo fails, hi fits (checked)
    if fits_in(lo) or not fits_in(hi):
        return {"min_heap_kib": None}
    while hi - lo > 4:
        mid = (lo + hi) // 2
        if fits_in(mid):
            hi = mid
        else:
            lo = mid
    return {"min_heap_kib": hi, "heap_trials": {str(k): v for k, v in sorted(fits.items())}}


def run(args) -> int:
    if args.rounds < 2:
        raise SystemExit("ztfl bench firmware: --rounds must be at least 2 (key reuse counts the later rounds)")
    with tempfile.TemporaryDirectory(prefix="ztfl-fwbench-") as tmp:
        files = _fixtures(args, Path(tmp))
        t0 = time.perf_counter()
        cohorts = []
        for n in args.clients:
            cohort = _Cohort(n, files, None)
            try:
                result = _compare(cohort, args.rounds, args.samples)
            finally:
                cohort.close()
            result["code_heap"] = cohort.code_heap
            cohorts.append(result)
        wall_s = round(time.perf_counter() - t0, 2)
        certificates = _certificate_work(files[3], max(args.clients), args.esp32_factor)
        heap = _heap_search(files, args, args.clients[0]) if args.heap_search else {}
    # The first cohort's first classic round in the fields this benchmark always printed.
    first = cohorts[0].pop("_classic_rounds")[0]
    for c in cohorts[1:]:
        c.pop("_classic_rounds")
    times = {"keys": first["wall_ms"]["keys"], "train": first["train_wall_ms"],
             **{s: first["wall_ms"][s] for s in STAGES}}
    total = sum(times.values())
    report = {
        "dim": files[2], "times_ms": {k: round(v, 1) for k, v in times.items()},
        "client_work_ms": round(total, 1), "upload_bytes": first["upload_bytes"],
        "code_heap": cohorts[0]["code_heap"], "live_heap_after_training": first["live_heap_after_training"],
        "peak_live_heap": first["peak_live_heap"], "aggregated": first["aggregated"],
        "esp32_factor": args.esp32_factor, "esp32_estimate_s": round(total * args.esp32_factor / 1000, 1),
        "cohorts": cohorts, "wall_s": wall_s, "load_average_1min": round(os.getloadavg()[0], 2),
        # Checking the gateway's and the peers' certificates (per certificate, the gateway's counted).
        "certificates": certificates,
        "params": {"features": args.features, "classes": args.classes, "clients": args.clients,
                   "rounds": args.rounds, "samples": args.samples},
        **heap,
    }
    for c in cohorts:
        # What a 240 MHz ESP32 would spend per round on protocol work and on training.
        c["esp32_estimate_s"] = {
            "classic_protocol": round(c["classic_per_round_keys"]["protocol_wall_ms"] * args.esp32_factor / 1000, 1),
            "key_reuse_protocol": round(c["key_reuse_later_rounds"]["protocol_wall_ms"] * args.esp32_factor / 1000, 1),
            "training": round(c["train_ms"]["wall"] * args.esp32_factor / 1000, 1)}
    if "min_heap_kib" in heap and heap["min_heap_kib"] is not None:
        # What the rounds need beyond the loaded code (frozen into the board's image, the code
        # costs no heap at all).
        report["min_heap_beyond_code_kib"] = heap["min_heap_kib"] - cohorts[0]["code_heap"] // 1024
    emit(report, args.json)
    return 0
