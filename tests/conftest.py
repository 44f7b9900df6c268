"""Shared fixtures: real local services (mosquitto, swtpm) and paths to ../shared data."""
from __future__ import annotations

from pathlib import Path

import pytest

from ztfl.services import start_mosquitto, start_swtpm

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"


@pytest.fixture
def datasets_dir() -> Path:
    if not DATASETS.is_dir():
        pytest.fail(f"datasets not found at {DATASETS}: the tests read ../shared/datasets")
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
