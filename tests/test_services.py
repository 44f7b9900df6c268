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


def test_mosquitto_takes_no_packet_above_its_limit(tmp_path):
    from ztfl.fednet.transport import LARGEST_MESSAGE_BYTES, publish_packet_bytes
    with start_mosquitto(workdir=tmp_path / "default") as broker:
        assert f"max_packet_size {publish_packet_bytes(LARGEST_MESSAGE_BYTES)}\n" in broker.config_path.read_text()
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"x" * 3000)
    big.write_bytes(b"x" * 5000)
    with start_mosquitto(workdir=tmp_path / "limited", max_packet_bytes=4096) as broker:
        def publish(path):
            # MQTT 3.1.1: a client that cannot have read the limit from the CONNACK, so sends anyway.
            return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv311",
                                   "-q", "1", "-t", "ztfl/test", "-f", str(path)], capture_output=True, timeout=10)
        assert publish(small).returncode == 0
        assert publish(big).returncode != 0          # the broker drops the connection of its sender
