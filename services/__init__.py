"""Start the real local services ztfl talks to: a mosquitto broker and a swtpm TPM.

Used by `ztfl demo` and by the tests. Each service binds to a free loopback port,
is owned by the returned handle, and is stopped by `handle.stop()` (or on context exit).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ztfl.fednet.transport import LARGEST_MESSAGE_BYTES, publish_packet_bytes


class ServiceError(RuntimeError):
    """A local service could not be started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    """A port P such that P and P+1 are both free (swtpm needs server + control)."""
    for _ in range(100):
        p = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise ServiceError("no free pair of loopback ports")


def wait_for_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise ServiceError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if not path:
        raise ServiceError(f"`{name}` not found: install it with `apt-get install {package}` "
                           "(make test / make demo do this for you)")
    return path


@dataclass
class Service:
    proc: subprocess.Popen
    port: int
    workdir: Path
    _owns_workdir: bool = False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@dataclass
class Mosquitto(Service):
    config_path: Path = field(default=None)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def restart(self, timeout: float = 10.0) -> None:
        """Restart on the same port with the same config (broker-restart fault tests)."""
        self.kill()
        self.proc = _spawn_mosquitto(self.config_path)
        wait_for_port(self.port, timeout, self.proc)


def _spawn_mosquitto(config_path: Path) -> subprocess.Popen:
    binary = require_binary("mosquitto", "mosquitto")
    return subprocess.Popen([binary, "-c", str(config_path)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_mosquitto(port: int | None = None, workdir: str | Path | None = None,
                    extra_config: str = "", allow_anonymous: bool = True,
                    timeout: float = 10.0, max_packet_bytes: int | None = None) -> Mosquitto:
    """A private mosquitto on a loopback port. `extra_config` is appended verbatim
    (listener options for TLS, ACLs...); without it the broker is plain MQTT on loopback.

    `max_packet_bytes`: the largest MQTT packet the broker takes or sends (a larger one costs
    its sender the connection, and a subscriber that announced a smaller limit does not get it);
    default: the packet of the largest legitimate message (fednet.transport)."""
    owns = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="ztfl-mosquitto-"))
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = workdir / "mosquitto.conf"
    lines = [
        # Started as root, mosquitto drops to user `mosquitto` and could not read our files.
        "user root" if os.geteuid() == 0 else "",
        "per_listener_settings false",
        f"listener {port} 127.0.0.1",
        f"allow_anonymous {'true' if allow_anonymous else 'false'}",
        "persistence false",
        f"max_packet_size {max_packet_bytes or publish_packet_bytes(LARGEST_MESSAGE_BYTES)}",
        "log_dest none",
        extra_config,
    ]
    conf.write_text("\n".join(line for line in lines if line) + "\n")
    proc = _spawn_mosquitto(conf)
    return _ready(Mosquitto(proc=proc, port=port, workdir=workdir, _owns_workdir=owns, config_path=conf), timeout)


@dataclass
class SwTPM(Service):
    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"


def start_swtpm(state_dir: str | Path | None = None, timeout: float = 10.0) -> SwTPM:
    """A software TPM 2.0 (swtpm) on loopback, already started up (startup-clear).
    Each call with a new state_dir is an independent TPM."""
    binary = require_binary("swtpm", "swtpm")
    owns = state_dir is None
    state_dir = Path(state_dir or tempfile.mkdtemp(prefix="ztfl-swtpm-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port_pair()
    proc = subprocess.Popen(
        [binary, "socket", "--tpm2",
         "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
         "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
         "--tpmstate", f"dir={state_dir}",
         "--flags", "not-need-init,startup-clear"],
        # swtpm keeps inherited pipes open: send its output nowhere.
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return _ready(SwTPM(proc=proc, port=port, workdir=state_dir, _owns_workdir=owns), timeout)


def _ready(svc, timeout: float):
    """The service once it listens; stopped (nothing left running) if it never does."""
    try:
        wait_for_port(svc.port, timeout, svc.proc)
    except ServiceError:
        svc.stop()
        raise
    return svc
