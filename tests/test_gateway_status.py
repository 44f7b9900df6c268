"""A gateway against the real broker: hellos and heartbeats tracked, malformed and impersonating
messages rejected with a reason and counted, metrics and JSON status served, `ztfl status` reads them."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import paho.mqtt.client as mqtt

from ztfl.fednet.messages import Alert, Heartbeat, Hello
from ztfl.gateway.config import GatewayConfig
from ztfl.gateway.server import Gateway


def _pump(gw: Gateway, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        gw.step(0.05)


def test_gateway_tracks_agents_and_counts_rejections(mosquitto, datasets_dir, tmp_path):
    cfg = GatewayConfig.from_dict({
        "federation": "f", "gateway": "g", "broker": {"url": mosquitto.url}, "state_dir": str(tmp_path / "gw"),
        "data": {"path": str(datasets_dir / "nsl_kdd" / "KDDTrain+_20Percent.txt"), "fmt": "nsl-kdd"},
        "min_agents": 10, "heartbeat_s": 1.0})
    gw = Gateway(cfg)
    gw.start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        base = "ztfl/f/g/agents"
        hello = Hello("a1", "raspberry-pi-4", "cnn-lstm", 64, "onnxruntime", 100, "tpm-required", "11" * 32)
        pub.publish(f"{base}/a1/hello", hello.encode(), qos=1).wait_for_publish(5)
        pub.publish(f"{base}/a1/heartbeat", Heartbeat("a1", "detecting", 0, 0, 2, 50).encode(), qos=1)
        for seq in (1, 2, 2):      # the redelivered seq 2 is counted once
            pub.publish(f"{base}/a1/alerts", Alert("a1", seq, "dos", 0.9, 0).encode(), qos=1)
        pub.publish(f"{base}/a1/alerts", b"{not json", qos=1)                                    # malformed
        pub.publish(f"{base}/a2/heartbeat", Heartbeat("a1", "online", 0, 0, 0, 0).encode(), qos=1)  # impersonation
        pub.publish(f"{base}/a1/masked", b"ZE\x01garbage", qos=1)                                # bad envelope
        pub.publish(f"{base}/a1/hello", Hello("a1", "raspberry-pi-4", "cnn-lstm", 64, "onnxruntime", 100,
                                              "tpm-required", "22" * 32).encode(), qos=1)      # key change
        pub.publish(f"{base}/a1/masked", b"\x00" * (cfg.max_payload + 1), qos=1)                 # oversized
        _pump(gw, 2.0)
        port = gw.http.port
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'ztfl_rejected_messages_total{reason="malformed"} 2.0' in metrics
        assert 'ztfl_rejected_messages_total{reason="impersonation"} 1.0' in metrics
        assert 'ztfl_rejected_messages_total{reason="identity"} 1.0' in metrics
        assert 'ztfl_alerts_total{agent="a1",label="dos"} 2.0' in metrics
        status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5).read())
        assert status["agents"]["a1"]["state"] == "detecting"
        assert status["agents"]["a1"]["alerts"] == 2
        assert status["rejected"] == 1          # the oversized one, dropped before decoding
        assert status["round"] == 1 and not status["cohorts"]    # 1 agent < min_agents: no round
        out = subprocess.run([sys.executable, "-m", "ztfl.cli", "status", "--url", f"http://127.0.0.1:{port}",
                              "--json"], capture_output=True, text=True, timeout=60)
        assert json.loads(out.stdout)["agents"]["a1"]["profile"] == "raspberry-pi-4"
        shown = subprocess.run([sys.executable, "-m", "ztfl.cli", "status", "--url", f"http://127.0.0.1:{port}",
                                "--once"], capture_output=True, text=True, timeout=60)
        assert "raspberry-pi-4" in shown.stdout and "agents" in shown.stdout
    finally:
        pub.loop_stop()
        gw.stop()
