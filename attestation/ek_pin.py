"""EK pins: which endorsement key a TPM device must present, recorded at provisioning.

A pin is the SHA-256 of the EK's SubjectPublicKeyInfo (DER), as hex. A certificate chain to a
manufacturer CA only says "some genuine TPM" (and a swtpm with its own local CA makes such
chains at will); the pin says "this TPM". `ztfl attest ek` reads the EK of the local TPM into a
PEM file; `ztfl provision --ek ID=FILE` and `ztfl attest approve --ek FILE` take that file, a
PEM or DER certificate of the EK, or the pin itself as 64 hex digits.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ztfl.attestation.keys import public_area_to_key
from ztfl.attestation.tpm_wire import parse_public

_PIN = re.compile(r"^[0-9a-f]{64}$")


def key_fingerprint(public_key) -> str:
    """The pin of a `cryptography` public key."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def ek_fingerprint(tpm2b_public: bytes) -> str:
    """The pin of an EK given as a marshalled TPM2B_PUBLIC (what an enrolment request carries)."""
    return key_fingerprint(public_area_to_key(parse_public(tpm2b_public)))


def check_pin(text: str, what: str = "EK pin") -> str:
    pin = text.strip().lower()
    if not _PIN.match(pin):
        raise ValueError(f"{what} must be 64 hex digits (SHA-256 of the EK's SubjectPublicKeyInfo)")
    return pin


def read_ek_pin(path: str | Path) -> str:
    """The pin of the EK in `path`: a PEM public key, a PEM or DER certificate, or a pin in hex."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"EK file {path}: {exc.strerror or exc}") from None
    text = data.decode("ascii", errors="replace")
    if _PIN.match(text.strip().lower()):
        return text.strip().lower()
    loaders = ([lambda d: x509.load_pem_x509_certificate(d).public_key(), serialization.load_pem_public_key]
               if b"-----BEGIN" in data else
               [lambda d: x509.load_der_x509_certificate(d).public_key(), serialization.load_der_public_key])
    for load in loaders:
        try:
            return key_fingerprint(load(data))
        except ValueError:
            continue
    raise ValueError(f"EK file {path}: not a public key, a certificate or a 64-hex-digit pin")
