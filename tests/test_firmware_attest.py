"""The firmware's device-key evidence (real MicroPython) is accepted by the gateway-side
Verifier for the nonce, round and protocol keys it was made for, and refused otherwise."""
from __future__ import annotations

import os

import pytest

from ztfl.attestation import AttestationPolicy, IdentityRegistry, Verifier
from ztfl.attestation.errors import AttestationError
from ztfl.attestation.software_identity import new_device_key
from ztfl.firmware_tools.micropython_host import run_json

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
