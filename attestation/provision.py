"""`ztfl provision`: the keys, certificates and configs of one gateway and its devices.

Writes into --ca-dir (default: a sibling of --out named <out>-ca; it must stay outside the tree
and belongs offline once provisioning is done; attestation.identities):
  root.key, root.pub, issued.json           the protocol root CA (Ed25519) and its ledger
  tls-ca.key, tls-ca.pem                    the TLS CA of the broker listener (EC P-256, self-signed)

Writes into --out (no CA private key):
  ca/ca.pem, ca/root.pub                    the TLS CA certificate, the protocol trust anchor
  broker/broker.pem|.key, mosquitto.conf, acl, crl.pem   TLS listener that requires a client
                                            certificate not on the CRL and takes its CN as user
                                            name; the ACL lets each device write only under its
                                            own agent topics and read only its gateway's broadcasts
  gateway/<gw>.pem|.key, gateway.yaml, attestation-policy.yaml, devices.yaml
  gateway/identity.key|.crt, intermediate.key|.crt, revocations.bin, root.pub
                                            its certified identity (role gateway), the online
                                            intermediate that signs revocation lists, the list
  cloud/identity.key|.crt, root.pub         the cloud tier's certified identity (role cloud)
  devices/<id>/cert.pem|key.pem|ca.pem, agent.yaml, attestation.yaml      (Linux agents)
  devices/<id>/identity.key|.crt, root.pub, revocations.bin              (its certified identity)
  devices/<id>/... , firmware.json, device-key.bin, identity.crt          (ESP32: the certified
                                            Ed25519 device key is its protocol identity)

`ztfl provision revoke --out OUT --device ID` revokes every certificate issued to a device: a new
revocation list for the gateway to broadcast and a new X.509 CRL for the broker (docs/deployment.md).

Topic layout (agent/topics.py): agents write ztfl/<federation>/<gateway>/agents/<id>/<kind>;
the gateway writes ztfl/<federation>/<gateway>/broadcast/<kind> and .../broadcast/to/<id>/<kind>.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ztfl.attestation.ek_pin import read_ek_pin
from nacl.signing import SigningKey

from ztfl.attestation.identities import (CaDirError, ProtocolCa, check_apart, default_ca_dir, new_identity,
                                         signed_revocations)
from ztfl.attestation.identities import write_file as _write
from ztfl.protocol import certs
from ztfl.hw_profiles import ProfileError, load_profile

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ProvisionError(ValueError):
    """Bad provisioning input; the message names it."""


@dataclass(frozen=True)
class Device:
    agent_id: str
    profile: str

    def __post_init__(self):
        if not _ID.match(self.agent_id):
            raise ProvisionError(f"device id {self.agent_id!r}: 1-64 of [A-Za-z0-9_.-], starting alphanumeric")
        try:
            profile = load_profile(self.profile)
        except ProfileError as exc:
            raise ProvisionError(f"device {self.agent_id}: {exc}") from None
        # Boards whose profile says `attestation: device-key` (ESP32) have no TPM: they get an
        # Ed25519 device key and a firmware config instead of an AK.
        object.__setattr__(self, "software_rooted", profile.attestation == "device-key")

    software_rooted: bool = field(default=False, init=False)

    @classmethod
    def parse(cls, text: str) -> "Device":
        agent_id, _, profile = text.partition(":")
        if not profile:
            raise ProvisionError(f"device {agent_id!r}: give its profile as ID:PROFILE")
        return cls(agent_id, profile)


@dataclass
class Fleet:
    federation: str
    gateway: str
    devices: list[Device]
    broker_hosts: list[str] = field(default_factory=lambda: ["localhost", "127.0.0.1"])
    broker_port: int = 8883
    tcti: str = "device:/dev/tpmrm0"
    # Leaf certificates (TLS and identity): a year, so a lost device key stays usable for at most
    # that long even if nobody revokes it; revocation (CRL, revocation lists) covers the rest.
    days: int = 365
    ek_pins: dict[str, str] = field(default_factory=dict)   # TPM device id -> EK pin (attestation.ek_pin)
    ca_dir: Path | None = None          # default: a sibling of the output tree (default_ca_dir)
    revocation_days: int = 7            # next_update of a revocation list (the gateway renews it)


CLOUD_ID = "cloud"                      # device id of the cloud tier's certificate
TLS_CA_DAYS = 3650                      # the offline CAs: ten years


# --- topic permissions ---------------------------------------------------------------------

def acl_text(fleet: Fleet) -> str:
    base = f"ztfl/{fleet.federation}/{fleet.gateway}"
    lines = ["# Generated by `ztfl provision`. User names are certificate CNs (use_identity_as_username).",
             "# Anything not granted here is denied.", "",
             f"user {fleet.gateway}",
             f"topic read {base}/agents/#",
             f"topic write {base}/broadcast/#",
             f"topic write ztfl/{fleet.federation}/cloud/gateways/{fleet.gateway}/#",
             f"topic read ztfl/{fleet.federation}/cloud/broadcast/#", ""]
    for d in fleet.devices:
        lines += [f"user {d.agent_id}",
                  f"topic write {base}/agents/{d.agent_id}/#",
                  f"topic read {base}/broadcast/+",
                  f"topic read {base}/broadcast/to/{d.agent_id}/#", ""]
    return "\n".join(lines)


def listener_options(out: Path) -> str:
    """The TLS options of the broker listener (also usable after a `listener` line elsewhere)."""
    out = out.resolve()
    return "\n".join([
        f"cafile {out / 'ca' / 'ca.pem'}",
        f"certfile {out / 'broker' / 'broker.pem'}",
        f"keyfile {out / 'broker' / 'broker.key'}",
        "require_certificate true",
        "use_identity_as_username true",
        f"acl_file {out / 'broker' / 'acl'}",
        # Revoked device certificates (`ztfl provision revoke`); mosquitto reads it when it starts.
        f"crlfile {out / 'broker' / 'crl.pem'}",
    ])


# The MQTT packet of the largest legitimate message: fednet.transport's publish_packet_bytes of
# LARGEST_MESSAGE_BYTES (a masked input of the largest model), which this layer cannot import;
# tests/adversary/test_oversized_messages.py checks that the two agree.
BROKER_MAX_PACKET_BYTES = 4_062_836


def mosquitto_conf(fleet: Fleet, out: Path, max_packet_bytes: int = BROKER_MAX_PACKET_BYTES) -> str:
    return "\n".join([
        "# Generated by `ztfl provision`: TLS only, a client certificate is required.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"listener {fleet.broker_port}",
        listener_options(out),
        "persistence false",
        "# A client sending a larger packet is disconnected before the broker buffers it, and a",
        "# client that announced a smaller limit is not sent it: no agent can exhaust the memory",
        "# of the broker or of the gateway with one message.",
        f"max_packet_size {max_packet_bytes}",
        "",
    ])


# --- certificates --------------------------------------------------------------------------

def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str, fleet: Fleet) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"ztfl {fleet.federation}"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: x509.Name, key, issuer: x509.Name, issuer_key, days: int, *, ca: bool = False,
          server_names: list[str] = (), client: bool = False, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        usages = ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []) + ([ExtendedKeyUsageOID.SERVER_AUTH]
                                                                          if server else [])
        b = b.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server_names:
        alt = []
        for host in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(out_dir: Path, stem: str, cn: str, fleet: Fleet, ca_name, ca_key, **kw) -> x509.Certificate:
    key = _key()
    cert = _cert(_name(cn, fleet), key, ca_name, ca_key, fleet.days, **kw)
    _write(out_dir / f"{stem}.pem", _pem(cert))
    _write(out_dir / f"{stem}.key", _key_pem(key), private=True)
    return cert


def _tls_ca(ca_dir: Path, fleet: Fleet | None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The TLS CA of `ca_dir`; made there when `fleet` is given and there is none yet."""
    key_path, cert_path = ca_dir / "tls-ca.key", ca_dir / "tls-ca.pem"
    if key_path.exists() and cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        return key, x509.load_pem_x509_certificate(cert_path.read_bytes())
    if fleet is None:
        raise ProvisionError(f"no TLS CA in {ca_dir}: give the --ca-dir the fleet was provisioned with")
    key = _key()
    name = _name(f"ztfl {fleet.federation} CA", fleet)
    cert = _cert(name, key, name, key, TLS_CA_DAYS, ca=True)
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, _pem(cert))
    return key, cert


def x509_crl(ca_key, ca_cert: x509.Certificate, serials) -> bytes:
    """The broker's CRL of revoked TLS client certificates. It lasts as long as the CA: the CA key
    is offline, and OpenSSL refuses every client once a CRL's next update has passed."""
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
         .last_update(now - datetime.timedelta(minutes=5)).next_update(ca_cert.not_valid_after_utc))
    for serial in serials:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(int(serial))
                                      .revocation_date(now).build())
    return b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _bundle_identity(ddir: Path, ca: ProtocolCa, device_id: str, role: str, fleet: Fleet, now: int,
                     revocations: bytes, key_file: str = "identity.key") -> tuple[SigningKey, bytes, dict]:
    """A certified identity written into one bundle with the trust anchor and the revocation list;
    returns the key, the certificate and the `trust:` section naming those files."""
    key, cert = new_identity(ca, device_id, role, fleet.days, now)
    _write(ddir / key_file, bytes(key), private=True)
    _write(ddir / "identity.crt", cert)
    _write(ddir / "root.pub", ca.anchor_text())
    _write(ddir / "revocations.bin", revocations)
    return key, cert, {"anchor": str(ddir / "root.pub"), "certificate": str(ddir / "identity.crt"),
                       "identity_key": str(ddir / key_file), "revocations": str(ddir / "revocations.bin")}


def _open_ca(ca_dir: Path | None, out: Path, federation: str) -> ProtocolCa:
    ca_dir = Path(ca_dir) if ca_dir else default_ca_dir(out)
    try:
        check_apart(ca_dir, out)
        return ProtocolCa.open(ca_dir, federation)
    except (CaDirError, OSError, ValueError) as exc:
        raise ProvisionError(f"--ca-dir: {exc}") from None


def provision(fleet: Fleet, out: Path) -> dict:
    """Write everything; returns a summary (paths and the software-rooted device keys)."""
    ids = [d.agent_id for d in fleet.devices]
    for value, what in [(fleet.federation, "federation"), (fleet.gateway, "gateway")]:
        if not _ID.match(value):
            raise ProvisionError(f"{what} {value!r}: 1-64 of [A-Za-z0-9_.-], starting alphanumeric")
    if len(set(ids)) != len(ids) or fleet.gateway in ids or CLOUD_ID in ids:
        raise ProvisionError(f"device ids must be unique and differ from the gateway id and {CLOUD_ID!r}")
    tpm_ids = {d.agent_id for d in fleet.devices if not d.software_rooted}
    for agent_id in fleet.ek_pins:
        if agent_id not in tpm_ids:
            raise ProvisionError(f"--ek {agent_id}: not a TPM device given with --device")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    protocol_ca = _open_ca(fleet.ca_dir, out, fleet.federation)
    now = int(time.time())

    ca_key, ca_cert = _tls_ca(protocol_ca.ca_dir, fleet)
    ca_name = ca_cert.subject
    _write(out / "ca" / "ca.pem", _pem(ca_cert))
    _write(out / "ca" / "root.pub", protocol_ca.anchor_text())

    _issue(out / "broker", "broker", fleet.broker_hosts[0], fleet, ca_name, ca_key,
           server_names=fleet.broker_hosts, server=True)
    _write(out / "broker" / "acl", acl_text(fleet))
    _write(out / "broker" / "mosquitto.conf", mosquitto_conf(fleet, out))

    url = f"mqtts://{fleet.broker_hosts[0]}:{fleet.broker_port}"
    gw_dir = out / "gateway"
    protocol_ca.record_tls(fleet.gateway, _issue(gw_dir, fleet.gateway, fleet.gateway, fleet, ca_name, ca_key,
                                                 client=True).serial_number)
    # The online intermediate signs revocation lists (the gateway renews them); the root only
    # signs certificates, here, offline.
    intermediate, intermediate_cert = new_identity(protocol_ca, fleet.gateway, "intermediate", fleet.days, now)
    _write(gw_dir / "intermediate.key", bytes(intermediate), private=True)
    _write(gw_dir / "intermediate.crt", intermediate_cert)
    revocations = signed_revocations(protocol_ca, intermediate, intermediate_cert, None, fleet.revocation_days,
                                     now).encode()
    _, _, gw_trust = _bundle_identity(gw_dir, protocol_ca, fleet.gateway, "gateway", fleet, now, revocations)
    _bundle_identity(out / "cloud", protocol_ca, CLOUD_ID, "cloud", fleet, now, revocations)
    software_profiles = sorted({d.profile for d in fleet.devices if d.software_rooted})
    _write(gw_dir / "gateway.yaml", yaml.safe_dump({
        "federation": fleet.federation, "gateway": fleet.gateway, "require_attestation": True,
        # Device-key boards are seated on the keys of devices.yaml, marked software-rooted.
        "allow_software_rooted": bool(software_profiles),
        # The device registry: no other id, each TPM device only with its pinned EK.
        "attestation": {"devices": str(gw_dir / "devices.yaml"), "ek_cas": [],
                        "policy": str(gw_dir / "attestation-policy.yaml"), "trust_on_first_use": False},
        "broker": {"url": url, "client_id": f"gateway-{fleet.gateway}", "ca_file": str(out / "ca" / "ca.pem"),
                   "cert_file": str(gw_dir / f"{fleet.gateway}.pem"),
                   "key_file": str(gw_dir / f"{fleet.gateway}.key")},
        "trust": {**gw_trust, "intermediate_key": str(gw_dir / "intermediate.key")}}, sort_keys=False))
    tpm_profiles = sorted({d.profile for d in fleet.devices if not d.software_rooted})
    _write(gw_dir / "attestation-policy.yaml",
           "# Fill each profile's allow-list with `ztfl attest measure --model MODEL` of the released agent.\n"
           + yaml.safe_dump({"hash_alg": "sha256", "pcrs": [23],
                             "allow_software_rooted": bool(software_profiles),
                             "software_rooted_profiles": software_profiles,
                             "allowlist": {p: {23: []} for p in tpm_profiles}}, sort_keys=False))

    registry: list[dict] = []
    for d in fleet.devices:
        ddir = out / "devices" / d.agent_id
        protocol_ca.record_tls(d.agent_id, _issue(ddir, "cert", d.agent_id, fleet, ca_name, ca_key,
                                                  client=True).serial_number)
        os.replace(ddir / "cert.key", ddir / "key.pem")
        _write(ddir / "ca.pem", _pem(ca_cert))
        broker = {"url": url, "client_id": f"agent-{d.agent_id}", "ca_file": str(ddir / "ca.pem"),
                  "cert_file": str(ddir / "cert.pem"), "key_file": str(ddir / "key.pem")}
        entry = {"agent_id": d.agent_id, "profile": d.profile,
                 "root": "software" if d.software_rooted else "tpm"}
        # ESP32: the certified identity key is the device key, which also signs its evidence.
        key, cert, trust = _bundle_identity(ddir, protocol_ca, d.agent_id, "agent", fleet, now, revocations,
                                            "device-key.bin" if d.software_rooted else "identity.key")
        if d.software_rooted:
            seed, public = bytes(key), bytes(key.verify_key)
            entry["device_public_key"] = public.hex()
            _write(ddir / "firmware.json", json.dumps({
                "agent_id": d.agent_id, "profile": d.profile, "federation": fleet.federation,
                "gateway": fleet.gateway, "broker": {"host": fleet.broker_hosts[0], "port": fleet.broker_port,
                                                     "tls": True},
                "ca": "ca.pem", "cert": "cert.pem", "key": "key.pem",
                "device_key": seed.hex(), "device_public_key": public.hex(),
                **firmware_trust(cert, protocol_ca.anchor, revocations)}, indent=1), private=True)
        else:
            if d.agent_id in fleet.ek_pins:
                entry["ek_sha256"] = fleet.ek_pins[d.agent_id]
            _write(ddir / "agent.yaml", yaml.safe_dump({
                "agent_id": d.agent_id, "federation": fleet.federation, "gateway": fleet.gateway,
                "profile": d.profile, "broker": broker, "trust": trust}, sort_keys=False))
            _write(ddir / "attestation.yaml", yaml.safe_dump({
                "tcti": fleet.tcti, "state_dir": "/var/lib/ztfl/attestation", "pcr": 23,
                "ak_handle": "0x81010020"}, sort_keys=False))
        registry.append(entry)
    _write(gw_dir / "devices.yaml", yaml.safe_dump({"devices": registry}, sort_keys=False))
    _write(out / "broker" / "crl.pem", x509_crl(ca_key, ca_cert, protocol_ca.revoked_serials("tls")))
    protocol_ca.save()
    return {"out": str(out), "gateway": fleet.gateway, "devices": registry, "ca_dir": str(protocol_ca.ca_dir),
            "trust_anchor": protocol_ca.anchor.hex()}


def bundle_trust(out: Path, device_id: str | None = None) -> dict:
    """The `trust:` section provisioning wrote for a Linux device (its agent.yaml) or, without an
    id, for the gateway (gateway.yaml)."""
    path = Path(out) / ("gateway/gateway.yaml" if device_id is None else f"devices/{device_id}/agent.yaml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))["trust"]


def firmware_trust(certificate: bytes, anchor: bytes, revocations: bytes) -> dict:
    """The keys of a board's firmware.json that carry its certified identity (ztfw/certs.py)."""
    return {"certificate": base64.b64encode(certificate).decode(), "trust_anchor": anchor.hex(),
            "revocations": base64.b64encode(revocations).decode()}


def revoke(out: Path, ca_dir: Path | None, device_ids: list[str], revocation_days: int = 7) -> dict:
    """Revoke every certificate issued to these devices: the next revocation list (signed by the
    gateway's intermediate, written where the gateway reads it) and the broker's X.509 CRL."""
    out = Path(out).resolve()
    gw_dir = out / "gateway"
    try:
        current = certs.SignedRevocations.decode((gw_dir / "revocations.bin").read_bytes())
        intermediate = SigningKey((gw_dir / "intermediate.key").read_bytes())
        intermediate_cert = (gw_dir / "intermediate.crt").read_bytes()
    except (OSError, ValueError, certs.CertificateError) as exc:
        raise ProvisionError(f"{gw_dir} holds no usable revocation list and intermediate key: {exc}") from None
    protocol_ca = _open_ca(ca_dir, out, current.intermediate.federation)
    if not (protocol_ca.ca_dir / "issued.json").exists():
        raise ProvisionError(f"no CA ledger in {protocol_ca.ca_dir}: give the --ca-dir the fleet was provisioned with")
    try:
        protocol_ca.revoke(device_ids)
    except CaDirError as exc:
        raise ProvisionError(str(exc)) from None
    now = int(time.time())
    signed = signed_revocations(protocol_ca, intermediate, intermediate_cert, current, revocation_days, now)
    ca_key, ca_cert = _tls_ca(protocol_ca.ca_dir, None)
    _write(gw_dir / "revocations.bin", signed.encode())
    _write(out / "broker" / "crl.pem", x509_crl(ca_key, ca_cert, protocol_ca.revoked_serials("tls")))
    protocol_ca.save()
    return {"revoked": protocol_ca.ledger["revoked"], "list_number": signed.revocations.number,
            "identity_serials": list(signed.revocations.revoked), "revocations": str(gw_dir / "revocations.bin"),
            "crl": str(out / "broker" / "crl.pem"),
            "next": "the gateway broadcasts the new list within seconds; restart mosquitto to load the CRL"}


def load_devices(path: str | Path) -> list[dict]:
    """Read gateway/devices.yaml back (for the gateway's registry and EnrolmentAuthority)."""
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    devices = doc.get("devices") if isinstance(doc, dict) else None
    if not isinstance(devices, list):
        raise ProvisionError(f"{path}: expected a 'devices' list")
    for i, d in enumerate(devices):
        if not isinstance(d, dict) or not {"agent_id", "profile", "root"} <= set(d):
            raise ProvisionError(f"{path}: devices[{i}] needs agent_id, profile and root")
    return devices


def register_provisioned(registry, devices: list[dict]) -> dict[str, str]:
    """Put the software-rooted devices of devices.yaml into the gateway's IdentityRegistry and
    return agent id -> profile for EnrolmentAuthority(provisioned=...)."""
    for d in devices:
        if d["root"] == "software":
            try:
                key = bytes.fromhex(d.get("device_public_key", ""))
            except ValueError:
                key = b""
            if len(key) != 32:
                raise ProvisionError(f"device {d['agent_id']}: device_public_key must be 32 bytes of hex")
            registry.add_software_device(d["agent_id"], d["profile"], key)
    return {d["agent_id"]: d["profile"] for d in devices}


# --- CLI -----------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("revoke",),
                        help="revoke: revoke every certificate of the --device IDs of a provisioned --out")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--ca-dir", type=Path, default=None,
                        help="where the CA keys live, outside --out (default: <out>-ca beside it); keep it offline")
    parser.add_argument("--revocation-days", type=int, default=7,
                        help="validity of a revocation list (the gateway renews it before it ends)")
    parser.add_argument("--federation", default="plant")
    parser.add_argument("--gateway", default="fog1")
    parser.add_argument("--device", action="append", default=[], metavar="ID:PROFILE",
                        help="a device and its hardware profile (repeatable), e.g. pi-01:raspberry-pi-4")
    parser.add_argument("--broker-host", action="append", default=[],
                        help="name or address clients use for the broker (repeatable; default localhost, 127.0.0.1)")
    parser.add_argument("--broker-port", type=int, default=8883)
    parser.add_argument("--tcti", default="device:/dev/tpmrm0", help="TCTI written into the agents' configs")
    parser.add_argument("--days", type=int, default=365, help="lifetime of the devices' certificates")
    parser.add_argument("--ek", action="append", default=[], metavar="ID=FILE",
                        help="pin a TPM device's EK (repeatable): the PEM of `ztfl attest ek`, its EK certificate, "
                             "or the pin in hex; without a pin it cannot enrol unless the gateway trusts on first use")


def _ek_pins(items: list[str]) -> dict[str, str]:
    pins = {}
    for item in items:
        agent_id, _, path = item.partition("=")
        if not path:
            raise ProvisionError(f"--ek {item!r}: give it as ID=FILE")
        try:
            pins[agent_id] = read_ek_pin(path)
        except ValueError as exc:
            raise ProvisionError(f"--ek {agent_id}: {exc}") from None
    return pins


def run(args) -> int:
    try:
        if not args.device:
            raise ProvisionError("give at least one --device " + ("ID" if args.action else "ID:PROFILE"))
        if not 1 <= args.revocation_days <= 3650 or not 1 <= args.days <= 3650:
            raise ProvisionError("--days and --revocation-days must be 1..3650")
        if args.action == "revoke":
            summary = revoke(args.out, args.ca_dir, args.device, args.revocation_days)
        else:
            fleet = Fleet(args.federation, args.gateway, [Device.parse(d) for d in args.device],
                          args.broker_host or ["localhost", "127.0.0.1"], args.broker_port, args.tcti, args.days,
                          _ek_pins(args.ek), args.ca_dir, args.revocation_days)
            summary = provision(fleet, args.out)
    except ProvisionError as exc:
        print(f"ztfl provision: {exc}")
        return 2
    print(json.dumps(summary, indent=1))
    if args.action != "revoke":
        print(f"ztfl provision: the CA keys are in {summary['ca_dir']}, outside {summary['out']}: keep that "
              "directory offline (only `ztfl provision` and `ztfl provision revoke` need it)", file=sys.stderr)
    return 0
