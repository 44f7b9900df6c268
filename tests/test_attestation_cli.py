"""`ztfl attest quote` writes files an independent verifier (tpm2-tools' tpm2_checkquote)
accepts; `ztfl attest verify`, `ztfl attest measure` and `ztfl provision` as commands."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from nacl.signing import SigningKey

from ztfl.attestation.measure import expected_pcr, measure_agent
from ztfl.attestation.policy import AttestationPolicy
from ztfl.attestation.provision import load_devices
from ztfl.attestation.registry import IdentityRegistry
from ztfl.protocol import certs

REPO = Path(__file__).resolve().parents[1]


def ztfl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ztfl.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def checkquote(d: Path, qualification: str, selection: str, pem: str = "ak.pem") -> subprocess.CompletedProcess:
    binary = shutil.which("tpm2_checkquote")
    if binary is None:
        pytest.fail("tpm2_checkquote not installed (apt-get install tpm2-tools; make test installs it)")
    return subprocess.run([binary, "-u", str(d / pem), "-m", str(d / "quote.msg"), "-s", str(d / "quote.sig"),
                           "-f", str(d / "quote.pcrs"), "-l", selection, "-g", "sha256", "-q", qualification],
                          capture_output=True, text=True, timeout=30)


def test_quote_files_pass_tpm2_checkquote_and_fail_when_altered(swtpm, tmp_path):
    nonce = os.urandom(32).hex()
    out = tmp_path / "quote"
    done = ztfl("attest", "quote", "--tcti", swtpm.tcti, "--nonce", nonce, "--out", str(out),
                "--state-dir", str(tmp_path / "state"), "--pcrs", "sha256:0,16,23", "--round", "7",
                "--public-keys", "ab" * 64)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    qualification = (out / "qualification.hex").read_text().strip()
    assert report["qualification"] == qualification
    assert {p.name for p in out.iterdir()} >= {"quote.msg", "quote.sig", "quote.pcrs", "ak.pem"}
    assert len((out / "quote.pcrs").read_bytes()) == 3 * 32

    good = checkquote(out, qualification, "sha256:0,16,23")
    assert good.returncode == 0, good.stderr
    # Another nonce, a flipped signature bit, a changed PCR value: tpm2_checkquote refuses each.
    assert checkquote(out, "00" * 32, "sha256:0,16,23").returncode != 0
    sig = bytearray((out / "quote.sig").read_bytes())
    sig[10] ^= 1
    (out / "quote.sig").write_bytes(bytes(sig))
    assert checkquote(out, qualification, "sha256:0,16,23").returncode != 0
    sig[10] ^= 1
    (out / "quote.sig").write_bytes(bytes(sig))
    pcrs = bytearray((out / "quote.pcrs").read_bytes())
    pcrs[-1] ^= 1
    (out / "quote.pcrs").write_bytes(bytes(pcrs))
    assert checkquote(out, qualification, "sha256:0,16,23").returncode != 0
    pcrs[-1] ^= 1
    (out / "quote.pcrs").write_bytes(bytes(pcrs))

    ok = ztfl("attest", "verify", "--dir", str(out), "--nonce", nonce, "--round", "7", "--public-keys", "ab" * 64,
              "--expect", "23=" + "00" * 32)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"], ok.stdout
    wrong_round = ztfl("attest", "verify", "--dir", str(out), "--nonce", nonce, "--round", "8",
                       "--public-keys", "ab" * 64)
    assert wrong_round.returncode == 1 and "extraData" in json.loads(wrong_round.stdout)["detail"]


def test_second_quote_reuses_the_persistent_ak(swtpm, tmp_path):
    pems = []
    for i in range(2):
        done = ztfl("attest", "quote", "--tcti", swtpm.tcti, "--nonce", os.urandom(16).hex(),
                    "--out", str(tmp_path / f"q{i}"), "--state-dir", str(tmp_path / "state"))
        assert done.returncode == 0, done.stderr
        pems.append((tmp_path / f"q{i}" / "ak.pem").read_bytes())
    assert pems[0] == pems[1]


def test_measure_prints_the_value_the_agent_extends(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights v1")
    done = ztfl("attest", "measure", "--model", str(model))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    measurement = measure_agent(REPO, [model])
    assert report == {"measurement": measurement.hex(), "hash": "sha256",
                      "expected_pcr": expected_pcr(measurement).hex()}
    model.write_bytes(b"weights v2")
    assert json.loads(ztfl("attest", "measure", "--model", str(model)).stdout)["measurement"] != measurement.hex()


def test_provision_writes_configs_the_gateway_can_load(tmp_path):
    done = ztfl("provision", "--out", str(tmp_path / "fleet"), "--gateway", "fog1",
                "--device", "pi-01:raspberry-pi-4", "--device", "esp-01:esp32")
    assert done.returncode == 0, done.stdout
    fleet = tmp_path / "fleet"
    policy = AttestationPolicy.from_mapping(yaml.safe_load((fleet / "gateway" / "attestation-policy.yaml").read_text()))
    assert policy.software_rooted_allowed("esp32") and not policy.software_rooted_allowed("raspberry-pi-4")
    devices = {d["agent_id"]: d for d in load_devices(fleet / "gateway" / "devices.yaml")}
    assert devices["pi-01"]["root"] == "tpm" and devices["esp-01"]["root"] == "software"
    firmware = json.loads((fleet / "devices" / "esp-01" / "firmware.json").read_text())
    registry = IdentityRegistry()
    registry.add_software_device("esp-01", "esp32", bytes.fromhex(devices["esp-01"]["device_public_key"]))
    assert firmware["device_public_key"] == devices["esp-01"]["device_public_key"]
    agent = yaml.safe_load((fleet / "devices" / "pi-01" / "agent.yaml").read_text())
    assert agent["agent_id"] == "pi-01" and agent["broker"]["url"].startswith("mqtts://")
    for private in ("broker/broker.key", "gateway/fog1.key", "devices/pi-01/key.pem",
                    "devices/esp-01/device-key.bin", "devices/esp-01/firmware.json", "gateway/identity.key",
                    "gateway/intermediate.key", "devices/pi-01/identity.key", "cloud/identity.key"):
        assert (fleet / private).stat().st_mode & 0o077 == 0, private
    # The CA keys are beside the tree, never in it, and the command says where they must live.
    ca = tmp_path / "fleet-ca"
    assert "fleet-ca" in done.stderr and "offline" in done.stderr
    for private in ("root.key", "tls-ca.key", "issued.json"):
        assert (ca / private).stat().st_mode & 0o077 == 0, private
    assert not [p for p in fleet.rglob("*") if p.name in ("root.key", "tls-ca.key", "ca.key")]
    # Every bundle holds the trust anchor and a certificate of its own key, for its id and role.
    anchor = (ca / "root.pub").read_text().strip()
    store = certs.TrustStore(bytes.fromhex(anchor), "plant")
    now = int(time.time())
    for where, role, device_id in (("gateway", "gateway", "fog1"), ("devices/pi-01", "agent", "pi-01"),
                                   ("devices/esp-01", "agent", "esp-01"), ("cloud", "cloud", "cloud")):
        assert (fleet / where / "root.pub").read_text().strip() == anchor
        cert = store.check(certs.Certificate.decode((fleet / where / "identity.crt").read_bytes()), role, device_id,
                           now)
        key = (fleet / where / ("device-key.bin" if "esp" in where else "identity.key")).read_bytes()
        assert cert.public_key == bytes(SigningKey(key).verify_key)
        assert 364 * 86400 <= cert.not_after - now <= 366 * 86400
    assert firmware["device_public_key"] == store.check(certs.Certificate.decode(
        base64.b64decode(firmware["certificate"])), "agent", "esp-01", now).public_key.hex()
    assert agent["trust"]["certificate"] == str(fleet / "devices" / "pi-01" / "identity.crt")
    gateway = yaml.safe_load((fleet / "gateway" / "gateway.yaml").read_text())
    assert gateway["trust"]["intermediate_key"] == str(fleet / "gateway" / "intermediate.key")
    inside = ztfl("provision", "--out", str(tmp_path / "nested"), "--ca-dir", str(tmp_path / "nested" / "ca"),
                  "--device", "pi-01:raspberry-pi-4")
    assert inside.returncode == 2 and "outside --out" in inside.stdout
    bad = ztfl("provision", "--out", str(tmp_path / "bad"), "--device", "pi/01:raspberry-pi-4")
    assert bad.returncode == 2 and "device id" in bad.stdout
    unknown = ztfl("provision", "--out", str(tmp_path / "bad"), "--device", "pi-01:raspberry-pi-9")
    assert unknown.returncode == 2 and "no profile 'raspberry-pi-9'" in unknown.stdout


def test_provision_revoke_lists_every_certificate_of_the_device(tmp_path):
    fleet = tmp_path / "fleet"
    assert ztfl("provision", "--out", str(fleet), "--device", "pi-01:raspberry-pi-4",
                "--device", "pi-02:raspberry-pi-4").returncode == 0
    before = certs.SignedRevocations.decode((fleet / "gateway" / "revocations.bin").read_bytes())
    done = ztfl("provision", "revoke", "--out", str(fleet), "--device", "pi-02")
    assert done.returncode == 0, done.stdout
    signed = certs.SignedRevocations.decode((fleet / "gateway" / "revocations.bin").read_bytes())
    pi02 = certs.Certificate.decode((fleet / "devices" / "pi-02" / "identity.crt").read_bytes())
    assert signed.revocations.revoked == (pi02.serial,) and signed.revocations.number > before.revocations.number
    # Genuine (the intermediate is the root's) and what an agent holding the older list adopts.
    store = certs.TrustStore(bytes.fromhex((fleet / "ca" / "root.pub").read_text()), "plant")
    now = int(time.time())
    assert store.accept_revocations(before, now) and store.accept_revocations(signed, now)
    with pytest.raises(certs.CertificateRevoked):
        store.check(pi02, "agent", "pi-02", now)
    crl = x509.load_pem_x509_crl((fleet / "broker" / "crl.pem").read_bytes())
    tls = x509.load_pem_x509_certificate((fleet / "devices" / "pi-02" / "cert.pem").read_bytes())
    assert [r.serial_number for r in crl] == [tls.serial_number]
    unknown = ztfl("provision", "revoke", "--out", str(fleet), "--device", "pi-09")
    assert unknown.returncode == 2 and "pi-09" in unknown.stdout


def test_bench_attest_prints_one_json_object(capsys):
    from ztfl.cli import main

    assert main(["bench", "attest", "--json", "--quotes", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "attest" and report["quotes"] == 5
    assert report["accepted"] == 5 and report["rejected"] == 0
    for part in ("quote", "verify"):
        assert 0 < report[part]["median_ms"] <= report[part]["p95_ms"] <= report[part]["max_ms"]


def test_provisioned_fleet_enrols_and_attests(swtpm, tmp_path):
    """From `ztfl provision` output to seats: a TPM agent configured by its attestation.yaml and
    an ESP32 signing with the device key from its firmware.json."""
    from ztfl.attestation.enrolment import EnrolmentAuthority
    from ztfl.attestation.provision import Device, Fleet, provision, register_provisioned
    from ztfl.attestation.software_identity import sign_software_quote
    from ztfl.attestation.tpm_agent import TpmAttestor
    from ztfl.attestation.verifier import Verifier

    fleet = tmp_path / "fleet"
    provision(Fleet("plant", "fog1", [Device("pi-01", "raspberry-pi-4"), Device("esp-01", "esp32")],
                    tcti=swtpm.tcti), fleet)
    config = yaml.safe_load((fleet / "devices" / "pi-01" / "attestation.yaml").read_text())
    assert config["tcti"] == swtpm.tcti
    config["state_dir"] = str(tmp_path / "pi-01-state")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"release 1")
    measurement = measure_agent(REPO, [model])

    doc = yaml.safe_load((fleet / "gateway" / "attestation-policy.yaml").read_text())
    doc["allowlist"]["raspberry-pi-4"][23] = [expected_pcr(measurement).hex()]
    policy = AttestationPolicy.from_mapping(doc)
    registry = IdentityRegistry(path=tmp_path / "identities.json")
    provisioned = register_provisioned(registry, load_devices(fleet / "gateway" / "devices.yaml"))
    authority = EnrolmentAuthority(registry, policy, provisioned=provisioned)
    verifier = Verifier(registry, policy)

    with TpmAttestor.from_config(config) as pi:
        pi.extend_measurement(measurement)
        authority.complete(pi.activate("pi-01", authority.begin(pi.enrolment_request("pi-01", "raspberry-pi-4"))))
        nonce = verifier.issue_nonce(1)
        seat = verifier.verify("pi-01", 1, b"pi-keys", pi.quote(nonce, 1, b"pi-keys").to_bytes())
    assert not seat.software_rooted

    firmware = json.loads((fleet / "devices" / "esp-01" / "firmware.json").read_text())
    evidence = sign_software_quote(bytes.fromhex(firmware["device_key"]), nonce, 1, b"esp-keys")
    seat = verifier.verify("esp-01", 1, b"esp-keys", evidence.to_bytes())
    assert seat.software_rooted and verifier.metrics.snapshot()["accepted_software"] == 1
    assert IdentityRegistry.load(tmp_path / "identities.json").get("esp-01").software_rooted

    for bad, words in [({**config, "pcr": 24}, "'pcr'"), ({**config, "ak_handle": "0x80000001"}, "'ak_handle'"),
                       ({**config, "colour": 1}, "'colour'")]:
        with pytest.raises(ValueError, match=words):
            TpmAttestor.from_config(bad)


def test_bench_attest_times_first_and_incremental_ima_verification(capsys):
    from ztfl.cli import main

    assert main(["bench", "attest", "--json", "--quotes", "3", "--ima-rounds", "10"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"quote", "verify", "evidence_bytes", "enrolment_ms", "accepted", "rejected"} <= set(report)
    ima = report["ima"]
    assert (ima["entries"], ima["new_entries"]) == (5000, 50)
    assert ima["first_evidence_bytes"] > 50 * ima["incremental_evidence_bytes"]    # only the new entries travel
    assert ima["incremental"]["median_ms"] < ima["first"]["median_ms"]
    assert ima["incremental"]["median_ms"] <= 10.0 and ima["incremental_within_target"]
