"""`ztfl firmware build` and `ztfl flash esp32`.

No board is attached to this machine: the bundle's contents are checked, the bundle itself is
run in the MicroPython unix port (its .mpy modules pass conformance vectors and it connects to
a TLS-only mosquitto with the provisioned certificate), and the flash commands are checked as
built, never run."""
from __future__ import annotations

import hashlib
import json
import shlex
import ssl
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from ztfl.attestation.provision import Device, Fleet, listener_options, provision
from ztfl.cli import main as ztfl_main
from ztfl.firmware_tools.cli import BuildError, build_bundle
from ztfl.firmware_tools.flash import FlashError, flash_commands
from ztfl.firmware_tools.micropython_host import FIRMWARE_DIR, run_json
from ztfl.services import free_port, start_mosquitto

CLASSES = ["normal", "dos", "probe", "r2l", "u2r"]


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("provision")
    provision(Fleet("plant", "fog1", [Device("esp-01", "esp32"), Device("pi-01", "raspberry-pi-4")],
                    broker_hosts=["localhost", "127.0.0.1"]), out)
    return out


@pytest.fixture(scope="module")
def bundle(fleet_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "esp-01"
    assert ztfl_main(["firmware", "build", "--device", str(fleet_dir / "devices" / "esp-01"), "--out", str(out),
                      "--classes", ",".join(CLASSES), "--wifi-ssid", "plant-iot", "--wifi-password", "pw",
                      "--march", "xtensawin"]) == 0
    return out


def test_bundle_holds_compiled_agent_config_key_and_manifest(bundle, fleet_dir):
    lib = bundle / "lib" / "ztfw"
    sources = {p.stem for p in (FIRMWARE_DIR / "ztfw").glob("*.py")}
    viper = {"wordops_viper", "sha512_viper"}       # compiled to native code by the board itself
    assert {p.stem for p in lib.glob("*.mpy")} == sources - viper
    for mpy in lib.glob("*.mpy"):
        head = mpy.read_bytes()[:2]
        assert head == b"M\x06", mpy.name            # .mpy format 6 (MicroPython >= 1.23)
    for name in viper:
        assert (lib / f"{name}.py").read_text() == (FIRMWARE_DIR / "ztfw" / f"{name}.py").read_text()
    assert (bundle / "main.py").read_text() == (FIRMWARE_DIR / "main.py").read_text()
    assert not (bundle / "host").exists() and not list(bundle.rglob("*stdio*"))
    cfg = json.loads((bundle / "config.json").read_text())
    device = fleet_dir / "devices" / "esp-01"
    assert bytes.fromhex(cfg["device_key"]) == (device / "device-key.bin").read_bytes()
    assert cfg["classes"] == CLASSES and cfg["wifi"] == {"ssid": "plant-iot", "password": "pw"}
    assert cfg["broker"]["tls"] is True and (bundle / "config.json").stat().st_mode & 0o077 == 0
    for name in ("ca.pem", "cert.pem", "key.pem"):
        assert (bundle / name).read_bytes() == (device / name).read_bytes()
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == files
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((bundle / name).read_bytes()).hexdigest()


def test_bundle_modules_pass_conformance_vectors_in_micropython(bundle):
    vectors = {n: json.loads((Path(__file__).parent / "vectors" / n).read_text())
               for n in ("kdf.json", "wire.json", "masking.json")}
    script = (FIRMWARE_DIR / "host" / "conformance.py").read_text()
    # Only the bundle's lib/ is on the path: the compiled .mpy files are what runs.
    out = run_json("import sys\nassert not [p for p in sys.path if 'firmware' in p]\n" + script, vectors,
                   path=bundle / "lib", timeout=300)
    assert out["failures"] == [] and set(out["checks"]) == set(vectors)


_TLS_CLIENT = r"""
import sys, json
from ztfw.agent import tls_context
from ztfw.mqtt import MQTTClient
d = json.loads(sys.stdin.read())
cfg = json.loads(open(d["bundle"] + "/config.json").read())
c = MQTTClient("agent-esp-01", "localhost", d["port"], ssl_context=tls_context(cfg, d["bundle"]))
got = []
c.set_callback(lambda t, p: got.append([t.decode(), bytes(p).decode()]))
c.connect()
c.subscribe("ztfl/plant/fog1/broadcast/to/esp-01/+", 1)
c.publish("ztfl/plant/fog1/agents/esp-01/hello", b"hello from the bundle", qos=1)
while not got:
    c.check_msg(5000)
c.disconnect()
print(json.dumps(got))
"""


def test_bundle_connects_to_a_tls_only_broker_with_its_provisioned_certificate(bundle, fleet_dir, tmp_path):
    port = free_port()
    extra = f"listener {port} 127.0.0.1\n" + listener_options(fleet_dir)
    with start_mosquitto(workdir=tmp_path / "broker", extra_config=extra):
        received, ready = [], threading.Event()
        gw = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="gateway-fog1")
        gw.tls_set(ca_certs=str(fleet_dir / "ca" / "ca.pem"), certfile=str(fleet_dir / "gateway" / "fog1.pem"),
                   keyfile=str(fleet_dir / "gateway" / "fog1.key"), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        gw.on_message = lambda c, u, m: (received.append((m.topic, m.payload)), ready.set())
        gw.connect("localhost", port)
        gw.subscribe("ztfl/plant/fog1/agents/#", qos=1)
        gw.loop_start()
        try:
            import time
            # The firmware subscribes first, then the gateway publishes to it (retained, so order is moot).
            gw.publish("ztfl/plant/fog1/broadcast/to/esp-01/round", b"your seat", qos=1, retain=True).wait_for_publish(5)
            out = run_json(_TLS_CLIENT, {"bundle": str(bundle), "port": port}, path=bundle / "lib", timeout=60)
            assert ready.wait(10)
            time.sleep(0.2)
        finally:
            gw.loop_stop()
            gw.disconnect()
    assert out == [["ztfl/plant/fog1/broadcast/to/esp-01/round", "your seat"]]
    assert received == [("ztfl/plant/fog1/agents/esp-01/hello", b"hello from the bundle")]


def test_build_refuses_devices_without_firmware_config_or_class_names(fleet_dir, tmp_path, capsys):
    with pytest.raises(BuildError, match="firmware.json"):
        build_bundle(fleet_dir / "devices" / "pi-01", tmp_path / "b1", classes=CLASSES)
    with pytest.raises(BuildError, match="class names"):
        build_bundle(fleet_dir / "devices" / "esp-01", tmp_path / "b2")
    assert ztfl_main(["firmware", "build", "--device", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b3"),
                      "--classes", "a,b"]) == 2
    assert "ztfl provision" in capsys.readouterr().err


def test_flash_commands_write_image_then_copy_bundle_and_reset(bundle, tmp_path):
    port = tmp_path / "ttyUSB0"      # stands in for the device node: no board is attached here
    port.touch()
    image = tmp_path / "ESP32_GENERIC.bin"
    image.write_bytes(b"\xe9" + bytes(15))
    cmds = [shlex.join(c) for c in flash_commands(str(port), bundle, "esp32", image)]
    assert len(cmds) == 4
    assert cmds[0].endswith(f"-m esptool --chip esp32 --port {port} --baud 460800 erase-flash")
    assert cmds[1].endswith(f"write-flash -z 0x1000 {image}")
    assert f"-m mpremote connect {port} fs cp -r {bundle / 'lib'} :" in cmds[2]
    for name in ("main.py", "config.json", "ca.pem", "cert.pem", "key.pem"):
        assert f"+ fs cp {bundle / name} :{name}" in cmds[2]
    assert "manifest.json" not in cmds[2]
    assert cmds[3].endswith(f"mpremote connect {port} reset")
    s3 = flash_commands(str(port), bundle, "esp32s3", image)
    assert s3[1][-3:] == ["-z", "0x0", str(image)]
    assert len(flash_commands(str(port), bundle, "esp32")) == 2      # no image: copy and reset only


def test_flash_errors_name_the_missing_port_image_or_bundle(bundle, tmp_path, capsys):
    port = tmp_path / "ttyACM0"
    with pytest.raises(FlashError, match="does not exist"):
        flash_commands(str(port), bundle)
    port.touch()
    with pytest.raises(FlashError, match="micropython.org"):
        flash_commands(str(port), bundle, image=tmp_path / "missing.bin")
    with pytest.raises(FlashError, match="ztfl firmware build"):
        flash_commands(str(port), tmp_path)
    assert ztfl_main(["flash", "esp32", "--port", "/dev/ttyUSB-none", "--bundle", str(bundle)]) == 2
    assert "/dev/ttyUSB-none does not exist" in capsys.readouterr().err
    assert ztfl_main(["flash", "esp32", "--port", str(port), "--bundle", str(bundle), "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["commands"][-1].endswith("reset")
