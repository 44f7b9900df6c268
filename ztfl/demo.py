"""`ztfl demo`: a whole federation on one machine, from embedded defaults.

A private mosquitto on a free loopback port (or --broker), one gateway and agents with mixed
hardware profiles, each a separate process, federating the CNN-LSTM on NSL-KDD split non-IID
(Dirichlet) with secure aggregation in every round. One agent is killed in the middle of a round
to show dropout recovery. Radio links and real boards are what is simulated here: the profiles
are assigned, not detected, and every process runs on this host.

Every cohort runs key epochs (one key setup for --key-epoch-rounds rounds), the ESP32 cohort
too unless --firmware-classic. --dp-epsilon turns on distributed differential privacy for the
CPython cohorts (the firmware declines DP rounds) and reports the epsilon spent.

Writes to --out: summary.json, the final global model (torch weights + preprocessing JSON, and
int8 ONNX when the exporter is installed), accuracy.png and bytes.png.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

# Every cohort meets the agents' security floor (protocol.config.SecurityFloor: groups of at least
# five): six in the 64-bit cohort, whose first agent the demo kills mid-run (five stay), five in
# the 32-bit one, and FIRMWARE_AGENTS ESP32 boards in theirs.
DEFAULT_AGENTS = ["raspberry-pi-4", "raspberry-pi-4", "raspberry-pi-4",
                  "jetson-orin-nano", "jetson-orin-nano", "jetson-orin-nano",
                  "raspberry-pi-3", "raspberry-pi-3", "raspberry-pi-3", "raspberry-pi-3", "raspberry-pi-3"]
FIRMWARE_AGENTS = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--agents", default=",".join(DEFAULT_AGENTS),
                        help="comma-separated hardware profiles, one agent each")
    parser.add_argument("--broker", help="use this broker URL instead of a private mosquitto")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet non-IID concentration")
    parser.add_argument("--kill-round", type=int, default=2, help="round in which one agent is killed (0: none)")
    parser.add_argument("--data", help="NSL-KDD training file (default: $ZTFL_DATASETS/nsl_kdd/...)")
    parser.add_argument("--model-size", default="small", choices=["small", "default"])
    parser.add_argument("--max-batches", type=int, default=80, help="local training budget per round")
    parser.add_argument("--firmware-agents", type=int, default=FIRMWARE_AGENTS,
                        help="ESP32 agents run in the MicroPython unix port when `micropython` is installed "
                             "(their own micro-32 cohort; 0: none)")
    parser.add_argument("--no-attestation", action="store_true",
                        help="run without swtpm quotes (by default each Linux agent has its own swtpm)")
    parser.add_argument("--key-epoch-rounds", type=int, default=4,
                        help="rounds one key setup serves in the CPython cohorts (1: a key agreement per round; "
                             "0: classic rounds as before key epochs)")
    parser.add_argument("--firmware-classic", action="store_true",
                        help="the ESP32 cohort runs classic rounds (a key agreement per round) instead of key epochs")
    parser.add_argument("--dp-epsilon", type=float, default=None,
                        help="distributed DP for the CPython cohorts: the (epsilon, 1e-5) budget of the whole run")
    parser.add_argument("--dp-clip", type=float, default=1.0, help="L2 clip of one agent's update (with --dp-epsilon)")
    parser.add_argument("--dp-min-survivors", type=int, default=3,
                        help="honest survivors per round the DP noise counts on (with --dp-epsilon)")
    parser.add_argument("--quiet", action="store_true")


def _dataset(args) -> str:
    if args.data:
        return args.data
    from ztfl.models.datasets import datasets_dir
    return str(datasets_dir() / "nsl_kdd" / "KDDTrain+_20Percent.txt")


def _status(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


def launch(args, work: Path, broker_url: str, tpms: list | None = None
           ) -> tuple[subprocess.Popen, list[subprocess.Popen], Path]:
    """Write configs and start the gateway and agent processes. With `tpms` (a list to fill),
    every Linux agent gets its own swtpm and the gateway requires attestation."""
    from ztfl.protocol.config import SecurityFloor
    from ztfl.services import start_swtpm
    exe = [sys.executable, "-m", "ztfl.cli"]
    profiles = [p for p in args.agents.split(",") if p]
    from ztfl.firmware_tools.micropython_host import micropython_binary
    n_fw = getattr(args, "firmware_agents", 0) if micropython_binary() else 0
    data = {"path": _dataset(args), "fmt": "nsl-kdd", "count": len(profiles) + n_fw, "alpha": args.alpha, "seed": 7}
    gw_state = work / "gateway"
    gw_cfg = {"federation": "demo", "gateway": "fog1", "broker": {"url": broker_url},
              "state_dir": str(gw_state), "data": data, "model_size": args.model_size, "rounds": args.rounds,
              "min_agents": len(profiles) + n_fw, "min_cohort": SecurityFloor().min_group, "heartbeat_s": 1.0,
              "round_interval_s": 3.0, "linger_s": 4.0,
              # min_cohort: a cohort smaller than the agents' floor sits out instead of being refused.
              # Generous: a stage closes as soon as every live participant answered, so these
              # bind only for an agent that hangs without disconnecting.
              "deadlines_s": {"attest": 20, "advertise": 30, "share": 30, "masked": 180,
                              "consistency": 30, "unmask": 30}}
    gw_cfg["require_attestation"] = tpms is not None
    if tpms is not None:
        # The demo's software TPMs are made on the spot, so no EK was pinned at provisioning:
        # the demo says so explicitly and lets each enrol its EK on first use.
        gw_cfg["attestation"] = {"trust_on_first_use": True}
    fw_indices = list(range(len(profiles), len(profiles) + n_fw))
    # Every agent, board and the gateway gets a certified identity from `ztfl provision` (its CA
    # in work/ca, outside the tree of bundles); agents check every key against its root.
    from ztfl.attestation.provision import Device, Fleet, bundle_trust, provision
    from ztfl.firmware_tools.micropython_host import device_keys, firmware_agent_id
    fw_ids = [firmware_agent_id(i) for i in fw_indices]
    bundles = work / "provision"
    provision(Fleet("demo", "fog1", [Device(f"{p}-{i}", p) for i, p in enumerate(profiles)]
                    + [Device(a, "esp32") for a in fw_ids], ca_dir=work / "ca"), bundles)
    gw_cfg["trust"] = bundle_trust(bundles)
    fw_keys = device_keys(bundles, fw_ids)
    if n_fw and tpms is not None:
        # Firmware boards have no TPM: provisioned device keys, admitted as software-rooted seats
        # (the TPM agents enrol their EK on first use, as an unprovisioned device list allows).
        from ztfl.attestation.provision import load_devices
        boards = [d for d in load_devices(bundles / "gateway" / "devices.yaml") if d["root"] == "software"]
        (work / "software-devices.yaml").write_text(yaml.safe_dump({"devices": boards}))
        gw_cfg["software_devices"] = str(work / "software-devices.yaml")
        gw_cfg["allow_software_rooted"] = True
    gw_cfg.update(epochs_and_privacy(args))
    gw_cfg.update(getattr(args, "gateway_overrides", None) or {})
    (work / "gateway.yaml").write_text(yaml.safe_dump(gw_cfg))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # Many processes share two cores: one OpenMP thread each, or they spin against each other.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    gateway = start_gateway(work)
    agents = []
    for i, profile in enumerate(profiles):
        agent_id = f"{profile}-{i}"
        cfg = {"agent_id": agent_id, "federation": "demo", "gateway": "fog1", "broker": {"url": broker_url},
               "profile": profile, "state_dir": str(work / "agents" / agent_id), "data": {**data, "index": i},
               "model_size": args.model_size, "heartbeat_s": 1.0, "stream_rate_hz": 20.0,
               "train_epochs": 1, "max_batches": args.max_batches, "seed": i,
               "record_updates_dir": getattr(args, "record_updates_dir", None),
               "trust": bundle_trust(bundles, agent_id)}
        if tpms is not None:
            # One software TPM per Linux agent: it enrols, then quotes in every round.
            tpm = start_swtpm(work / "tpm" / agent_id)
            tpms.append(tpm)
            cfg["tpm"] = {"tcti": tpm.tcti}
        path = work / f"{agent_id}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        agents.append(subprocess.Popen(exe + ["agent", "--config", str(path)],
                                       stdout=open(logs / f"{agent_id}.log", "wb"), stderr=subprocess.STDOUT,
                                       env=env))
    if n_fw:
        from ztfl.firmware_tools.micropython_host import launch_firmware_agents
        agents += launch_firmware_agents(work, broker_url, "demo", "fog1", data, fw_indices, logs, keys=fw_keys,
                                         bundles=bundles, attest=tpms is not None)
    return gateway, agents, gw_state


def epochs_and_privacy(args) -> dict:
    """gateway.yaml keys for key epochs and DP from the demo's options."""
    cfg: dict = {}
    rounds = getattr(args, "key_epoch_rounds", 0)
    if rounds:
        cfg["key_epoch"] = {"max_rounds": rounds, "max_seconds": 3600}
    if getattr(args, "dp_epsilon", None):
        cfg["privacy"] = {"epsilon": args.dp_epsilon, "delta": 1e-5, "min_survivors": args.dp_min_survivors,
                          "clip_norm": args.dp_clip, "mode": "stop"}
    # The firmware cohort: key epochs unless asked otherwise; no DP (the firmware adds no noise).
    micro = {}
    if rounds and getattr(args, "firmware_classic", False):
        micro["key_epoch"] = None
    if "privacy" in cfg:
        micro["privacy"] = None
    if micro:
        cfg["cohorts"] = {"micro-32": micro}
    return cfg


def start_gateway(work: Path) -> subprocess.Popen:
    """(Re)start the gateway of a launched federation; its log is appended to."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ztfl.cli", "gateway", "--config", str(work / "gateway.yaml")],
                            stdout=open(work / "logs" / "gateway.log", "ab"), stderr=subprocess.STDOUT, env=env)


def wait_port(gw_state: Path, gateway: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            raise RuntimeError(f"gateway exited with {gateway.returncode}; see its log")
        p = gw_state / "http.port"
        if p.exists() and p.read_text().strip():
            return int(p.read_text())
        time.sleep(0.2)
    raise RuntimeError("gateway did not start its status endpoint")


def write_outputs(out: Path, gw_state: Path, status: dict, model_size: str = "small") -> dict:
    from ztfl.gateway.registry import Registry
    reg = Registry(gw_state)
    rounds = []
    for r in reg.rounds():
        cohorts = r.get("cohorts", {})
        metrics = r.get("metrics", {}).get("cnn-lstm", {})
        rounds.append({
            "round": r["round"], "attempt": r["attempt"], "status": r["status"], "reason": r["reason"],
            "participants": sorted({a for c in cohorts.values() for a in c["participants"]}),
            "dropouts": sorted({a for c in cohorts.values() for a in c["dropped"]}),
            "cohorts": {n: {"mask_bits": c["mask_bits"], "state": c["state"], "aggregated": c["aggregated"],
                            "dropped": c["dropped"], **_keys_and_privacy(c)} for n, c in cohorts.items()},
            "accuracy": metrics.get("accuracy"), "macro_f1": metrics.get("macro_f1"),
            "seconds": r.get("seconds"), "bytes_up": r.get("bytes_up"), "bytes_down": r.get("bytes_down"),
        })
    latest = reg.latest_models()["cnn-lstm"]
    vector = reg.load_model(latest)
    reg.close()
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(gw_state / "pipeline.json", out / "pipeline.json")
    import numpy as np
    import torch
    from ztfl.models.spec import ModelSpec
    from ztfl.models.params import set_flat
    from ztfl.models.preprocess import Pipeline
    pipe = Pipeline.load(out / "pipeline.json")
    model = ModelSpec("cnn-lstm", pipe.n_features, pipe.n_classes, model_size).build()
    set_flat(model, np.asarray(vector, dtype=np.float32))
    torch.save(model.state_dict(), out / "global_model.pt")
    from ztfl.models import bundle
    from ztfl.models.export.onnx_export import export_int8
    # A model directory `ztfl evaluate --model` reads, and the int8 ONNX the agents run.
    bundle.save(out / "global_model", model, pipe, latest.metrics)
    export_int8(model, pipe, out / "global_model.int8.onnx")
    summary = {"rounds": rounds, "final_model": {"variant": "cnn-lstm", "version": latest.version,
                                                 "sha256": latest.sha256, **latest.metrics},
               "agents": status.get("agents", {}),
               # Per cohort: the key epoch in use and its age; with DP, epsilon spent and the budget.
               "key_epochs": status.get("key_epochs", {}), "privacy": status.get("privacy", {}),
               "stopped": status.get("stopped", "")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _plots(out, rounds)
    return summary


def _keys_and_privacy(cohort: dict) -> dict:
    """A round's key epoch facts and privacy spend for one cohort (absent before key epochs)."""
    out = {}
    keys = cohort.get("keys")
    if keys:
        out.update(epoch=keys["epoch"], key_reuse=keys["key_reuse"], new_keys=len(keys["new_keys"]),
                   epoch_ended=keys["epoch_ended"])
    if cohort.get("privacy"):
        out["epsilon_after"] = cohort["privacy"]["epsilon_after"]
    return out


def _plots(out: Path, rounds: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    done = [r for r in rounds if r["status"] == "committed"]
    xs = [r["round"] for r in done]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(xs, [r["accuracy"] for r in done], marker="o", label="accuracy")
    ax.plot(xs, [r["macro_f1"] for r in done], marker="s", label="macro-F1")
    ax.set_xlabel("round")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar([x - 0.2 for x in xs], [r["bytes_up"] or 0 for r in done], width=0.4, label="up")
    ax.bar([x + 0.2 for x in xs], [r["bytes_down"] or 0 for r in done], width=0.4, label="down")
    ax.set_xlabel("round")
    ax.set_ylabel("bytes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "bytes.png")
    plt.close(fig)


def run(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from ztfl.hw_profiles import load_profile
    from ztfl.services import start_mosquitto
    console = Console(quiet=args.quiet)
    out = Path(args.out)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    broker = None
    if args.broker:
        broker_url = args.broker
    else:
        broker = start_mosquitto(workdir=work / "mosquitto")
        broker_url = broker.url
    console.print(f"broker {broker_url}; agents: {args.agents}")
    tpms: list | None = None if args.no_attestation else []
    gateway, agents, gw_state = launch(args, work, broker_url, tpms)
    killed = None
    code = 1
    try:
        port = wait_port(gw_state, gateway)
        status = {}
        with Progress(console=console, transient=False) as progress:
            task = progress.add_task("federating", total=args.rounds)
            while gateway.poll() is None:
                status = _status(port) or status
                if status:
                    progress.update(task, completed=min(args.rounds, status["round"] - 1),
                                    description=f"round {status['round']}.{status['attempt']} "
                                                f"{ {n: c['stage'] for n, c in status['cohorts'].items()} }")
                    # Kill the first agent while its own cohort waits for masked inputs: it has
                    # shared its keys, so the others must reconstruct its masks.
                    victim_cohort = "{}-{}".format(*load_profile(args.agents.split(",")[0]).cohort)
                    masked = status["cohorts"].get(victim_cohort, {}).get("stage") == "masked"
                    if (killed is None and args.kill_round and status["round"] == args.kill_round and masked):
                        killed = agents[0]
                        killed.kill()
                        console.print(f"[red]killed agent {args.agents.split(',')[0]}-0 in round "
                                      f"{status['round']} (stage masked)")
                    if status.get("done"):
                        time.sleep(2.5)    # the gateway lingers: collect the agents' final heartbeats
                        break
                time.sleep(0.3)
        status = _status(port) or status
        code = gateway.wait(timeout=30)
        summary = write_outputs(out, gw_state, status, args.model_size)
        for r in summary["rounds"]:
            console.print(f"round {r['round']}.{r['attempt']} {r['status']}: acc={r['accuracy']} "
                          f"f1={r['macro_f1']} dropouts={r['dropouts']} cohorts="
                          f"{ {n: c['mask_bits'] for n, c in r['cohorts'].items()} }")
        for a, info in status.get("agents", {}).items():
            console.print(f"  {a}: {info['state']}, alerts {info['alerts']} {info['alerts_by_label']}")
        for n, k in summary["key_epochs"].items():
            console.print(f"  {n}: " + ("classic rounds" if k["classic"] else
                          f"key epoch {k.get('epoch')} ({k.get('rounds_in_epoch')} of {k['max_rounds']} rounds, "
                          f"{k.get('age_s', 0):.0f} s old)") + f", {k['key_setups']} key setups")
        for n, d in summary["privacy"].items():
            console.print(f"  {n}: epsilon spent {d['epsilon_spent']:.4f} of {d['epsilon_budget']:g} "
                          f"(delta {d['delta']:g}){', ' + d['stopped'] if d['stopped'] else ''}")
        console.print(f"outputs in {out}")
    finally:
        for p in agents:
            if p.poll() is None:
                p.terminate()
        for p in agents + [gateway]:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for tpm in tpms or []:
            tpm.stop()
        if broker:
            broker.stop()
    return code
