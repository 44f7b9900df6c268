"""The local services the demo and tests rely on really start and answer."""
import socket
import subprocess

from ztfl.services import start_mosquitto, start_swtpm


def test_mosquitto_accepts_mqtt_connections(tmp_path):
    with start_mosquitto(workdir=tmp_path) as broker:
        out = subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv5",
             "-t", "ztfl/test", "-m", "hello"], capture_output=True, timeout=10)
        assert out.returncode == 0, out.stderr


def test_swtpm_answers_tpm2_tools(tmp_path):
    with start_swtpm(tmp_path / "state") as tpm:
        out = subprocess.run(["tpm2_getrandom", "--hex", "16"], capture_output=True, timeout=10,
                             env={"TPM2TOOLS_TCTI": tpm.tcti, "PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr
        assert len(bytes.fromhex(out.stdout.decode())) == 16


def test_stopped_broker_releases_its_port(tmp_path):
    broker = start_mosquitto(workdir=tmp_path)
    port = broker.port
    broker.stop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
