"""The device registry the gateway enforces, against real software TPMs (swtpm, EK certificates
from swtpm_setup's local CA) and the gateway's own attestation code (gateway/attest.py), with
the operator's decisions made through `ztfl attest approve|revoke|ek` while it runs.

Every attack is refused with its own error: a device not on the list, an EK certificate from no
configured CA, a genuine EK that is not the pinned one, a second TPM enrolling under an active
id (a stolen TLS key), a new AK without approval; a revoked device loses its seat at the next
round. The real device is never locked out by any of them."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ztfl.attestation import errors
from ztfl.attestation.audit import AUDIT_FILE
from ztfl.attestation.ek_pin import ek_fingerprint, read_ek_pin
from ztfl.attestation.measure import expected_pcr
from ztfl.attestation.messages import EnrolmentChallenge, EnrolmentRequest
from ztfl.attestation.tpm_agent import TpmAttestor
from ztfl.cli import main as ztfl
from ztfl.gateway.attest import GatewayAttestation
from ztfl.gateway.config import AttestationSettings, GatewayConfig
from ztfl.protocol.rounds import attempt_id
from ztfl.services import start_swtpm

PROFILE = "raspberry-pi-4"
MEASUREMENT = hashlib.sha256(b"agent release 7").digest()
KEYS = bytes(range(32))           # the agent's protocol identity key of the round


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    """TPM states with RSA EK certificates: two from the fleet's manufacturer CA, one from a
    local CA of the attacker's own (swtpm_setup takes about a second each: made once)."""
    setup, localca = shutil.which("swtpm_setup"), shutil.which("swtpm_localca")
    if setup is None or localca is None:
        pytest.fail("swtpm_setup/swtpm_localca not installed (apt-get install swtpm-tools; make test installs it)")
    root = tmp_path_factory.mktemp("factory")

    def manufacture(name: str, ca: Path) -> Path:
        state = root / name
        state.mkdir()
        ca.mkdir(exist_ok=True)
        (root / f"{name}.localca").write_text(f"statedir = {ca}\nsigningkey = {ca}/signkey.pem\n"
                                              f"issuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n")
        (root / f"{name}.setup").write_text(f"create_certs_tool = {localca}\ncreate_certs_tool_config = "
                                            f"{root}/{name}.localca\nactive_pcr_banks = sha256\n")
        subprocess.run([setup, "--tpm2", "--tpmstate", str(state), "--create-ek-cert", "--config",
                        str(root / f"{name}.setup"), "--overwrite"], check=True, capture_output=True, timeout=120)
        return state

    states = {"pi-01": manufacture("pi-01", root / "fleet-ca"), "other": manufacture("other", root / "fleet-ca"),
              "rogue": manufacture("rogue", root / "rogue-ca")}
    cas = root / "ek-cas.pem"
    cas.write_bytes((root / "fleet-ca" / "swtpm-localca-rootca-cert.pem").read_bytes()
                    + (root / "fleet-ca" / "issuercert.pem").read_bytes())
    return states, cas


class Fleet:
    """A gateway state directory, its device list and policy, and the TPMs started for a test."""

    def __init__(self, tmp_path: Path, factory):
        self.tmp, (self.states, self.cas) = tmp_path, factory
        self.state_dir = tmp_path / "gateway"
        self.state_dir.mkdir()
        self.devices = tmp_path / "devices.yaml"
        self.policy = tmp_path / "attestation-policy.yaml"
        self.policy.write_text(yaml.safe_dump({"hash_alg": "sha256", "pcrs": [23], "allowlist": {
            PROFILE: {23: [expected_pcr(MEASUREMENT).hex()]}}}))
        self.tpms, self.attestors = [], []

    def list_devices(self, **pins: str) -> None:
        """The device list: each id a TPM device of PROFILE, pinned to an EK when given one."""
        self.devices.write_text(yaml.safe_dump({"devices": [
            {"agent_id": a, "profile": PROFILE, "root": "tpm", **({"ek_sha256": p} if p else {})}
            for a, p in pins.items()]}))

    def gateway(self, trust_on_first_use: bool = False, ek_cas: bool = True) -> GatewayAttestation:
        return GatewayAttestation(self.state_dir, settings=AttestationSettings(
            devices=str(self.devices), ek_cas=(str(self.cas),) if ek_cas else (), policy=str(self.policy),
            trust_on_first_use=trust_on_first_use))

    def start(self, name: str):
        """A started swtpm from the factory state `name` (`fresh`: a new TPM without certificate)."""
        workdir = self.tmp / f"tpm-{len(self.tpms)}"
        if name != "fresh":
            shutil.copytree(self.states[name], workdir)
        swtpm = start_swtpm(workdir)
        self.tpms.append(swtpm)
        return swtpm

    def tpm(self, name: str, swtpm=None) -> TpmAttestor:
        """An agent's TPM (swtpm serves one client at a time: `ztfl attest ek` goes first), with
        an agent state directory of its own, measured like the release."""
        swtpm = swtpm or self.start(name)
        attestor = TpmAttestor(swtpm.tcti, self.tmp / f"agent-{swtpm.port}")
        attestor.extend_measurement(MEASUREMENT)
        self.attestors.append(attestor)
        return attestor

    def close(self) -> None:
        for attestor in self.attestors:
            attestor.close()
        for swtpm in self.tpms:
            swtpm.stop()


@pytest.fixture
def fleet(tmp_path, factory):
    f = Fleet(tmp_path, factory)
    yield f
    f.close()


def pin_of(attestor: TpmAttestor) -> str:
    return ek_fingerprint(attestor.enrolment_request("x", PROFILE).ek_public)


def enrol(gw: GatewayAttestation, attestor: TpmAttestor, agent_id: str = "pi-01") -> None:
    """Enrolment as it crosses MQTT: bytes in, bytes out, through the gateway's handler."""
    challenge = gw.on_enrol(agent_id, attestor.enrolment_request(agent_id, PROFILE).to_bytes())
    assert challenge is not None
    assert gw.on_enrol(agent_id, attestor.activate(agent_id, EnrolmentChallenge.from_bytes(challenge)).to_bytes()) \
        is None


def seat(gw: GatewayAttestation, attestor: TpmAttestor, round_id: int, agent_id: str = "pi-01"):
    nonce = gw.issue_nonce(round_id, 0)
    return gw.verify(agent_id, round_id, 0, KEYS, attestor.quote(nonce, attempt_id(round_id, 0), KEYS).to_bytes())


def audit(fleet: Fleet) -> list[tuple[str, str]]:
    lines = (fleet.state_dir / AUDIT_FILE).read_text().splitlines()
    return [(e["action"], e["agent_id"]) for e in map(json.loads, lines)]


def test_pinned_device_enrols_and_is_seated(fleet):
    device = fleet.tpm("pi-01")
    fleet.list_devices(**{"pi-01": pin_of(device)})
    gw = fleet.gateway()
    assert gw.refusal_before_round("pi-01", "tpm-required") is None
    enrol(gw, device)
    verdict = seat(gw, device, 1)
    assert verdict.ok and verdict.root == "tpm", verdict
    assert audit(fleet) == [("enrolled", "pi-01")]
    entry = json.loads((fleet.state_dir / AUDIT_FILE).read_text())
    assert entry["ek_sha256"] == pin_of(device)


def test_device_not_on_the_list_is_refused(fleet):
    device = fleet.tpm("pi-01")
    fleet.list_devices(**{"pi-01": pin_of(device)})
    gw = fleet.gateway(trust_on_first_use=True)
    with pytest.raises(errors.UnknownDevice):
        gw.on_enrol("pi-02", device.enrolment_request("pi-02", PROFILE).to_bytes())
    assert isinstance(gw.refusal_before_round("pi-02", "tpm-required"), errors.UnknownDevice)
    assert gw.registry.get("pi-02") is None


def test_ek_certificate_from_no_configured_ca_is_refused(fleet):
    rogue = fleet.tpm("rogue")          # a swtpm whose EK certificate its own local CA issued
    fleet.list_devices(**{"pi-01": pin_of(rogue)})      # even pinned: the chain decides first
    gw = fleet.gateway()
    # swtpm's local CAs all share one name: the issuer is found, its signature does not verify.
    with pytest.raises(errors.EkCertificateRejected, match="not signed by its issuer: bad signature"):
        enrol(gw, rogue)
    assert not gw.enrolled("pi-01")


def test_genuine_ek_that_is_not_the_pinned_one_is_refused(fleet):
    device, other = fleet.tpm("pi-01"), fleet.tpm("other")     # both certified by the fleet's CA
    fleet.list_devices(**{"pi-01": pin_of(device)})
    gw = fleet.gateway(trust_on_first_use=True)                 # a pin is never overridden by first use
    with pytest.raises(errors.EkNotPinned, match="not the EK pinned"):
        enrol(gw, other)
    assert gw.registry.get("pi-01") is None
    enrol(gw, device)
    assert seat(gw, device, 1).ok


def test_stolen_tls_key_with_a_new_software_tpm_cannot_take_the_seat(fleet):
    device = fleet.tpm("pi-01")
    fleet.list_devices(**{"pi-01": ""})           # listed without a pin: its first EK is trusted
    gw = fleet.gateway(trust_on_first_use=True, ek_cas=False)
    enrol(gw, device)
    before = gw.registry.get("pi-01")
    # The thief publishes on pi-01's topics (its TLS key) from a TPM of its own.
    thief = fleet.tpm("fresh")
    with pytest.raises(errors.EndorsementKeyChanged):
        enrol(gw, thief)
    assert gw.registry.get("pi-01") == before and gw.registry.get("pi-01").active
    assert not seat(gw, thief, 1).ok
    verdict = seat(gw, device, 2)
    assert verdict.ok, verdict                    # the real device keeps its seat


def test_reenrolment_needs_the_operators_approval_and_is_logged(fleet):
    device, replacement = fleet.tpm("pi-01"), fleet.tpm("other")
    fleet.list_devices(**{"pi-01": pin_of(device)})
    gw = fleet.gateway(ek_cas=False)
    enrol(gw, device)
    enrolled = gw.registry.get("pi-01")
    # The board's TPM was replaced: a new EK for an active identity waits for the operator.
    with pytest.raises(errors.EndorsementKeyChanged):
        enrol(gw, replacement)
    # Its known EK paired with an AK of another TPM: a new AK for an active identity.
    crafted = EnrolmentRequest("pi-01", PROFILE, enrolled.ek_public, replacement.ensure_ak())
    with pytest.raises(errors.AttestationKeyChanged):
        gw.on_enrol("pi-01", crafted.to_bytes())
    assert gw.registry.get("pi-01") == enrolled

    assert ztfl(["attest", "approve", "--state", str(fleet.state_dir), "--agent", "pi-01",
                 "--note", "TPM module replaced"]) == 0
    enrol(gw, replacement)                        # the same gateway: no restart
    assert gw.registry.get("pi-01").ek_public != enrolled.ek_public
    assert seat(gw, replacement, 1).ok
    assert audit(fleet) == [("enrolled", "pi-01"), ("approve", "pi-01"), ("reenrolled", "pi-01")]
    approval = json.loads((fleet.state_dir / AUDIT_FILE).read_text().splitlines()[1])
    assert approval["note"] == "TPM module replaced" and approval["operator"]
    # The approval is used up: the next new TPM is refused again.
    with pytest.raises(errors.EndorsementKeyChanged):
        enrol(gw, fleet.tpm("fresh"))


def test_approval_naming_a_replacement_tpm_admits_only_that_tpm(fleet, capsys):
    spare = fleet.start("other")
    assert ztfl(["attest", "ek", "--tcti", spare.tcti, "--out", str(fleet.tmp / "ek.pem")]) == 0
    device, replacement, other = fleet.tpm("pi-01"), fleet.tpm("other", spare), fleet.tpm("fresh")
    fleet.list_devices(**{"pi-01": pin_of(device)})
    gw = fleet.gateway(ek_cas=False)
    enrol(gw, device)
    printed = json.loads(capsys.readouterr().out)
    assert printed["ek_sha256"] == read_ek_pin(fleet.tmp / "ek.pem") == pin_of(replacement)
    assert printed["certificate"] is True
    assert ztfl(["attest", "approve", "--state", str(fleet.state_dir), "--agent", "pi-01",
                 "--ek", str(fleet.tmp / "ek.pem")]) == 0
    with pytest.raises(errors.EkNotPinned, match="approved"):
        enrol(gw, other)
    enrol(gw, replacement)
    assert seat(gw, replacement, 1).ok
    assert seat(gw, device, 2).reason == "unenrolled_key"      # the old TPM's AK is out
    # A restart keeps the approved TPM even though devices.yaml still pins the old one.
    again = fleet.gateway(ek_cas=False)
    assert again.enrolled("pi-01") and seat(again, replacement, 3).ok


def test_revoked_device_gets_no_seat_from_the_next_round(fleet):
    device = fleet.tpm("pi-01")
    fleet.list_devices(**{"pi-01": pin_of(device)})
    gw = fleet.gateway()
    enrol(gw, device)
    assert seat(gw, device, 1).ok
    assert ztfl(["attest", "revoke", "--state", str(fleet.state_dir), "--agent", "pi-01"]) == 0
    assert isinstance(gw.refusal_before_round("pi-01", "tpm-required"), errors.DeviceRevoked)
    verdict = seat(gw, device, 2)
    assert (verdict.ok, verdict.reason) == (False, "device_revoked")
    with pytest.raises(errors.DeviceRevoked):
        enrol(gw, device)
    assert isinstance(fleet.gateway().refusal_before_round("pi-01", "tpm-required"), errors.DeviceRevoked)


def test_trust_on_first_use_only_when_the_policy_says_so(fleet):
    device = fleet.tpm("pi-01")
    fleet.list_devices(**{"pi-01": ""})
    with pytest.raises(errors.EkNotPinned, match="does not trust the first"):
        enrol(fleet.gateway(), device)
    gw = fleet.gateway(trust_on_first_use=True)
    enrol(gw, device)
    assert seat(gw, device, 1).ok
    # Pinned later to another TPM: at the next start the first-use identity has to enrol again.
    other = fleet.tpm("other")
    fleet.list_devices(**{"pi-01": pin_of(other)})
    assert not fleet.gateway().enrolled("pi-01")


def test_provisioned_gateway_reads_the_registry_keys(fleet, tmp_path):
    from ztfl.attestation.provision import Device, Fleet as ProvisionedFleet, provision

    swtpm = fleet.start("pi-01")
    assert ztfl(["attest", "ek", "--tcti", swtpm.tcti, "--out", str(tmp_path / "pi-01-ek.pem")]) == 0
    device = fleet.tpm("pi-01", swtpm)
    out = tmp_path / "out"
    provision(ProvisionedFleet("plant", "fog1", [Device("pi-01", PROFILE), Device("esp-01", "esp32")],
                               ek_pins={"pi-01": read_ek_pin(tmp_path / "pi-01-ek.pem")}), out)
    config = GatewayConfig.load(out / "gateway" / "gateway.yaml")
    assert config.attestation == AttestationSettings(devices=str(out.resolve() / "gateway" / "devices.yaml"),
                                                     policy=str(out.resolve() / "gateway" / "attestation-policy.yaml"))
    devices = yaml.safe_load((out / "gateway" / "devices.yaml").read_text())["devices"]
    assert {d["agent_id"]: d.get("ek_sha256") for d in devices} == {"pi-01": pin_of(device), "esp-01": None}
    (tmp_path / "gw-state").mkdir()
    gw = GatewayAttestation(tmp_path / "gw-state", config.software_devices, config.allow_software_rooted,
                            config.attestation)
    enrol(gw, device)
    # The provisioned policy has no allowed value yet: enrolled, but no seat until the operator fills it in.
    assert seat(gw, device, 1).reason == "pcr_not_allowed"
    with pytest.raises(ValueError, match="not a TPM device"):
        provision(ProvisionedFleet("plant", "fog1", [Device("esp-01", "esp32")], ek_pins={"esp-01": "0" * 64}),
                  tmp_path / "bad")
