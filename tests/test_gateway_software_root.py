"""ESP32 boards (no TPM) get a seat only on their provisioned device key, seen from the boards'
side: real mosquitto, the firmware agent in the real MicroPython unix port, the real gateway.

Seven boards are provisioned with `ztfl provision`, the digest of each one's flashed files
recorded in the device list; five (the agents' security floor: sharing groups of at least five)
run with their provisioned key and files, the sixth with a key of its own (a clone, or a board
whose key was swapped), the seventh with a boot.py planted after its build. First the gateway's
policy admits no software root: nobody is seated and no round is ever announced, every refusal
counted. Then the same gateway state with software roots allowed: the five honest boards are
seated, marked software-rooted and aggregated; the sixth's key has no certificate (it cannot
present the provisioned one: it certifies another key), so it is counted as uncertified and
never seated; the seventh reports another bundle digest than the recorded one and gets no seat.
What is simulated: the boards and their radio (the unix port runs on this host)."""
from __future__ import annotations

import json
import os
import time

import paho.mqtt.client as mqtt
import torch

from ztfl.fednet.messages import Hello
from ztfl.attestation.bundle import bundle_digest
from ztfl.attestation.device_list import record_device_field
from ztfl.attestation.software_identity import new_device_key
from ztfl.gateway.config import GatewayConfig
from ztfl.gateway.registry import Registry
from ztfl.gateway.server import Gateway
from ztfl.firmware_tools.records import partition_records, write_device_dir
from ztfl.firmware_tools.micropython_host import (firmware_device_config, firmware_trust_of,
                                                  provision_firmware_devices, start_firmware_agent)
from ztfl.attestation.provision import bundle_trust

HONEST = [f"esp-{i}" for i in range(5)]
ROGUE = "esp-5"
TAMPERED = "esp-6"     # its files changed after the build: a planted boot.py
STRANGER = "esp-9"     # never provisioned: only its (retained) hello is published
BOARDS = HONEST + [ROGUE, TAMPERED]


def _gateway(tmp_path, url, data, allow: bool) -> Gateway:
    return Gateway(GatewayConfig.from_dict({
        "federation": "plant", "gateway": "fog1", "broker": {"url": url}, "state_dir": str(tmp_path / "gw"),
        "data": data, "rounds": 1, "min_agents": 5, "min_cohort": 5, "heartbeat_s": 1.0,
        "require_attestation": True, "allow_software_rooted": allow,
        "software_devices": str(tmp_path / "fleet" / "gateway" / "devices.yaml"),
        "trust": bundle_trust(tmp_path / "fleet"),
        "deadlines_s": {"attest": 20, "advertise": 30, "share": 30, "masked": 60, "consistency": 30,
                        "unmask": 30}}))


def _counted(gateway: Gateway, root: str, verdict: str, reason: str) -> float:
    return gateway.metrics.registry.get_sample_value(
        "ztfl_attestation_total", {"root": root, "verdict": verdict, "reason": reason}) or 0.0


def _step_until(gateway: Gateway, done, procs, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        gateway.step()
        dead = [p.args for p in procs if p.poll() is not None]
        assert not dead, f"firmware agents exited: {dead}"


def test_esp32_seated_only_on_its_provisioned_device_key(mosquitto, datasets_dir, tmp_path):
    data = {"path": str(datasets_dir / "nsl_kdd" / "KDDTrain+_20Percent.txt"), "fmt": "nsl-kdd",
            "count": len(BOARDS), "alpha": 0.5, "seed": 7}
    keys = provision_firmware_devices(tmp_path / "fleet", "plant", "fog1", BOARDS)
    wrong_key = new_device_key()
    rounds_seen: list[bytes] = []
    spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    spy.on_message = lambda c, u, m: rounds_seen.append(bytes(m.payload))
    spy.connect("127.0.0.1", mosquitto.port)
    spy.subscribe("ztfl/plant/fog1/broadcast/round", qos=1)
    spy.loop_start()
    stranger = Hello(STRANGER, "esp32", "micro", 32, "micropython", 50, "device-key", new_device_key()[1].hex())
    spy.publish(f"ztfl/plant/fog1/agents/{STRANGER}/hello", stranger.encode(), qos=1, retain=True).wait_for_publish()
    procs = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)      # the gateway evaluates a small model in this process
    try:
        for i, agent_id in enumerate(BOARDS):
            records, classes = partition_records({**data, "index": i})
            seed, public = wrong_key if agent_id == ROGUE else keys[agent_id]
            cfg = firmware_device_config(agent_id, "plant", "fog1", "127.0.0.1", mosquitto.port, classes,
                                         seed, public, max_samples=32, attest=True,
                                         trust=None if agent_id == ROGUE else firmware_trust_of(tmp_path / "fleet",
                                                                                                  agent_id))
            device = write_device_dir(tmp_path / agent_id, cfg, records)
            # What `ztfl firmware build` records: the digest of the files flashed to the board.
            record_device_field(tmp_path / "fleet" / "gateway" / "devices.yaml", agent_id, "bundle_sha256",
                                bundle_digest(device).hex())
            if agent_id == TAMPERED:
                (device / "boot.py").write_text("import os  # runs before the agent\n")
            procs.append(start_firmware_agent(device, tmp_path / f"{agent_id}.log"))

        # 1. The policy admits no software root: every board is refused before any round.
        forbidding = _gateway(tmp_path, mosquitto.url, data, allow=False)
        try:
            forbidding.start()
            _step_until(forbidding, lambda: len(forbidding.agents.agents) == len(BOARDS) + 1, procs, 60)
            _step_until(forbidding, lambda: False, procs, 3)        # time enough to start a round
            assert set(forbidding.agents.agents) == set(BOARDS) | {STRANGER}
            assert _counted(forbidding, "software", "refused", "software_root_not_allowed") >= len(BOARDS)
            assert _counted(forbidding, "unknown", "refused", "not_enrolled") >= 1
            assert _counted(forbidding, "software", "seated", "") == 0
            assert forbidding.cohorts == {} and forbidding.registry.rounds() == []
            assert forbidding._status["agents"]["esp-0"]["root"] == "software"
        finally:
            forbidding.stop()
        assert rounds_seen == []

        # 2. Software roots allowed: the honest boards attest and are seated, the rogue is not.
        gateway = _gateway(tmp_path, mosquitto.url, data, allow=True)
        try:
            gateway.start()
            _step_until(gateway, lambda: gateway.done, procs, 150)
            stranger_refused = _counted(gateway, "unknown", "refused", "not_enrolled")
            verifier_metrics = gateway.attestation.verifier.metrics.snapshot()
            seated = _counted(gateway, "software", "seated", "")
            refused = _counted(gateway, "software", "refused", "bad_signature")
            uncertified = gateway.metrics.refusals.get("uncertified", 0)
            tampered = _counted(gateway, "software", "refused", "bundle_digest")
        finally:
            gateway.stop()
    finally:
        torch.set_num_threads(threads)
        spy.loop_stop()
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
    logs = {a: (tmp_path / f"{a}.log").read_text(errors="replace")[-1500:] for a in BOARDS}
    assert gateway.done and not gateway.failed, logs
    assert rounds_seen, "no round was announced once software roots were allowed"
    assert verifier_metrics == {"accepted_tpm": 0, "accepted_software": len(HONEST), "rejected": {}}
    assert (seated, refused, tampered, stranger_refused) == (len(HONEST), 0.0, 1.0, 1.0)
    assert uncertified >= 2           # the rogue's and the stranger's hellos: no certificate, no seat

    reg = Registry(tmp_path / "gw")
    try:
        outcomes = {a: (o, r) for _, cohort, a, o, r in reg.participants(1) if cohort == "micro-32"}
        committed = [r for r in reg.rounds() if r["status"] == "committed"]
    finally:
        reg.close()
    assert {a for a, (o, _) in outcomes.items() if o == "aggregated"} == set(HONEST), outcomes
    assert ROGUE not in outcomes, outcomes
    assert outcomes[TAMPERED][0] == "refused" and outcomes[TAMPERED][1].startswith("bundle_digest"), outcomes
    cohort = committed[-1]["cohorts"]["micro-32"]
    assert cohort["roots"] == {a: "software" for a in HONEST}
    assert cohort["aggregated"] == HONEST and STRANGER not in cohort["participants"]
    identities = {i["agent_id"]: i for i in json.loads((tmp_path / "gw" / "identities.json").read_text())["identities"]}
    assert {a: identities[a]["root"] for a in BOARDS} == {a: "software" for a in BOARDS}
    assert identities[ROGUE]["device_public_key"] == keys[ROGUE][1].hex() != wrong_key[1].hex()
    assert not os.path.exists(tmp_path / "gw" / "identities.tmp")
