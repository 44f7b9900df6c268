"""End to end through a real mosquitto: five firmware agents (the ESP32 agent in the MicroPython
unix port) and five CPython agents join one gateway round, each kind in its own cohort (micro
model with 32-bit masks; CNN-LSTM with 64-bit masks). Five is the agents' security floor: no
agent takes part in a sharing group of fewer. Both cohorts must aggregate exactly. Attestation is
on: each CPython agent has its own swtpm (enrolment, then a quote per round), its EK pinned on
first use (the gateway's `attestation.trust_on_first_use`); the firmware agents' device keys come
from `ztfl provision` and they sign each round's nonce with them, seated as software-rooted. The
firmware cohort's decoded sum equals, word for word, the sum of the firmware agents' encoded
updates, recomputed here by replaying their deterministic local training in MicroPython; the
CPython cohort's equals the sum of the updates its agents recorded. Radio and boards are what is
simulated: the unix port runs on this host."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import torch
import yaml

from ztfl.models.spec import flat_to_tensors
from ztfl.fednet.messages import ModelBlob
from ztfl.gateway.config import GatewayConfig
from ztfl.gateway.registry import Registry
from ztfl.gateway.server import Gateway
from ztfl.protocol.fixedpoint import quantize
from ztfl.attestation.software_identity import new_device_key
from ztfl.firmware_tools.records import partition_records, write_device_dir
from ztfl.firmware_tools.micropython_host import (firmware_device_config, firmware_trust_of, provision_firmware_devices,
                                   run_json, start_firmware_agent)
from ztfl.attestation.provision import Device, Fleet, bundle_trust, provision
from ztfl.services import start_swtpm

MAX_SAMPLES = 48
COHORT = 5                 # the agents' security floor: sharing groups of at least five
CPYTHON = list(range(COHORT))                  # pi-0 .. pi-4
FIRMWARE = list(range(COHORT, 2 * COHORT))     # esp-5 .. esp-9

_REPLAY = r"""
import sys, json, struct
from binascii import unhexlify
from ztfw.local_update import delta_source, training_steps
from ztfw.agent_wire import ModelBlob
from ztfw.micro_model import FloatMLP
from ztfw.masking import MaskedStream
from ztfw.records import Records
d = json.loads(sys.stdin.read())
blob = ModelBlob(unhexlify(d["blob"]), 1 << 20, 8192)
recs = Records(d["records"])
mlp = FloatMLP(blob.layer_sizes())
for _ in training_steps(mlp, blob, recs, d["round"], 1, 0.05, d["max_samples"]):
    pass
weight = max(1, min(round(len(recs) / d["weight_unit"]), d["max_weight"]))
m = MaskedStream(len(mlp.params), 32, d["frac_bits"], d["clip_q"], weight, delta_source(mlp.params, blob), [], [])
raw = b"".join(bytes(c) for c in m.chunks())
print(json.dumps({"words": list(struct.unpack("<%dI" % (len(raw) // 4), raw)), "weight": weight}))
"""


class RecordingGateway(Gateway):
    """The real gateway, keeping each cohort's exact protocol result when the round closes."""

    def __init__(self, config):
        super().__init__(config)
        self.closed: dict = {}

    def _close_round(self, now):
        for name, run in self.cohorts.items():
            agg = run.aggregation
            if agg is not None and agg.server.result is not None:
                self.closed[name] = {"result": agg.server.result, "config": agg.server.config,
                                     "weight_unit": run.weight_unit,
                                     "sids": {a: p.sid for a, p in run.participants.items()}}
        super()._close_round(now)


def run_gateway_to_completion(gateway: Gateway, procs: list, timeout_s: float = 420) -> None:
    """Step the gateway until its rounds are done (or the timeout), failing if an agent process exits."""
    deadline = time.monotonic() + timeout_s
    # The gateway evaluates small models in this process: one torch thread is much faster
    # than an oversubscribed pool on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        while not gateway.done and time.monotonic() < deadline:
            gateway.step()
            dead = [p.args for p in procs if p.poll() is not None]
            assert not dead, f"agent processes exited: {dead}"
    finally:
        torch.set_num_threads(threads)


def test_mixed_round_five_firmware_and_five_cpython_agents(mosquitto, datasets_dir, tmp_path):
    data = {"path": str(datasets_dir / "nsl_kdd" / "KDDTrain+_20Percent.txt"), "fmt": "nsl-kdd",
            "count": 2 * COHORT, "alpha": 0.5, "seed": 7}
    url = f"mqtt://127.0.0.1:{mosquitto.port}"
    keys = provision_firmware_devices(tmp_path / "fleet", "plant", "fog1", [f"esp-{i}" for i in FIRMWARE])
    # The Linux agents' bundles from the same CA, in a tree of their own (their TPMs enrol on first use).
    provision(Fleet("plant", "fog1", [Device(f"pi-{i}", "raspberry-pi-4") for i in CPYTHON],
                    ca_dir=tmp_path / "fleet-ca"), tmp_path / "agents")
    gateway = RecordingGateway(GatewayConfig.from_dict({
        "federation": "plant", "gateway": "fog1", "broker": {"url": url}, "state_dir": str(tmp_path / "gw"),
        "data": data, "rounds": 1, "min_agents": 2 * COHORT, "min_cohort": COHORT, "heartbeat_s": 1.0,
        "trust": bundle_trust(tmp_path / "fleet"),
        "require_attestation": True, "allow_software_rooted": True,
        "software_devices": str(tmp_path / "fleet" / "gateway" / "devices.yaml"),
        # The swtpms' EKs are pinned by no device list: each is pinned when its agent first enrols.
        "attestation": {"trust_on_first_use": True},
        "deadlines_s": {"attest": 20, "advertise": 30, "share": 30, "masked": 90, "consistency": 30,
                        "unmask": 30}}))
    micro_v0 = gateway.models["micro"].copy()
    micro_blob = ModelBlob(gateway.versions["micro"].version, "micro", gateway.versions["micro"].sha256,
                           flat_to_tensors(micro_v0, gateway.layouts["micro"])).encode()
    procs, devices, tpms, configs = [], {}, [], []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    try:
        # Everything slow first (swtpms, the boards' records), then the gateway, then the agents,
        # and the gateway steps at once: it must read each enrolment request as it comes. An
        # agent resends its request every 5 s until a challenge comes; two requests answered back
        # to back give two challenges, and the answer to the first, checked against the second
        # one's secret, is refused.
        for i in CPYTHON:
            cfg = {"agent_id": f"pi-{i}", "federation": "plant", "gateway": "fog1", "broker": {"url": url},
                   "profile": "raspberry-pi-4", "state_dir": str(tmp_path / f"pi-{i}"), "data": {**data, "index": i},
                   "heartbeat_s": 1.0, "train_epochs": 1, "max_batches": 2, "seed": i,
                   "record_updates_dir": str(tmp_path / "updates"), "trust": bundle_trust(tmp_path / "agents", f"pi-{i}")}
            tpms.append(start_swtpm(tmp_path / "tpm" / f"pi-{i}"))
            cfg["tpm"] = {"tcti": tpms[-1].tcti}
            configs.append(tmp_path / f"pi-{i}.yaml")
            configs[-1].write_text(yaml.safe_dump(cfg))
        for i in FIRMWARE:
            records, classes = partition_records({**data, "index": i})
            seed, public = keys[f"esp-{i}"]
            cfg = firmware_device_config(f"esp-{i}", "plant", "fog1", "127.0.0.1", mosquitto.port, classes,
                                         seed, public, max_samples=MAX_SAMPLES, attest=True,
                                         trust=firmware_trust_of(tmp_path / "fleet", f"esp-{i}"))
            devices[f"esp-{i}"] = write_device_dir(tmp_path / f"esp-{i}", cfg, records)
        gateway.start()
        for path in configs:
            procs.append(subprocess.Popen([sys.executable, "-m", "ztfl.cli", "agent", "--config", str(path)],
                                          stdout=open(path.with_suffix(".log"), "wb"), stderr=subprocess.STDOUT,
                                          env=env))
        for agent_id, device in devices.items():
            procs.append(start_firmware_agent(device, tmp_path / f"{agent_id}.log"))
        run_gateway_to_completion(gateway, procs)
        status = gateway._status
        verdicts = gateway.attestation.verifier.metrics.snapshot()
    finally:
        gateway.stop()
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        for tpm in tpms:
            tpm.stop()
    logs = {f: (tmp_path / f).read_text(errors="replace")[-1500:] for f in os.listdir(tmp_path) if f.endswith(".log")}
    assert gateway.done and not gateway.failed, logs
    assert set(gateway.closed) == {"micro-32", "cnn-lstm-64"}, logs
    # Every seat was attested: quotes from the swtpms, device-key signatures from the boards.
    assert verdicts == {"accepted_tpm": COHORT, "accepted_software": COHORT, "rejected": {}}
    reg = Registry(tmp_path / "gw")
    cohorts = reg.rounds()[-1]["cohorts"]
    reg.close()
    assert cohorts["micro-32"]["roots"] == {f"esp-{i}": "software" for i in FIRMWARE}
    assert cohorts["cnn-lstm-64"]["roots"] == {f"pi-{i}": "tpm" for i in CPYTHON}

    # CPython cohort: the decoded sum is exactly the sum of the five agents' weighted fixed-point
    # updates (each agent keeps its plaintext update locally for this check).
    cpy = gateway.closed["cnn-lstm-64"]
    assert cpy["result"].survivors == tuple(sorted(cpy["sids"].values())) and cpy["result"].dropped == ()
    cfg64 = cpy["config"]
    recorded = sorted((tmp_path / "updates").glob("pi-*-r1.0.npy"))
    assert len(recorded) == COHORT
    sums64, weight64 = np.zeros(cfg64.dim, dtype=np.int64), 0
    for path in recorded:
        w = min(int(path.with_suffix(".weight").read_text()), cfg64.max_weight)
        sums64 += w * quantize(np.load(path), cfg64.frac_bits, cfg64.clip_q)
        weight64 += w
    assert np.array_equal(cpy["result"].sums, sums64)
    assert cpy["result"].total_weight == weight64

    # Firmware cohort: the decoded sum is exactly the sum of the five encoded updates.
    fw = gateway.closed["micro-32"]
    result, config = fw["result"], fw["config"]
    assert result.survivors == tuple(sorted(fw["sids"].values())) and result.dropped == ()
    expected = np.zeros(config.dim + 1, dtype=np.uint64)
    for agent_id, device in devices.items():
        replay = run_json(_REPLAY, {"blob": micro_blob.hex(), "records": str(device / "records.bin"), "round": 1,
                                    "weight_unit": fw["weight_unit"], "max_weight": config.max_weight,
                                    "max_samples": MAX_SAMPLES, "frac_bits": config.frac_bits,
                                    "clip_q": config.clip_q}, timeout=120)
        expected = (expected + np.asarray(replay["words"], dtype=np.uint64)) % (1 << 32)
    assert np.array_equal(result.total.astype(np.uint64), expected)
    assert result.total_weight == int(expected[-1])
    assert np.any(result.sums != 0)

    # The firmware agents ran as agents: heartbeats with the model version and records scanned.
    for agent_id in devices:
        info = status["agents"][agent_id]
        assert info["profile"] == "esp32" and info["cohort"] == "micro-32"
        assert info["model_version"] >= 0


def test_firmware_agents_reuse_their_keys_across_a_gateway_epoch(mosquitto, datasets_dir, tmp_path):
    """Five firmware agents, the micro-32 cohort in key-reuse rounds (epochs of two rounds):
    rounds 1 and 2 share one key setup, round 3 starts a new epoch; every round commits with all
    five aggregated."""
    data = {"path": str(datasets_dir / "nsl_kdd" / "KDDTrain+_20Percent.txt"), "fmt": "nsl-kdd",
            "count": COHORT, "alpha": 0.5, "seed": 3}
    agents = [f"esp-{i}" for i in range(COHORT)]
    keys = provision_firmware_devices(tmp_path / "fleet", "plant", "fog1", agents)
    gateway = RecordingGateway(GatewayConfig.from_dict({
        "federation": "plant", "gateway": "fog1", "broker": {"url": f"mqtt://127.0.0.1:{mosquitto.port}"},
        "trust": bundle_trust(tmp_path / "fleet"),
        "state_dir": str(tmp_path / "gw"), "data": data, "rounds": 3, "min_agents": COHORT, "min_cohort": COHORT,
        "heartbeat_s": 1.0, "round_interval_s": 0.2, "cohorts": {"micro-32": {"key_epoch": {"max_rounds": 2}}},
        "deadlines_s": {"advertise": 30, "share": 30, "masked": 90, "consistency": 30, "unmask": 30}}))
    procs = []
    try:
        for i in range(COHORT):
            records, classes = partition_records({**data, "index": i})
            seed, public = keys[f"esp-{i}"]
            cfg = firmware_device_config(f"esp-{i}", "plant", "fog1", "127.0.0.1", mosquitto.port, classes,
                                         seed, public, max_samples=16,
                                         trust=firmware_trust_of(tmp_path / "fleet", f"esp-{i}"))
            procs.append(start_firmware_agent(write_device_dir(tmp_path / f"esp-{i}", cfg, records),
                                              tmp_path / f"esp-{i}.log"))
        gateway.start()
        run_gateway_to_completion(gateway, procs)
    finally:
        gateway.stop()
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
    logs = {f: (tmp_path / f).read_text(errors="replace")[-1500:] for f in os.listdir(tmp_path) if f.endswith(".log")}
    assert gateway.done and not gateway.failed, logs
    reg = Registry(tmp_path / "gw")
    rounds = [r for r in reg.rounds() if r["status"] == "committed"]
    reg.close()
    assert [r["round"] for r in rounds] == [1, 2, 3], logs
    keys = {r["round"]: r["cohorts"]["micro-32"]["keys"] for r in rounds}
    assert all(k["key_reuse"] for k in keys.values())
    assert keys[1]["epoch"] == keys[2]["epoch"] < keys[3]["epoch"]
    assert keys[1]["new_keys"] == agents and keys[2]["kept_keys"] == agents and keys[2]["new_keys"] == []
    assert keys[3]["new_keys"] == agents
    assert all(r["cohorts"]["micro-32"]["aggregated"] == agents for r in rounds)


def test_firmware_agent_declines_a_round_with_differential_privacy(mosquitto, tmp_path):
    """The firmware adds no DP noise: a round announced with `dp` is declined with a logged reason
    and no key material is made or sent; the same round without `dp` is taken."""
    import json as _json
    import threading

    import paho.mqtt.client as paho

    from ztfl.fednet.messages import RoundAnnounce
    seed, public = new_device_key()
    rng = np.random.default_rng(0)
    from ztfl.firmware_tools.records import encode_records
    cfg = firmware_device_config("esp-9", "plant", "fog1", "127.0.0.1", mosquitto.port, ["normal", "dos"],
                                 seed, public, heartbeat_s=0.5)
    device = write_device_dir(tmp_path / "esp-9", cfg,
                              encode_records(rng.random((8, 6)).astype(np.float32), rng.integers(0, 2, 8)))
    seen, ready = [], threading.Event()
    watcher = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="watcher")
    watcher.on_connect = lambda cl, u, f, rc, p=None: (cl.subscribe("ztfl/plant/fog1/agents/esp-9/#", 1), ready.set())
    watcher.on_message = lambda cl, u, m: seen.append((m.topic, m.payload))
    watcher.connect("127.0.0.1", mosquitto.port)
    watcher.loop_start()
    agent = start_firmware_agent(device, tmp_path / "agent.log")
    try:
        assert ready.wait(5)
        deadline = time.monotonic() + 20
        while not any(t.endswith("/heartbeat") for t, _ in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        server_pk = "11" * 32
        ann = RoundAnnounce(round=4, attempt=0, cohort="micro-32", model_variant="micro", mask_bits=32,
                            model_version=0, model_sha256="0" * 64, participants=[["esp-9", 1, public.hex()],
                                                                                ["esp-8", 2, "22" * 32]],
                            threshold=2, nonce="00" * 16, deadlines_s={}, server_pk=server_pk, epoch=9,
                            protocol_round=1024, key_reuse=True,
                            dp={"mechanism": "skellam", "clip_norm": 1.0, "noise_variance": 4.0, "frac_bits": 16,
                                "dim": 10, "min_survivors": 2})
        watcher.publish("ztfl/plant/fog1/broadcast/round", ann.encode(), qos=1)
        deadline = time.monotonic() + 20
        log = tmp_path / "agent.log"
        while "declined" not in log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.05)
        text = log.read_text(errors="replace")
        assert "round 4.0 micro-32 declined: the round asks for differential-privacy noise, which this firmware " \
               "does not implement" in text, text
        time.sleep(1.0)
        # Still online, no state other than its heartbeats and hello: nothing for the round.
        assert {t.rsplit("/", 1)[1] for t, _ in seen} <= {"hello", "heartbeat"}
        states = [_json.loads(p)["state"] for t, p in seen if t.endswith("/heartbeat")]
        assert "training" not in states
        assert agent.poll() is None
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        watcher.loop_stop()
        watcher.disconnect()
