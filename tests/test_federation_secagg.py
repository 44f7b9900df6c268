"""A federation of real agent processes through a real mosquitto, each with its own swtpm: every
agent enrols and quotes before it is seated, the model the gateway commits moves by exactly the
weighted FedAvg of the agents' (locally recorded) plaintext updates, and a subscriber to ztfl/#
sees only high-entropy masked words on /masked topics."""
from __future__ import annotations

import argparse
import json
import math
from collections import Counter

import numpy as np
import paho.mqtt.client as mqtt

from ztfl.fednet.messages import Envelope
from ztfl.gateway.registry import Registry
from ztfl.demo import launch, wait_port


def _entropy(data: bytes) -> float:
    counts = Counter(data)
    return -sum(c / len(data) * math.log2(c / len(data)) for c in counts.values())


def test_secure_aggregate_equals_plaintext_fedavg(mosquitto, datasets_dir, tmp_path):
    seen: list[tuple[str, bytes]] = []
    spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    spy.on_message = lambda c, u, m: seen.append((m.topic, bytes(m.payload)))
    spy.connect("127.0.0.1", mosquitto.port)
    spy.subscribe("ztfl/#", qos=1)
    spy.loop_start()
    # Five: the agents take part only in sharing groups of at least five (their security floor).
    profiles = ["raspberry-pi-4"] * 3 + ["jetson-orin-nano"] * 2
    args = argparse.Namespace(agents=",".join(profiles),
                              rounds=1, alpha=0.5, data=str(datasets_dir / "nsl_kdd" / "KDDTrain+_20Percent.txt"),
                              model_size="small", max_batches=5, record_updates_dir=str(tmp_path / "updates"))
    tpms: list = []     # one swtpm per agent: enrolment, then a quote before the seat
    gateway, agents, gw_state = launch(args, tmp_path, mosquitto.url, tpms)
    try:
        wait_port(gw_state, gateway)
        assert gateway.wait(timeout=150) == 0
    finally:
        for p in agents:
            p.terminate()
        for p in agents:
            p.wait(timeout=10)
        spy.loop_stop()
        for tpm in tpms:
            tpm.stop()
    identities = json.loads((gw_state / "identities.json").read_text())["identities"]
    assert sorted(i["agent_id"] for i in identities if i["active"]) == sorted(
        f"{p}-{i}" for i, p in enumerate(profiles))
    assert sum(1 for t, _ in seen if t.endswith("/attest")) >= len(profiles)    # quotes up (and challenges down)
    reg = Registry(gw_state)
    assert {a for _, _, a, outcome, _ in reg.participants(1) if outcome == "aggregated"} == {
        f"{p}-{i}" for i, p in enumerate(profiles)}
    versions = reg.model_versions("cnn-lstm")
    assert [v.version for v in versions] == [0, 1]
    applied = reg.load_model(versions[1]).astype(np.float64) - reg.load_model(versions[0])
    updates = sorted((tmp_path / "updates").glob("*.npy"))
    assert len(updates) == len(profiles)
    weights = [int(u.with_suffix(".weight").read_text()) for u in updates]
    fedavg = sum(w * np.load(u).astype(np.float64) for w, u in zip(weights, updates)) / sum(weights)
    # Exact up to the fixed-point step (2^-24 at 64-bit masks) and float32 storage.
    np.testing.assert_allclose(applied, fedavg, atol=1e-5)
    assert np.abs(fedavg).max() > 1e-3          # the round really moved the model

    masked = [Envelope.decode(p, 1 << 24).body for t, p in seen if t.endswith("/masked")]
    assert len(masked) == len(profiles)
    for body in masked:
        words = body[20 + 8:-64]              # frame header + masked-input prefix ... signature
        assert _entropy(words) > 7.9
    # Nothing else carries a vector of the model's size: only the global model itself, which the
    # gateway broadcasts (int8 weights and the int8 detector), is that large.
    dim = applied.size
    public = ("/broadcast/model-", "/broadcast/detector-")
    assert all(len(p) < dim * 4 for t, p in seen if not t.endswith("/masked") and not any(k in t for k in public))
