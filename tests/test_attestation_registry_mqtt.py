"""The device registry through the broker: real mosquitto, real swtpms, the real gateway.

pi-01 is provisioned with its EK pinned and enrols over MQTT. A thief holding pi-01's TLS key
publishes an enrolment under its name from a TPM of its own: the gateway refuses it (counted
as `ek_changed`), sends it no challenge, and pi-01 stays enrolled and eligible for a seat. Then
the operator revokes pi-01 with `ztfl attest revoke` while the gateway runs: from the next round
on it is no longer eligible, and its enrolments are refused (`device_revoked`)."""
from __future__ import annotations

import hashlib
import queue
import time

import paho.mqtt.client as mqtt
import pytest
import yaml

from ztfl.attestation.ek_pin import ek_fingerprint
from ztfl.attestation.measure import expected_pcr
from ztfl.attestation.messages import EnrolmentChallenge
from ztfl.attestation.tpm_agent import TpmAttestor
from ztfl.cli import main as ztfl
from ztfl.fednet.messages import Hello
from ztfl.gateway.config import GatewayConfig
from ztfl.gateway.server import Gateway
from ztfl.services import start_swtpm

BASE = "ztfl/plant/fog1"
PROFILE = "raspberry-pi-4"


@pytest.fixture
def tpms(tmp_path):
    started = [start_swtpm(tmp_path / "tpm-device"), start_swtpm(tmp_path / "tpm-thief")]
    attestors = [TpmAttestor(t.tcti, tmp_path / f"agent-{i}") for i, t in enumerate(started)]
    yield attestors
    for a in attestors:
        a.close()
    for t in started:
        t.stop()


def _step_until(gateway: Gateway, done, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        gateway.step()
    assert done(), "timed out"


def test_thief_and_revoked_device_get_no_seat_through_the_broker(mosquitto, datasets_dir, tmp_path, tpms):
    device, thief = tpms
    request = device.enrolment_request("pi-01", PROFILE)
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"devices": [{"agent_id": "pi-01", "profile": PROFILE, "root": "tpm",
                                                    "ek_sha256": ek_fingerprint(request.ek_public)}]}))
    policy = tmp_path / "attestation-policy.yaml"
    policy.write_text(yaml.safe_dump({"pcrs": [23], "allowlist": {PROFILE: {23: [
        expected_pcr(hashlib.sha256(b"release").digest()).hex()]}}}))
    state_dir = tmp_path / "gw"
    gateway = Gateway(GatewayConfig.from_dict({
        "federation": "plant", "gateway": "fog1", "broker": {"url": mosquitto.url}, "state_dir": str(state_dir),
        "data": {"path": str(datasets_dir / "nsl_kdd" / "KDDTrain+_20Percent.txt"), "fmt": "nsl-kdd",
                 "count": 4, "alpha": 0.5, "seed": 7},
        "rounds": 1, "min_agents": 4, "heartbeat_s": 1.0, "require_attestation": True,
        "attestation": {"devices": str(devices), "policy": str(policy)}}))
    challenges: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda c, u, m: challenges.put(bytes(m.payload))
    client.connect("127.0.0.1", mosquitto.port)
    client.subscribe(f"{BASE}/broadcast/to/pi-01/attest", qos=1)
    client.loop_start()

    def publish(kind: str, payload: bytes) -> None:
        client.publish(f"{BASE}/agents/pi-01/{kind}", payload, qos=1).wait_for_publish()

    try:
        gateway.start()
        publish("hello", Hello("pi-01", PROFILE, "cnn-lstm", 64, "onnxruntime", 50, "tpm-required",
                               bytes(32).hex()).encode())
        publish("enrol", request.to_bytes())
        _step_until(gateway, lambda: not challenges.empty())
        publish("enrol", device.activate("pi-01", EnrolmentChallenge.from_bytes(challenges.get())).to_bytes())
        _step_until(gateway, lambda: gateway.attestation.enrolled("pi-01"))
        enrolled = gateway.attestation.registry.get("pi-01")
        assert [i.hello.agent_id for i in gateway._eligible()] == ["pi-01"]

        # The thief: pi-01's TLS key, a TPM of its own.
        publish("enrol", thief.enrolment_request("pi-01", PROFILE).to_bytes())
        _step_until(gateway, lambda: gateway.metrics.refusals.get("ek_changed", 0) == 1)
        time.sleep(0.5)
        gateway.step()
        assert challenges.empty(), "the thief was sent a credential challenge"
        assert gateway.attestation.registry.get("pi-01") == enrolled
        assert [i.hello.agent_id for i in gateway._eligible()] == ["pi-01"]

        # Revoked while the gateway runs: no seat from the next round on, no enrolment either.
        assert ztfl(["attest", "revoke", "--state", str(state_dir), "--agent", "pi-01"]) == 0
        assert gateway._eligible() == []
        publish("enrol", request.to_bytes())
        _step_until(gateway, lambda: gateway.metrics.refusals.get("device_revoked", 0) == 1)
        assert challenges.empty()
    finally:
        gateway.stop()
        client.loop_stop()
        client.disconnect()
