"""The firmware agent (unix port) takes the retained global micro model from the broker,
classifies its records with the int8 model and publishes alerts in the CPython agent's format."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import paho.mqtt.client as paho
import torch

from ztfl.models.spec import flat_to_tensors, layout
from ztfl.fednet.messages import Alert, Heartbeat, ModelBlob
from ztfl.attestation.software_identity import new_device_key
from ztfl.models.micro import MicroConfig, MicroMLP
from ztfl.models.params import get_flat
from ztfl.firmware_tools.records import encode_records, quantise_rows, write_device_dir
from ztfl.firmware_tools.micropython_host import firmware_device_config, start_firmware_agent

CLASSES = ["normal", "dos"]


def _records():
    rng = np.random.default_rng(3)
    x = rng.random((20, 6)).astype(np.float32)
    # Clear margins on feature 0: below 0.3 normal, above 0.7 an attack.
    x[:, 0] = np.where(np.arange(20) % 5 < 2, rng.uniform(0.75, 1.0, 20), rng.uniform(0.0, 0.25, 20))
    return x, (x[:, 0] > 0.5).astype(int)



class _one_thread:
    """Tiny models train far faster on one thread than with torch's pool on a loaded machine."""

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def _model(x, y):
    torch.manual_seed(0)
    model = MicroMLP(MicroConfig(6, 2, (8,)))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    with _one_thread():
        for _ in range(200):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
            opt.step()
    return model


def test_agent_loads_the_global_model_and_publishes_alerts(mosquitto, tmp_path):
    x, y = _records()
    model = _model(x, y)
    blob = ModelBlob(3, "micro", "ab" * 32, flat_to_tensors(get_flat(model), layout(model))).encode()
    # What the device will compute from: the int8 wire model and its own int8 inputs.
    wire_model = MicroMLP(MicroConfig(6, 2, (8,)))
    wire_model.load_state_dict({k: torch.from_numpy(v) for k, v in ModelBlob.decode(blob, 1 << 20).tensors.items()})
    with torch.no_grad():
        pred = wire_model(torch.from_numpy(quantise_rows(x).astype(np.float32) / 127)).argmax(1).numpy()
    assert (pred == y).all()
    seed, public = new_device_key()
    cfg = firmware_device_config("esp-09", "plant", "fog1", "127.0.0.1", mosquitto.port, CLASSES, seed, public,
                                 heartbeat_s=0.3)
    cfg["stream_rate_hz"] = 40
    device = write_device_dir(tmp_path / "esp-09", cfg, encode_records(x, y))

    alerts, beats, ready = [], [], threading.Event()
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="gateway-sim")
    c.on_connect = lambda cl, u, f, rc, p=None: (cl.subscribe("ztfl/plant/fog1/agents/esp-09/+", 1), ready.set())
    c.on_message = lambda cl, u, m: (alerts if m.topic.endswith("/alerts") else beats).append(m)
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    assert ready.wait(5)
    c.publish("ztfl/plant/fog1/broadcast/model-micro", blob, qos=1, retain=True).wait_for_publish(5)
    agent = start_firmware_agent(device, tmp_path / "agent.log")
    try:
        deadline = time.monotonic() + 30
        last = None
        while time.monotonic() < deadline:
            hb = [Heartbeat.decode(m.payload) for m in list(beats) if m.topic.endswith("/heartbeat")]
            if hb and hb[-1].records_total >= 25:
                last = hb[-1]
                break
            time.sleep(0.1)
        assert last is not None, (tmp_path / "agent.log").read_text()
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        c.loop_stop()
        c.disconnect()
    assert last.model_version == 3 and last.state == "detecting"
    # Records are scanned in order, cycling: alerts so far = attacks among the first R records.
    expected = sum(int(pred[i % 20] == 1) for i in range(last.records_total))
    assert last.alerts_total == expected
    decoded = [Alert.decode(m.payload) for m in alerts]
    assert len(decoded) >= expected
    assert all(a.agent_id == "esp-09" and a.label == "dos" and a.model_version == 3 and 0.5 < a.score <= 1.0
               for a in decoded)
    assert [a.seq for a in decoded] == list(range(1, len(decoded) + 1))



def test_alert_numbers_keep_growing_across_a_restart(mosquitto, tmp_path):
    x, y = _records()
    model = _model(x, y)
    blob = ModelBlob(1, "micro", "cd" * 32, flat_to_tensors(get_flat(model), layout(model))).encode()
    seed, public = new_device_key()
    cfg = firmware_device_config("esp-10", "plant", "fog1", "127.0.0.1", mosquitto.port, CLASSES, seed, public)
    cfg["stream_rate_hz"] = 40
    device = write_device_dir(tmp_path / "esp-10", cfg, encode_records(x, y))
    alerts, ready = [], threading.Event()
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="gateway-sim")
    c.on_connect = lambda cl, u, f, rc, p=None: (cl.subscribe("ztfl/plant/fog1/agents/esp-10/alerts", 1), ready.set())
    c.on_message = lambda cl, u, m: alerts.append(Alert.decode(m.payload).seq)
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    assert ready.wait(5)
    c.publish("ztfl/plant/fog1/broadcast/model-micro", blob, qos=1, retain=True).wait_for_publish(5)
    try:
        for run in (1, 2):
            before = len(alerts)
            agent = start_firmware_agent(device, tmp_path / f"agent{run}.log")
            try:
                deadline = time.monotonic() + 20
                while len(alerts) < before + 3 and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                agent.kill()          # no clean shutdown: the state file is all that survives
                agent.wait(timeout=10)
            assert len(alerts) >= before + 3, (tmp_path / f"agent{run}.log").read_text()
            if run == 1:
                first_run = list(alerts)
    finally:
        c.loop_stop()
        c.disconnect()
    second_run = alerts[len(first_run):]
    assert first_run[:3] == [1, 2, 3]
    assert min(second_run) > max(first_run)    # the gateway would drop repeated numbers
    assert second_run == sorted(second_run)
