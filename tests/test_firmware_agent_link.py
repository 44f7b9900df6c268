"""The firmware agent's MQTT link in the unix port: it announces itself, heartbeats, comes back
by itself (hello again) after the broker restarts, and its last will reports it offline."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import paho.mqtt.client as paho

from ztfl.attestation.software_identity import new_device_key
from ztfl.firmware_tools.records import encode_records, write_device_dir
from ztfl.firmware_tools.micropython_host import firmware_device_config, start_firmware_agent


def _watch(port: int, messages: list, connected: threading.Event) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="watcher")
    c.on_connect = lambda cl, u, f, rc, p=None: (cl.subscribe("ztfl/plant/fog1/agents/#", 1), connected.set())
    c.on_message = lambda cl, u, m: messages.append((time.monotonic(), m.topic, m.payload))
    c.reconnect_delay_set(0.2, 1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _wait(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_agent_announces_heartbeats_and_reconnects_after_broker_restart(mosquitto, tmp_path):
    rng = np.random.default_rng(0)
    seed, public = new_device_key()
    cfg = firmware_device_config("esp-07", "plant", "fog1", "127.0.0.1", mosquitto.port, ["normal", "dos"],
                                 seed, public, heartbeat_s=0.5)
    device = write_device_dir(tmp_path / "esp-07", cfg,
                              encode_records(rng.random((10, 6)).astype(np.float32), rng.integers(0, 2, 10)))
    messages, connected = [], threading.Event()
    watcher = _watch(mosquitto.port, messages, connected)
    assert connected.wait(5)
    agent = start_firmware_agent(device, tmp_path / "agent.log")
    try:
        hellos = lambda: [m for m in messages if m[1].endswith("/esp-07/hello")]      # noqa: E731
        beats = lambda: [m for m in messages if m[1].endswith("/esp-07/heartbeat")]   # noqa: E731
        assert _wait(lambda: hellos() and len(beats()) >= 2, 20), (tmp_path / "agent.log").read_text()
        hello = json.loads(hellos()[0][2])
        assert hello == {"agent_id": "esp-07", "profile": "esp32", "model_variant": "micro", "mask_bits": 32,
                         "runtime": "micropython", "samples": 10, "attestation": "device-key",
                         "identity_pk": public.hex()}
        assert json.loads(beats()[-1][2])["state"] == "online"    # no model yet
        before = len(hellos())
        connected.clear()
        mosquitto.restart()
        restarted = time.monotonic()
        assert connected.wait(10)
        # A new hello after the restart (retained messages did not survive: persistence is off).
        assert _wait(lambda: len(hellos()) > before, 30), (tmp_path / "agent.log").read_text()
        assert _wait(lambda: any(t > restarted for t, *_ in beats()), 10)
        assert agent.poll() is None
        # Killed without DISCONNECT: the broker publishes the agent's last will, "offline".
        agent.terminate()
        agent.wait(timeout=10)
        assert _wait(lambda: any(json.loads(p)["state"] == "offline" for _, _, p in beats()), 10)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        watcher.loop_stop()
        watcher.disconnect()
