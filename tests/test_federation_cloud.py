"""Edge-fog-cloud over two brokers joined by a mosquitto bridge: agents and the gateway on the fog
broker, `ztfl cloud` on the cloud broker. The gateway reports its cohort aggregate upward, the cloud
versions the combined model and sends it down, and the gateway adopts exactly that model."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import yaml

from ztfl.gateway.registry import Registry
from ztfl.demo import launch, wait_port
from ztfl.services import start_mosquitto


def test_gateway_reports_up_through_a_bridge_and_adopts_the_cloud_model(datasets_dir, tmp_path):
    cloud_broker = start_mosquitto(workdir=tmp_path / "cloud-broker")
    bridge = "\n".join([
        "connection cloud", f"address 127.0.0.1:{cloud_broker.port}", "cleansession true",
        "topic ztfl/demo/cloud/gateways/# out 1", "topic ztfl/demo/cloud/broadcast/# in 1"])
    fog_broker = start_mosquitto(workdir=tmp_path / "fog-broker", extra_config=bridge)
    data = str(datasets_dir / "nsl_kdd" / "KDDTrain+_20Percent.txt")
    cloud_cfg = {"federation": "demo", "broker": {"url": cloud_broker.url}, "state_dir": str(tmp_path / "cloud"),
                 "data": {"path": data, "fmt": "nsl-kdd", "count": 5, "alpha": 0.5, "seed": 7},
                 "gateways": ["fog1"], "rounds": 1, "wait_s": 60}
    (tmp_path / "cloud.yaml").write_text(yaml.safe_dump(cloud_cfg))
    cloud = subprocess.Popen([sys.executable, "-m", "ztfl.cli", "cloud", "--config", str(tmp_path / "cloud.yaml")],
                             stdout=open(tmp_path / "cloud.log", "wb"), stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    # Five agents: the security floor of every agent (SecurityFloor.min_group).
    args = argparse.Namespace(agents="raspberry-pi-4,raspberry-pi-4,raspberry-pi-4,jetson-orin-nano,jetson-orin-nano",
                              rounds=1, alpha=0.5,
                              data=data, model_size="small", max_batches=3,
                              record_updates_dir=str(tmp_path / "updates"),
                              gateway_overrides={"parent": {"wait_s": 90}})
    gateway, agents, gw_state = launch(args, tmp_path, fog_broker.url)
    try:
        wait_port(gw_state, gateway)
        assert gateway.wait(timeout=200) == 0
        assert cloud.wait(timeout=60) == 0
    finally:
        for p in agents + [gateway, cloud]:
            if p.poll() is None:
                p.terminate()
        for p in agents + [gateway, cloud]:
            p.wait(timeout=15)
        fog_broker.stop()
        cloud_broker.stop()
    fog, top = Registry(gw_state), Registry(tmp_path / "cloud")
    fog_v1, cloud_v1 = fog.model_versions("cnn-lstm")[1], top.model_versions("cnn-lstm")[1]
    assert fog_v1.sha256 == cloud_v1.sha256            # the gateway adopted the cloud's model bit for bit
    assert fog.rounds()[-1]["cloud"] is True
    assert cloud_v1.metrics["gateways"] == ["fog1"]
    files = sorted((tmp_path / "updates").glob("*.npy"))
    weights = [int(f.with_suffix(".weight").read_text()) for f in files]
    fedavg = sum(w * np.load(f).astype(np.float64) for w, f in zip(weights, files)) / sum(weights)
    applied = top.load_model(cloud_v1).astype(np.float64) - top.load_model(top.model_versions("cnn-lstm")[0])
    np.testing.assert_allclose(applied, fedavg, atol=1e-5)
