"""Hardware in the loop: a board reached over ssh (`--remote-agent ssh://pi@raspberrypi.local`)
runs the protocol client against this machine's broker through an ssh reverse tunnel, next to
local simulated agents, and the gateway's aggregate is exact. The board needs ztfl installed in
~/ztfl/.venv (docs/hil.md)."""
from __future__ import annotations

import subprocess
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.hil


def test_remote_board_takes_part_in_an_exact_round(remote_agent, mosquitto):
    url = urlparse(remote_agent)
    if url.scheme != "ssh" or not url.hostname:
        pytest.fail(f"--remote-agent must be ssh://user@host, got {remote_agent!r}")
    target = f"{url.username + '@' if url.username else ''}{url.hostname}"
    port_args = ["-p", str(url.port)] if url.port else []
    remote_cmd = ("~/ztfl/.venv/bin/python -m ztfl.agent.sim --broker mqtt://127.0.0.1:{port} --agents 1 "
                  "--first-id 1000 --dim 2000 --timeout 120").format(port=mosquitto.port)
    ssh = subprocess.Popen(["ssh", *port_args, "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                            "-R", f"{mosquitto.port}:127.0.0.1:{mosquitto.port}", target,
                            f"cd ~/ztfl && {remote_cmd}"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        from ztfl.bench.gateway import run_round_through_broker
        report = run_round_through_broker(mosquitto.url, local_agents=5, dim=2000, dropout=0.0,
                                          external_agents=1, timeout=120)
        assert report["exact"] and report["survivors"] == 6
    finally:
        ssh.terminate()
        ssh.wait(timeout=30)
