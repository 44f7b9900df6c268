"""The firmware's device-key evidence (real MicroPython) is accepted by the gateway-side
Verifier for the nonce, round and protocol keys it was made for, and refused otherwise; the
digest of its flashed files that it reports is the one the build records, and the gateway seats
it only with the digest recorded for it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from ztfl.attestation import AttestationPolicy, IdentityRegistry, Verifier
from ztfl.attestation.bundle import BundleEvidence, bundle_digest
from ztfl.attestation.errors import AttestationError, BundleDigestMismatch
from ztfl.attestation.software_identity import new_device_key
from ztfl.firmware_tools.micropython_host import run_json
from ztfl.gateway.attest import GatewayAttestation
from ztfl.gateway.config import AttestationSettings
from ztfl.protocol.rounds import attempt_id

_SIGN = r"""
import sys, json
from binascii import hexlify, unhexlify
from ztfw import ed25519
from ztfw.attest import software_evidence, AttestError
d = json.loads(sys.stdin.read())
seed = unhexlify(d["seed"])
out = [hexlify(software_evidence(seed, ed25519.public_key(seed), unhexlify(d["nonce"]), d["round"],
                                 unhexlify(d["keys"]))).decode()]
try:
    software_evidence(seed, ed25519.public_key(seed), b"short", 1, b"")
    out.append("accepted")
except AttestError:
    out.append("AttestError")
print(json.dumps(out))
"""


@pytest.fixture
def verifier(tmp_path):
    seed, public = new_device_key()
    registry = IdentityRegistry(tmp_path / "identities.json")
    registry.add_software_device("esp-01", "esp32", public)
    policy = AttestationPolicy(hash_alg="sha256", pcrs=(23,), allowlist={}, allow_software_rooted=True,
                               software_rooted_profiles={"esp32"})
    return Verifier(registry, policy), seed


def test_device_key_evidence_from_the_firmware_is_accepted_once(verifier):
    v, seed = verifier
    nonce = v.issue_nonce(7, "esp-01")
    keys = os.urandom(64)   # c_pk || s_pk as advertised
    evidence, short = run_json(_SIGN, {"seed": seed.hex(), "nonce": nonce.hex(), "round": 7, "keys": keys.hex()})
    assert short == "AttestError"
    seat = v.verify("esp-01", 7, keys, bytes.fromhex(evidence))
    assert seat.software_rooted and seat.agent_id == "esp-01"
    with pytest.raises(AttestationError):            # the nonce is single use
        v.verify("esp-01", 7, keys, bytes.fromhex(evidence))


def test_evidence_for_other_keys_or_rounds_is_refused(verifier):
    v, seed = verifier
    nonce = v.issue_nonce(8, "esp-01")
    keys = os.urandom(64)
    evidence = bytes.fromhex(run_json(_SIGN, {"seed": seed.hex(), "nonce": nonce.hex(), "round": 8,
                                              "keys": keys.hex()})[0])
    with pytest.raises(AttestationError) as bad_keys:
        v.verify("esp-01", 8, os.urandom(64), evidence)
    assert bad_keys.value.reason
    with pytest.raises(AttestationError):
        v.verify("esp-01", 9, keys, evidence)
    other_seed, _ = new_device_key()
    forged = bytes.fromhex(run_json(_SIGN, {"seed": other_seed.hex(), "nonce": nonce.hex(), "round": 8,
                                            "keys": keys.hex()})[0])
    with pytest.raises(AttestationError):
        v.verify("esp-01", 8, keys, forged)
    assert v.verify("esp-01", 8, keys, evidence).software_rooted


# --- the bundle digest: what is flashed, reported with the evidence ---------------------------------

_BUNDLE = r"""
import sys, json
from binascii import hexlify, unhexlify
from ztfw import ed25519
from ztfw.attest import bundle_digest, bundle_evidence, software_evidence
d = json.loads(sys.stdin.read())
seed = unhexlify(d["seed"])
public = ed25519.public_key(seed)
digest = bundle_digest(d["dir"], ("mine.json",))
args = (seed, public, unhexlify(d["nonce"]), d["round"], unhexlify(d["keys"]))
print(json.dumps([hexlify(digest).decode(), hexlify(bundle_evidence(*args, digest)).decode(),
                  hexlify(software_evidence(*args)).decode()]))
"""


def _bundle_tree(root: Path) -> Path:
    """What `ztfl flash esp32` leaves on a board, plus what the digest leaves out."""
    for name, data in {"lib/ztfw/agent.mpy": b"M\x06agent", "lib/ztfw/wordops_viper.py": b"# viper\n",
                       "boot.py": b"# ztfl\n", "main.py": b"import ztfw\n", "config.json": b'{"agent_id": "esp-01"}',
                       "records.bin": bytes(range(256)) * 9, "manifest.json": b"{}", "state.json": b"{}"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_firmware_bundle_digest_is_the_one_the_build_records(tmp_path):
    tree = _bundle_tree(tmp_path / "board")
    recorded = bundle_digest(tree).hex()
    (tree / "mine.json").write_bytes(b"{}")             # the board's own state file (its `skip`)
    seed, _ = new_device_key()
    digest, _, _ = run_json(_BUNDLE, {"seed": seed.hex(), "dir": str(tree), "nonce": "00" * 32, "round": 1,
                                      "keys": ""})
    assert digest == recorded                            # manifest.json and state files are not flashed
    (tree / "lib" / "ztfw" / "extra.py").write_bytes(b"planted")
    assert bundle_digest(tree).hex() != digest


@pytest.fixture
def esp_gateway(tmp_path):
    """The gateway's attestation with esp-01 provisioned, its bundle digest recorded."""
    seed, public = new_device_key()
    tree = _bundle_tree(tmp_path / "board")
    (tmp_path / "devices.yaml").write_text(yaml.safe_dump({"devices": [
        {"agent_id": "esp-01", "profile": "esp32", "root": "software", "device_public_key": public.hex(),
         "bundle_sha256": bundle_digest(tree).hex()}]}))
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump({"pcrs": [23], "allow_software_rooted": True,
                                                          "software_rooted_profiles": ["esp32"]}))
    (tmp_path / "gw").mkdir()
    gw = GatewayAttestation(tmp_path / "gw", allow_software_rooted=True, settings=AttestationSettings(
        devices=str(tmp_path / "devices.yaml"), policy=str(tmp_path / "policy.yaml")))
    return gw, seed, tree


def _board_evidence(gw, seed, tree, round_id: int, keys: bytes) -> tuple[bytes, bytes, bytes]:
    nonce = gw.issue_nonce(round_id, 0)
    digest, bundled, plain = run_json(_BUNDLE, {"seed": seed.hex(), "dir": str(tree), "nonce": nonce.hex(),
                                                "round": attempt_id(round_id, 0), "keys": keys.hex()})
    return bytes.fromhex(digest), bytes.fromhex(bundled), bytes.fromhex(plain)


def test_board_reporting_its_recorded_bundle_is_seated(esp_gateway):
    gw, seed, tree = esp_gateway
    keys = os.urandom(32)
    _, evidence, _ = _board_evidence(gw, seed, tree, 1, keys)
    verdict = gw.verify("esp-01", 1, 0, keys, evidence)
    assert (verdict.ok, verdict.root) == (True, "software"), verdict


def test_board_reporting_a_changed_bundle_is_refused(esp_gateway):
    gw, seed, tree = esp_gateway
    keys = os.urandom(32)
    (tree / "boot.py").write_bytes(b"import ztfw.backdoor\n")       # a file changed after the build
    digest, evidence, plain = _board_evidence(gw, seed, tree, 1, keys)
    assert gw.verify("esp-01", 1, 0, keys, evidence).reason == "bundle_digest"
    with pytest.raises(BundleDigestMismatch):
        gw._bundle_bound("esp-01", keys, evidence)
    # Reporting no digest at all, or the recorded digest in place of its own (relayed), fails too.
    assert gw.verify("esp-01", 1, 0, keys, plain).reason == "bundle_digest_missing"
    relayed = BundleEvidence(gw.bundle_digests["esp-01"], BundleEvidence.from_bytes(evidence).evidence)
    assert relayed.digest != digest
    assert gw.verify("esp-01", 1, 0, keys, relayed.to_bytes()).reason == "bad_signature"


def test_secure_boot_flash_steps_sign_the_images_the_build_lists(tmp_path):
    """`ztfl flash esp32 --secure-boot-key`: eFuses read first, then espsecure (run here for real)
    signs bootloader and application with the Secure Boot v2 key, and esptool writes the signed
    images at the build's offsets before the bundle (with its boot.py) is copied. No board here:
    the espefuse/esptool/mpremote steps are checked, not run."""
    import subprocess
    import sys

    from ztfl.firmware_tools.flash import FlashError, SecureBoot, flash_commands

    port = tmp_path / "ttyUSB0"
    port.touch()
    bundle = _bundle_tree(tmp_path / "bundle")
    build = tmp_path / "build-ESP32_GENERIC"
    for name in ("bootloader/bootloader.bin", "partition_table/partition-table.bin", "micropython.bin"):
        (build / name).parent.mkdir(parents=True, exist_ok=True)
        (build / name).write_bytes(os.urandom(5000))
    (build / "flasher_args.json").write_text(json.dumps({
        "bootloader": {"offset": "0x1000", "file": "bootloader/bootloader.bin"},
        "partition-table": {"offset": "0x9000", "file": "partition_table/partition-table.bin"},
        "app": {"offset": "0x20000", "file": "micropython.bin"}}))
    key = tmp_path / "sbv2.pem"
    espsecure = [sys.executable, "-m", "espsecure"]
    subprocess.run(espsecure + ["generate-signing-key", "--version", "2", "--scheme", "ecdsa256", str(key)],
                   check=True, capture_output=True)
    secure = SecureBoot(key, build)
    cmds = flash_commands(str(port), bundle, "esp32", secure=secure)
    tools = [c[2] + " " + c[3] for c in cmds]
    assert tools[:5] == ["espefuse --chip", "espsecure digest-sbv2-public-key", "espsecure sign-data",
                         "espsecure sign-data", "esptool --chip"]
    signed = build / "signed"
    assert cmds[4][-7:] == ["write-flash", "0x1000", str(signed / "bootloader-signed.bin"), "0x9000",
                            str(build / "partition_table" / "partition-table.bin"), "0x20000",
                            str(signed / "app-signed.bin")]
    assert f"+ fs cp {bundle / 'boot.py'} :boot.py" in " ".join(cmds[5]) and cmds[6][-1] == "reset"
    signed.mkdir()
    for cmd in cmds[1:4]:
        subprocess.run(cmd, check=True, capture_output=True)
    assert len((signed / "sbv2-key-digest.bin").read_bytes()) == 32
    for image in ("bootloader-signed.bin", "app-signed.bin"):
        check = subprocess.run(espsecure + ["verify-signature", "--version", "2", "--keyfile", str(key),
                                            str(signed / image)], capture_output=True, text=True)
        assert check.returncode == 0 and "verification successful" in check.stdout, check.stdout + check.stderr
    with pytest.raises(FlashError, match="not both"):
        flash_commands(str(port), bundle, "esp32", image=build / "micropython.bin", secure=secure)
    with pytest.raises(FlashError, match="generate-signing-key"):
        flash_commands(str(port), bundle, "esp32", secure=SecureBoot(tmp_path / "none.pem", build))
    with pytest.raises(FlashError, match="flasher_args.json"):
        flash_commands(str(port), bundle, "esp32", secure=SecureBoot(key, tmp_path))
