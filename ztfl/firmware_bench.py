"""`ztfl bench firmware`: one round's client work of the ESP32 agent, measured in the
MicroPython unix port.

One firmware client (a MicroPython process running the firmware modules) and CPython clients
go through a full secure-aggregation round run by the CPython server, after the firmware
client trains the micro model on random records. Reported per part: epoch-key generation
(two X25519 base-point multiplications), local training, each protocol stage (signatures,
key agreement, Shamir, share encryption, the two streamed masking passes), and the live heap.

Peak heap: the smallest `micropython -X heapsize=N` (in KiB) with which the whole round still
succeeds, found by bisection. This build has 8-byte words, so it is a pessimistic stand-in for
a 4-byte-word ESP32 without PSRAM.

ESP32 estimate: unix-port time x `--esp32-factor`, the ratio of pystone scores (unix port on
this machine against a published 240 MHz ESP32 figure; docs/firmware.md gives the derivation).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

# pystones/s of the unix port measured on this machine (70,016, best of 3) over the 1,661
# pystones/s reported for MicroPython on a 240 MHz ESP32 (docs/firmware.md).
ESP32_FACTOR = 42.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features", type=int, default=121, help="input features (NSL-KDD encodes to 121)")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4, help="cohort size (one firmware client, the rest CPython)")
    parser.add_argument("--samples", type=int, default=64, help="local training samples (one epoch)")
    parser.add_argument("--heap-search", action="store_true", help="find the smallest heap the round fits in")
    parser.add_argument("--esp32-factor", type=float, default=ESP32_FACTOR)
    parser.add_argument("--json", action="store_true")


def _round(dim_files, args, heapsize: str | None, seed: int = 0) -> dict:
    from nacl.signing import SigningKey

    from protocol.client import ClientSession
    from protocol.config import RoundConfig, minimum_threshold
    from protocol.keys import EpochKeys
    from protocol.server import ServerSession
    from protocol.stages import Stage
    from ztfl.micropython_host import FirmwareClient, MicroPythonError

    blob_path, records_path, dim, lib = dim_files
    n = args.clients
    ids = list(range(1, n + 1))
    fw_id = n
    config = RoundConfig(dim=dim, threshold=minimum_threshold(n), max_clients=n, mask_bits=32, max_weight=64)
    identities = {c: SigningKey.generate() for c in ids}
    server_key = SigningKey.generate()
    directory = {0: server_key.verify_key, **{c: k.verify_key for c, k in identities.items()}}
    epoch, round_id = 17, 1
    server = ServerSession(config, server_key, directory, epoch, round_id)
    rng = np.random.default_rng(seed)
    clients = {}
    for c in ids[:-1]:
        s = ClientSession(c, identities[c], directory, EpochKeys.generate(epoch), round_id)
        s.set_input(rng.normal(0, 0.01, dim).astype(np.float32), 3)
        clients[c] = s
    times: dict[str, float] = {}
    fw = FirmwareClient(heapsize, path=lib, script=lib / "start.py")
    try:
        code_heap = fw.call(op="heap")["live"]      # the imported modules' bytecode and objects
        r = fw.call(op="model", blob=str(blob_path), records=str(records_path))
        if "error" in r:
            raise MicroPythonError(r.get("message", r["error"]))
        r = fw.call(op="session", client_id=fw_id, identity_seed=identities[fw_id].encode().hex(),
                    directory={str(k): bytes(v).hex() for k, v in directory.items()}, epoch=epoch,
                    round_id=round_id)
        times["keys"] = r["us"] / 1e3
        r = fw.call(op="train", round=round_id, epochs=1, lr=0.05, max_samples=args.samples, weight=3)
        if "error" in r:
            raise MicroPythonError(r.get("message", r["error"]))
        times["train"] = r["us"] / 1e3
        heap_after_train = fw.call(op="heap")["live"]
        out = server.round_config()
        upload = 0
        for stage in Stage.order()[:-1]:
            for c in ids:
                frame = out if isinstance(out, bytes) else out.frame_for(c)
                if frame is None:
                    continue
                if c == fw_id:
                    r = fw.call(op="receive", frame=frame.hex())
                    if "error" in r:
                        raise MicroPythonError(f"{r['error']}: {r.get('message', '')}")
                    times[stage.value] = r["us"] / 1e3
                    reply = bytes.fromhex(r["reply"]) if r.get("reply") else None
                    if stage == Stage.MASKED_INPUT_COLLECTION and reply:
                        upload = len(reply)
                else:
                    reply = clients[c].receive(frame)
                if reply:
                    server.receive(reply)
            out = server.close_stage()
            if server.stage == Stage.ABORTED:
                raise MicroPythonError(f"round aborted: {server.abort_reason}")
        stats = fw.stats()
    finally:
        fw.close()
    return {"dim": dim, "times_ms": times, "upload_bytes": upload, "code_heap": code_heap,
            "live_heap_after_training": heap_after_train,
            "peak_live_heap": stats["peak_live"], "aggregated": list(server.result.survivors)}


def _fixtures(args, work: Path):
    from agent.model import flat_to_tensors, layout
    from agent.wire import ModelBlob
    from models.micro import MicroConfig, MicroMLP
    from models.params import get_flat
    from ztfl.firmware_records import encode_records
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
    from ztfl.firmware_cli import PACKAGE, SOURCE_MODULES, compile_module
    from ztfl.micropython_host import FIRMWARE_DIR
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


def run(args) -> int:
    with tempfile.TemporaryDirectory(prefix="ztfl-fwbench-") as tmp:
        files = _fixtures(args, Path(tmp))
        t0 = time.perf_counter()
        result = _round(files, args, None)
        result["wall_s"] = round(time.perf_counter() - t0, 2)
        if args.heap_search:
            from ztfl.micropython_host import MicroPythonError
            lo, hi = 16, 512        # KiB: lo fails, hi fits (checked)
            fits = {}

            def fits_in(kib: int) -> bool:
                if kib not in fits:
                    try:
                        _round(files, args, f"{kib}K")
                        fits[kib] = True
                    except (MicroPythonError, BrokenPipeError, json.JSONDecodeError):
                        fits[kib] = False
                return fits[kib]

            if fits_in(lo) or not fits_in(hi):
                result["min_heap_kib"] = None
            else:
                while hi - lo > 4:
                    mid = (lo + hi) // 2
                    if fits_in(mid):
                        hi = mid
                    else:
                        lo = mid
                result["min_heap_kib"] = hi
                result["heap_trials"] = {str(k): v for k, v in sorted(fits.items())}
                # What the round itself needs beyond the loaded code (frozen into the board's
                # image, the code costs no heap at all).
                result["min_heap_beyond_code_kib"] = hi - result["code_heap"] // 1024
    work = {k: v for k, v in result["times_ms"].items()}
    total = sum(work.values())
    result["client_work_ms"] = round(total, 1)
    result["esp32_factor"] = args.esp32_factor
    result["esp32_estimate_s"] = round(total * args.esp32_factor / 1000, 1)
    result["times_ms"] = {k: round(v, 1) for k, v in work.items()}
    result["params"] = {"features": args.features, "classes": args.classes, "clients": args.clients,
                        "samples": args.samples}
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=1))
    return 0
