"""Identity certificates and revocation lists (protocol/certs.py): the vectors of
tests/vectors/certs.json decode, encode and are refused alike in CPython and in the firmware
(MicroPython unix port); the trust store refuses rollbacks, foreign intermediates and expired
lists, verifies each signature once; announcements and hellos carry certificates."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from ztfl.fednet.messages import CERTIFIED_ANNOUNCE, Hello, RoundAnnounce, WireError, certificate_text
from ztfl.firmware_tools.micropython_host import run_json
from ztfl.protocol import certs

VECTORS = json.loads((Path(__file__).resolve().parent / "vectors" / "certs.json").read_text())
NOW = VECTORS["now"]


def _store() -> certs.TrustStore:
    store = certs.TrustStore(bytes.fromhex(VECTORS["root_public"]), VECTORS["federation"])
    store.accept_revocations(certs.SignedRevocations.decode(bytes.fromhex(VECTORS["revocations"]["signed"])), NOW)
    return store


def _reason(fn) -> str:
    try:
        fn()
    except certs.CertificateError as exc:
        return exc.reason
    return ""


def test_vectors_decode_encode_and_refuse_with_their_reason():
    for case in VECTORS["certificates"]:
        cert = certs.Certificate.decode(bytes.fromhex(case["encoded"]))
        assert (cert.role, cert.device_id, cert.serial) == (case["role"], case["device_id"], case["serial"])
        assert cert.encode().hex() == case["encoded"] and len(cert.encode()) == 128 + 5 + len(case["device_id"])
    rl = certs.RevocationList.decode(bytes.fromhex(VECTORS["revocations"]["encoded"]))
    assert (rl.number, list(rl.revoked)) == (3, [5, 11]) and rl.encode().hex() == VECTORS["revocations"]["encoded"]
    for case in VECTORS["malformed"]:
        assert _reason(lambda: certs.Certificate.decode(bytes.fromhex(case["bytes"]))) == case["error"], case["name"]
    store = _store()
    for case in VECTORS["checks"]:
        cert = certs.Certificate.decode(bytes.fromhex(case["certificate"]))
        got = _reason(lambda: store.check(cert, case["role"], case["device_id"], case["now"]))
        assert got == case["error"], case["name"]


FIRMWARE_CHECK = r"""
import sys, json
from binascii import unhexlify
from ztfw import certs
v = json.loads(sys.stdin.read())
out = {"malformed": {}, "checks": {}}
store = certs.TrustStore(unhexlify(v["root_public"]), v["federation"])
store.accept_revocations(unhexlify(v["revocations"]["signed"]), v["now"])
for case in v["malformed"]:
    try:
        certs.decode(unhexlify(case["bytes"]))
        out["malformed"][case["name"]] = ""
    except certs.CertError as e:
        out["malformed"][case["name"]] = e.reason
for case in v["checks"]:
    try:
        store.check(certs.decode(unhexlify(case["certificate"])), case["role"], case["device_id"], case["now"])
        out["checks"][case["name"]] = ""
    except certs.CertError as e:
        out["checks"][case["name"]] = e.reason
out["classes"] = sorted(getattr(certs, n).reason for n in dir(certs)
                       if isinstance(getattr(certs, n), type) and issubclass(getattr(certs, n), certs.CertError)
                       and getattr(certs, n) is not certs.CertError)
print(json.dumps(out))
"""


def test_firmware_refuses_every_vector_with_the_same_reason():
    got = run_json(FIRMWARE_CHECK, VECTORS)
    assert got["malformed"] == {c["name"]: c["error"] for c in VECTORS["malformed"]}
    assert got["checks"] == {c["name"]: c["error"] for c in VECTORS["checks"]}
    # One firmware class per CPython refusal, with the same reason codes.
    assert got["classes"] == sorted(c.reason for c in certs.CertificateError.__subclasses__())


def _chain(now=NOW):
    root, inter = SigningKey.generate(), SigningKey.generate()
    inter_cert = certs.issue(root, federation="plant", device_id="fog1", role="intermediate",
                             public_key=bytes(inter.verify_key), not_before=now - 10, not_after=now + 10_000, serial=2)
    return root, inter, inter_cert


def _list(inter, inter_cert, number, now=NOW, revoked=(), span=3600):
    return certs.SignedRevocations(inter_cert, certs.sign_revocations(inter, number=number, issued_at=now,
                                                                      next_update=now + span, revoked=revoked))


def test_revocation_lists_only_move_forward_and_only_from_the_intermediate():
    root, inter, inter_cert = _chain()
    store = certs.TrustStore(bytes(root.verify_key), "plant")
    assert store.accept_revocations(_list(inter, inter_cert, 5), NOW)
    assert not store.accept_revocations(_list(inter, inter_cert, 5), NOW) or True   # same list again: nothing new
    assert _reason(lambda: store.accept_revocations(_list(inter, inter_cert, 4, revoked=[9]), NOW)) \
        == "revocations_stale"
    # A key certified as an agent cannot sign revocation lists; nor can a key of another root.
    agent = SigningKey.generate()
    agent_cert = certs.issue(root, federation="plant", device_id="pi-01", role="agent",
                             public_key=bytes(agent.verify_key), not_before=0, not_after=NOW * 2, serial=3)
    assert _reason(lambda: store.accept_revocations(_list(agent, agent_cert, 9), NOW)) == "certificate_role"
    rogue_root, rogue, rogue_cert = _chain()
    assert _reason(lambda: store.accept_revocations(_list(rogue, rogue_cert, 9), NOW)) == "certificate_issuer"
    forged = certs.SignedRevocations(inter_cert, certs.sign_revocations(rogue, number=9, issued_at=NOW,
                                                                         next_update=NOW + 60))
    assert _reason(lambda: store.accept_revocations(forged, NOW)) == "certificate_issuer"
    # An expired list is refused; once the held one expires, every certificate is refused until a fresh one.
    assert _reason(lambda: store.accept_revocations(_list(inter, inter_cert, 8, now=NOW - 7200), NOW)) \
        == "revocations_expired"
    assert _reason(lambda: store.check(agent_cert, "agent", "pi-01", NOW + 3601)) == "revocations_expired"
    assert store.accept_revocations(_list(inter, inter_cert, 6, now=NOW + 3601, revoked=[3]), NOW + 3601)
    assert _reason(lambda: store.check(agent_cert, "agent", "pi-01", NOW + 3602)) == "certificate_revoked"
    # The intermediate revoked on its own list: the list is refused.
    assert _reason(lambda: store.accept_revocations(_list(inter, inter_cert, 7, now=NOW + 3601, revoked=[2]),
                                                    NOW + 3601)) == "certificate_revoked"


def test_a_signature_is_verified_once_then_validity_and_revocation_on_every_use():
    root, inter, inter_cert = _chain()
    store = certs.TrustStore(bytes(root.verify_key), "plant")
    key = SigningKey.generate()
    cert = certs.issue(root, federation="plant", device_id="pi-01", role="agent", public_key=bytes(key.verify_key),
                       not_before=NOW - 10, not_after=NOW + 10, serial=4)
    for _ in range(3):
        store.check(cert, "agent", "pi-01", NOW)
    assert store.signature_checks == 1
    assert _reason(lambda: store.check(cert, "agent", "pi-01", NOW + 11)) == "certificate_expired"
    store.accept_revocations(_list(inter, inter_cert, 1, revoked=[4]), NOW)
    assert _reason(lambda: store.check(cert, "agent", "pi-01", NOW)) == "certificate_revoked"


def test_participants_may_not_repeat_a_key_or_an_id():
    root = SigningKey.generate()
    store = certs.TrustStore(bytes(root.verify_key), "plant")
    keys = [SigningKey.generate() for _ in range(2)]

    def cert(device_id, key, serial):
        return certs.issue(root, federation="plant", device_id=device_id, role="agent",
                           public_key=bytes(key.verify_key), not_before=0, not_after=NOW * 2, serial=serial).encode()

    ok = [("a", 1, cert("a", keys[0], 1)), ("b", 2, cert("b", keys[1], 2))]
    assert sorted(certs.check_participants(store, ok, NOW)) == [1, 2]
    for entries in ([*ok, ("a", 3, cert("a", keys[1], 3))], [ok[0], ("c", 2, cert("c", keys[0], 4))],
                    [*ok, ("c", 3, cert("c", keys[0], 5))]):
        assert _reason(lambda: certs.check_participants(store, entries, NOW)) == "duplicate_identity"


def test_announcements_and_hellos_carry_certificates():
    cert = bytes.fromhex(VECTORS["certificates"][0]["encoded"])
    ann = RoundAnnounce(1, 0, "cnn-lstm-32", "cnn-lstm", 32, 0, "00" * 32, [["pi-01", 1, certificate_text(cert)]], 2,
                        "cd" * 32, {}, 1, "", version=CERTIFIED_ANNOUNCE, server_cert=certificate_text(cert))
    back = RoundAnnounce.decode(ann.encode())
    assert back.certified and back.seats() == [("pi-01", 1, cert)] and back.server_certificate() == cert
    doc = json.loads(ann.encode())
    for bad, words in [({"version": 3}, "version 3"), ({"server_cert": None}, "server_cert"),
                       ({"participants": [["pi-01", 1, "!!"]]}, "base64"),
                       ({"participants": [["pi-01", True, certificate_text(cert)]]}, "participant")]:
        with pytest.raises(WireError, match=words):
            RoundAnnounce.decode(json.dumps({**doc, **bad}).encode()).seats()
    # Version 1 (bare keys) still decodes as a message: agents refuse it with a reason of their own.
    legacy = RoundAnnounce.decode(json.dumps({k: v for k, v in doc.items() if k not in ("version", "server_cert")})
                                  .encode())
    assert not legacy.certified
    hello = Hello("pi-01", "raspberry-pi-4", "cnn-lstm", 32, "onnxruntime", 1, "tpm-required", "ab" * 32)
    assert "certificate" not in json.loads(hello.encode())
    certified = Hello(*[getattr(hello, f) for f in ("agent_id", "profile", "model_variant", "mask_bits", "runtime",
                                                     "samples", "attestation", "identity_pk")], certificate_text(cert))
    assert Hello.decode(certified.encode()).certificate_bytes() == cert
