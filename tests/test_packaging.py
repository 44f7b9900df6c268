"""What `pip install .` puts on a machine: one import name, `ztfl`, and nothing generic beside it.

The wheel is built from this checkout and unpacked into a scratch directory that a fresh
interpreter imports from (the dependencies come from the test venv), so a top-level `models`,
`protocol` or `agent` package would show up here exactly as on a gateway running other software.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GENERIC = ["protocol", "models", "agent", "gateway", "privacy", "robustness", "attestation", "hw_profiles",
           "fednet", "bench", "services", "config"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(REPO)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("ztfl-*.whl")
    return built


def test_the_wheel_holds_only_the_ztfl_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    outside = [n for n in names if not n.startswith(("ztfl/", "ztfl-"))]
    assert not outside, outside[:10]
    for pkg in ("protocol", "fednet", "agent", "gateway", "models/export", "bench", "firmware_tools"):
        assert f"ztfl/{pkg}/__init__.py" in names
    assert any(n.startswith("ztfl/hw_profiles/") and n.endswith(".yaml") for n in names)


def test_installed_ztfl_imports_and_generic_names_do_not(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(site)!r})\n"
        "import ztfl.protocol, ztfl.agent, ztfl.gateway, ztfl.fednet, ztfl.cli\n"
        f"assert ztfl.protocol.__file__.startswith({str(site)!r}), ztfl.protocol.__file__\n"
        "bad = []\n"
        f"for name in {GENERIC!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "        bad.append(name)\n"
        "    except ImportError:\n"
        "        pass\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importable generic names: {out.stdout.strip()}"


def test_ztfl_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "ztfl.cli", "--help"], capture_output=True, text=True, timeout=60)
    for command in ("demo", "agent", "gateway", "cloud", "status", "bench", "train", "evaluate", "export",
                    "experiment", "attest", "provision", "firmware", "flash"):
        assert f"    {command}" in out.stdout, command
