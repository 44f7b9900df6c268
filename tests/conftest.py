"""Shared fixtures: real local services (mosquitto, swtpm) and paths to ../shared data."""
from __future__ import annotations

from pathlib import Path

import pytest

from ztfl.models.datasets import datasets_dir as default_datasets_dir
from ztfl.services import start_mosquitto, start_swtpm

REPO = Path(__file__).resolve().parents[1]
DATASETS = default_datasets_dir()   # $ZTFL_DATASETS, else ../shared/datasets: as ztfl itself finds them


@pytest.fixture
def datasets_dir() -> Path:
    if not DATASETS.is_dir():
        pytest.fail(f"datasets not found at {DATASETS}: the tests read ../shared/datasets (or $ZTFL_DATASETS)")
    return DATASETS


@pytest.fixture
def mosquitto(tmp_path):
    """A private mosquitto broker on a free loopback port, stopped after the test."""
    broker = start_mosquitto(workdir=tmp_path / "mosquitto")
    yield broker
    broker.stop()


@pytest.fixture
def swtpm(tmp_path):
    """A fresh software TPM (its own state directory) on a free loopback port."""
    tpm = start_swtpm(tmp_path / "tpmstate")
    yield tpm
    tpm.stop()


# --- hardware in the loop (docs/hil.md): the same end-to-end flows on attached boards -----------
def pytest_addoption(parser):
    group = parser.getgroup("ztfl hardware-in-the-loop")
    group.addoption("--tpm-device", default=None, help="a TPM 2.0 character device, e.g. /dev/tpmrm0")
    group.addoption("--esp32-port", default=None, help="serial port of an ESP32 running MicroPython")
    group.addoption("--remote-agent", default=None, help="ssh://user@host of a board with ztfl installed")


def _hardware(request, option: str, what: str) -> str:
    value = request.config.getoption(option)
    if not value:
        pytest.skip(f"no {what} attached: pass --{option.replace('_', '-')} to run this test on hardware")
    return value


@pytest.fixture
def tpm_device(request) -> str:
    return _hardware(request, "tpm_device", "TPM device")


@pytest.fixture
def esp32_port(request) -> str:
    return _hardware(request, "esp32_port", "ESP32 serial port")


@pytest.fixture
def remote_agent(request) -> str:
    return _hardware(request, "remote_agent", "remote agent board")
