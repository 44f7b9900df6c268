"""A small federation for fault injection: the real gateway process (`ztfl gateway`), a real
mosquitto, and simulated agents (agent.sim: the real client protocol, no training) whose updates
are known, so every committed model can be checked exactly against the plaintext FedAvg of the
agents the registry says were aggregated.

Faults are placed at known points without timing guesses: agents hold the frames of a chosen
stage unanswered (the gateway then waits in that stage, deadlines are long) until the test
creates a resume file, or an agent dies when a chosen stage's frame reaches it.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from ztfl.agent.sim import agent_name, sim_update, write_sim_trust
from ztfl.gateway.registry import Registry

def _copy(stream, path: Path) -> None:
    with open(path, "ab") as out:
        for line in stream:
            out.write(line)
            out.flush()


STAGES = ("advertise", "share", "masked", "consistency", "unmask")


@dataclass
class Federation:
    work: Path
    broker_url: str
    datasets: Path
    procs: list = field(default_factory=list)
    gateway: subprocess.Popen | None = None

    @property
    def state(self) -> Path:
        return self.work / "gateway"

    def configure(self, agents: int, rounds: int = 1, **overrides) -> None:
        cfg = {"federation": "bench", "gateway": "fog1", "broker": {"url": self.broker_url},
               "state_dir": str(self.state), "model_size": "small", "rounds": rounds, "min_agents": agents,
               "min_cohort": 3, "heartbeat_s": 1.0, "round_interval_s": 0.2, "retry_delay_s": 0.2,
               "max_attempts": 8,
               "data": {"path": str(self.small_dataset()), "fmt": "nsl-kdd"},
               # Long: stages close when every live participant answered; deadlines never decide here.
               "deadlines_s": {"attest": 60, "advertise": 60, "share": 60, "masked": 60, "consistency": 60,
                               "unmask": 60},
               # The gateway's certificate from the simulated fleet's root CA (seed 0).
               "trust": write_sim_trust(self.work / "trust", 0, "bench", "fog1")}
        cfg.update(overrides)
        (self.work / "gateway.yaml").write_text(yaml.safe_dump(cfg))

    def small_dataset(self) -> Path:
        """The first rows of NSL-KDD's 20 % training file: the gateway fits its pipeline and
        validation split on it at every start, and faults restart it often."""
        path = self.work / "nsl_kdd_small.txt"
        if not path.exists():
            with open(self.datasets / "nsl_kdd" / "KDDTrain+_20Percent.txt", encoding="utf-8") as f:
                path.write_text("".join(line for _, line in zip(range(2000), f)))
        return path

    def start_gateway(self, max_file_bytes: int | None = None, crash_at: str | None = None,
                      prefix: tuple[str, ...] = ()) -> subprocess.Popen:
        """`crash_at`: a point of the commit path where the gateway SIGKILLs itself
        (tests/faults/crash_gateway.py); `prefix`: a command the gateway is exec'd by (a mount
        namespace), so that the process started is the gateway itself."""
        (self.state / "http.port").unlink(missing_ok=True)

        def limits():
            if max_file_bytes is not None:     # a full disk, for this process only
                resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

        entry = ([str(Path(__file__).with_name("crash_gateway.py")), crash_at] if crash_at
                 else ["-m", "ztfl.cli", "gateway"])
        self.gateway = subprocess.Popen(
            [*prefix, sys.executable, *entry, "--config", str(self.work / "gateway.yaml")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=limits,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
        # The log is written by this process, through a pipe: a disk-full fault on the gateway
        # must not stop its error from being recorded.
        threading.Thread(target=_copy, args=(self.gateway.stdout, self.work / "gateway.log"), daemon=True).start()
        self.procs.append(self.gateway)
        return self.gateway

    def start_fleet(self, agents: int, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ztfl.agent.sim", "--broker", self.broker_url, "--agents", str(agents),
             "--dim", "1", "--heartbeat-s", "1", "--serve", "--timeout", "300", *args],
            stdout=subprocess.PIPE, stderr=open(self.work / "fleet.log", "ab"), text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.procs.append(proc)
        return proc

    def resume_file(self) -> Path:
        return self.work / "resume"

    def status(self) -> dict | None:
        port_file = self.state / "http.port"
        if not port_file.exists() or not port_file.read_text().strip():
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port_file.read_text().strip()}/status", timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def wait_for(self, predicate, what: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.gateway is not None and self.gateway.poll() is not None:
                raise AssertionError(f"gateway exited with {self.gateway.returncode} waiting for {what}; "
                                     f"log:\n{self.log_tail()}")
            last = self.status()
            if last and predicate(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"{what}: not reached in {timeout} s; last status {last}")

    def wait_stage(self, stage: str, attempt: int | None = None, timeout: float = 120) -> dict:
        return self.wait_for(lambda s: any(c["stage"] == stage for c in s["cohorts"].values())
                             and (attempt is None or s["attempt"] == attempt), f"stage {stage}", timeout)

    def kill_gateway(self) -> None:
        self.gateway.kill()
        self.gateway.wait()

    def log_tail(self, n: int = 3000) -> str:
        path = self.work / "gateway.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def check_versions(self, variant: str = "cnn-lstm", seed: int = 0) -> list:
        """No version lost or corrupted, and each commit applied exactly the FedAvg of the agents
        the registry records as aggregated in that round's committed attempt."""
        reg = Registry(self.state)
        try:
            versions = reg.model_versions(variant)
            assert [v.version for v in versions] == list(range(len(versions)))
            committed = {r["round"]: r for r in reg.rounds() if r["status"] == "committed"}
            for prev, cur in zip(versions, versions[1:]):
                old, new = reg.load_model(prev), reg.load_model(cur)   # checks each file's sha256
                aggregated = committed[cur.round]["cohorts"][f"{variant}-32"]["aggregated"]
                mean = np.mean([sim_update(seed, int(a.split("-")[1]), old.size).astype(np.float64)
                                for a in aggregated], axis=0)
                np.testing.assert_allclose(new.astype(np.float64) - old, mean, atol=1e-4)
            return reg.rounds()
        finally:
            reg.close()


@pytest.fixture
def federation(mosquitto, datasets_dir, tmp_path):
    fed = Federation(tmp_path, mosquitto.url, datasets_dir)
    fed.state.mkdir(parents=True, exist_ok=True)
    yield fed
    fed.stop()


__all__ = ["Federation", "STAGES", "agent_name"]
