"""Decoders of peer bytes (TPM structures and ztfl attestation messages), the policy loader
and the nonce book, without a TPM: only typed errors, whole buffers consumed, sizes checked."""
from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from ztfl.attestation import errors
from ztfl.attestation.binding import qualifying_data, software_quote_message
from ztfl.attestation.messages import (ActivationResponse, EnrolmentChallenge, EnrolmentRequest, QuoteEvidence,
                                  SoftwareEvidence, decode_evidence)
from ztfl.attestation.nonces import NonceBook
from ztfl.attestation.policy import AttestationPolicy
from ztfl.attestation.registry import TPM_ROOTED, EnrolledIdentity, IdentityRegistry
from ztfl.attestation.tpm_wire import (ALG_ECC, ALG_ECDSA, ALG_NULL, ALG_SHA256, ECC_NIST_P256, FIXED_PARENT, FIXED_TPM,
                                  RESTRICTED, SENSITIVE_DATA_ORIGIN, SIGN_ENCRYPT, TPM_GENERATED_VALUE,
                                  TPM_ST_ATTEST_QUOTE, USER_WITH_AUTH, PcrSelection, parse_public,
                                  parse_quote_attest, parse_signature, qualified_name_under_endorsement)
from ztfl.attestation.verifier import Verifier

TPM_ERRORS = (errors.AttestFormatError, errors.SignatureFormatError, errors.PublicKeyFormatError)


def tpm2b(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def quote_attest(extra: bytes = b"\x11" * 32, selection: PcrSelection = PcrSelection(ALG_SHA256, (0, 23)),
                 magic: int = TPM_GENERATED_VALUE, kind: int = TPM_ST_ATTEST_QUOTE) -> bytes:
    return (struct.pack(">IH", magic, kind) + tpm2b(b"\x00\x0b" + b"\x22" * 32) + tpm2b(extra)
            + struct.pack(">QIIB", 1234, 2, 1, 1) + struct.pack(">Q", 99)
            + selection.marshal() + tpm2b(b"\x33" * 32))


def test_quote_attest_fields_are_read_at_their_offsets():
    a = parse_quote_attest(quote_attest())
    assert a.extra_data == b"\x11" * 32 and a.qualified_signer == b"\x00\x0b" + b"\x22" * 32
    assert (a.clock_info.clock, a.clock_info.reset_count, a.clock_info.restart_count, a.clock_info.safe) == \
        (1234, 2, 1, True)
    assert a.firmware_version == 99 and a.pcr_selection == (PcrSelection(ALG_SHA256, (0, 23)),)
    assert a.pcr_digest == b"\x33" * 32


@pytest.mark.parametrize("data, words", [
    (quote_attest(magic=0xFF544348), "magic"),
    (quote_attest(kind=0x8017), "TPM_ST_ATTEST_QUOTE"),
    (quote_attest() + b"\x00", "trailing"),
    (quote_attest()[:-1], "truncated"),
    (quote_attest(extra=b"\x00" * 65), "extraData of 65 bytes"),
])
def test_quote_attest_refusals_name_the_cause(data, words):
    with pytest.raises(errors.AttestFormatError, match=words):
        parse_quote_attest(data)


def test_signature_must_be_ecdsa_with_r_and_s():
    good = struct.pack(">HH", 0x0018, ALG_SHA256) + tpm2b(b"\x01" * 32) + tpm2b(b"\x02" * 32)
    assert parse_signature(good).r == int.from_bytes(b"\x01" * 32, "big")
    for bad in (good + b"\x00", good[:-1], struct.pack(">HH", 0x0014, ALG_SHA256) + tpm2b(b"\x01" * 256),
                struct.pack(">HH", 0x0018, ALG_SHA256) + tpm2b(b"") + tpm2b(b"\x02" * 32)):
        with pytest.raises(errors.SignatureFormatError):
            parse_signature(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_tpm_parsers_raise_only_typed_errors(data):
    for parser in (parse_quote_attest, parse_signature, parse_public):
        try:
            parser(data)
        except TPM_ERRORS:
            pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(quote_attest()) - 1), st.binary(min_size=1, max_size=4))
def test_corrupted_quote_attest_parses_or_raises_attest_format(position, junk):
    data = bytearray(quote_attest())
    data[position:position + len(junk)] = junk
    try:
        parse_quote_attest(bytes(data))
    except errors.AttestFormatError:
        pass


def evidence() -> QuoteEvidence:
    return QuoteEvidence(7, b"\x01" * 32, quote_attest(), b"\x00\x18" + b"\x05" * 70, (b"\x00" * 32, b"\x09" * 32))


def test_messages_round_trip():
    for msg in (evidence(), SoftwareEvidence(3, b"\x02" * 16, b"\x03" * 64),
                EnrolmentRequest("pi-01", "raspberry-pi-4", b"\x01" * 300, b"\x02" * 90, b"\x30" * 800),
                EnrolmentChallenge(b"\x04" * 70, b"\x05" * 258), ActivationResponse("pi-01", b"\x06" * 32)):
        assert type(msg).from_bytes(msg.to_bytes()) == msg
    assert decode_evidence(evidence().to_bytes()) == evidence()


@pytest.mark.parametrize("mutate, words", [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\x00", "trailing"),
    (lambda b: b"ZQT\x09" + b[4:], "tag"),
    (lambda b: b[:12] + b"\x08" + b[13:], "nonce of 8 bytes"),       # nonce under 128 bits
    (lambda b: b"X" * 70_000, "exceeds"),
])
def test_evidence_decoder_refusals_name_the_field(mutate, words):
    with pytest.raises(errors.MalformedEvidence, match=words):
        QuoteEvidence.from_bytes(mutate(evidence().to_bytes()))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_message_decoders_raise_only_malformed_evidence(data):
    for decoder in (decode_evidence, QuoteEvidence.from_bytes, SoftwareEvidence.from_bytes,
                    EnrolmentRequest.from_bytes, EnrolmentChallenge.from_bytes, ActivationResponse.from_bytes):
        try:
            decoder(data)
        except errors.MalformedEvidence:
            pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 400), st.binary(min_size=1, max_size=3))
def test_corrupted_evidence_decodes_or_raises_malformed(position, junk):
    data = bytearray(evidence().to_bytes())
    position %= len(data)
    data[position:position + len(junk)] = junk
    try:
        QuoteEvidence.from_bytes(bytes(data))
    except errors.MalformedEvidence:
        pass


def test_qualifying_data_is_sha256_of_nonce_round_and_keys():
    nonce, keys = bytes(range(32)), b"\xaa" * 64
    assert qualifying_data(nonce, 5, keys) == hashlib.sha256(nonce + b"\x00" * 7 + b"\x05" + keys).digest()
    assert software_quote_message(nonce, 5, keys).endswith(qualifying_data(nonce, 5, keys))
    assert qualifying_data(nonce, 5, keys) != qualifying_data(nonce, 6, keys)
    with pytest.raises(ValueError):
        qualifying_data(b"\x00" * 15, 1, keys)


def test_pcr_selection_text_and_marshalling():
    sel = PcrSelection.parse("sha256:23,0,16")
    assert sel.pcrs == (0, 16, 23) and str(sel) == "sha256:0,16,23"
    assert sel.marshal() == struct.pack(">IHB", 1, ALG_SHA256, 3) + bytes([0x01, 0x00, 0x81])
    for bad in ("sha256:", "md5:1", "sha256:40", "sha256:x"):
        with pytest.raises(ValueError):
            PcrSelection.parse(bad)


def test_policy_from_mapping_names_the_bad_key():
    good = AttestationPolicy.from_mapping({"hash_alg": "sha256", "pcrs": [23], "allow_software_rooted": True,
                                           "software_rooted_profiles": ["esp32"],
                                           "allowlist": {"raspberry-pi-4": {23: ["ab" * 32]}}})
    assert good.allowlist["raspberry-pi-4"][23] == frozenset({b"\xab" * 32})
    assert good.software_rooted_allowed("esp32") and not good.software_rooted_allowed("raspberry-pi-4")
    cases = [({"hash_alg": "md5"}, "hash_alg"), ({"pcrs": [30]}, "pcrs"), ({"pcrs": "23"}, "pcrs"),
             ({"colour": 1}, "colour"), ({"allow_software_rooted": "yes"}, "allow_software_rooted"),
             ({"allowlist": {"pi": {23: ["zz"]}}}, "allowlist.pi.23"),
             ({"allowlist": {"pi": {16: ["ab" * 32]}}}, r"allowlist.pi: no allowed values for PCR \[23\]"),
             ({"allowlist": {"pi": {23: ["ab" * 20]}}}, "20-byte value"),
             ({"nonce_ttl_s": 0}, "nonce_ttl_s")]
    for doc, words in cases:
        with pytest.raises(errors.PolicyError, match=words):
            AttestationPolicy.from_mapping(doc)


def test_nonces_are_fresh_single_use_and_bound_to_round_and_agent():
    now = [0.0]
    book = NonceBook(ttl_s=10, clock=lambda: now[0])
    a, b = book.issue(1), book.issue(1)
    assert len(a) == 32 and a != b
    book.consume(a, "pi-01", 1)
    book.consume(a, "pi-02", 1)                  # a round nonce serves every agent once
    with pytest.raises(errors.ReplayedNonce):
        book.consume(a, "pi-01", 1)
    with pytest.raises(errors.StaleNonce):
        book.check(b, "pi-01", 2)
    with pytest.raises(errors.UnknownNonce):
        book.check(b"\x00" * 32, "pi-01", 1)
    mine = book.issue(1, agent_id="pi-03")
    with pytest.raises(errors.UnknownNonce):
        book.check(mine, "pi-01", 1)
    book.check(mine, "pi-03", 1)
    now[0] = 11
    with pytest.raises(errors.StaleNonce):
        book.check(b, "pi-01", 1)
    with pytest.raises(ValueError):
        NonceBook(nonce_bytes=8)


# --- the verifier on synthetic quotes (no TPM: a software P-256 key stands in for the AK) ------

def _software_ak():
    key = ec.generate_private_key(ec.SECP256R1())
    nums = key.public_key().public_numbers()
    attrs = RESTRICTED | SIGN_ENCRYPT | FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | USER_WITH_AUTH
    tpmt = (struct.pack(">HHI", ALG_ECC, ALG_SHA256, attrs) + tpm2b(b"")
            + struct.pack(">HHHHH", ALG_NULL, ALG_ECDSA, ALG_SHA256, ECC_NIST_P256, ALG_NULL)
            + tpm2b(nums.x.to_bytes(32, "big")) + tpm2b(nums.y.to_bytes(32, "big")))
    return key, tpm2b(tpmt)


def _synthetic_setup():
    key, public = _software_ak()
    name = parse_public(public).name
    registry = IdentityRegistry()
    registry.put(EnrolledIdentity("pi-01", "raspberry-pi-4", TPM_ROOTED, active=True, ak_public=public,
                                  ak_name=name, ak_qualified_name=qualified_name_under_endorsement(name)))
    pcr23 = hashlib.sha256(b"pcr").digest()
    policy = AttestationPolicy(allowlist={"raspberry-pi-4": {23: frozenset({pcr23})}})
    verifier = Verifier(registry, policy)
    nonce = verifier.issue_nonce(1)
    body = (struct.pack(">IH", TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE)
            + tpm2b(qualified_name_under_endorsement(name)) + tpm2b(qualifying_data(nonce, 1, b"keys"))
            + struct.pack(">QIIB", 5000, 1, 0, 1) + struct.pack(">Q", 1)
            + PcrSelection(ALG_SHA256, (23,)).marshal() + tpm2b(hashlib.sha256(pcr23).digest()))
    r, s = decode_dss_signature(key.sign(body, ec.ECDSA(hashes.SHA256())))
    sig = struct.pack(">HH", 0x0018, ALG_SHA256) + tpm2b(r.to_bytes(32, "big")) + tpm2b(s.to_bytes(32, "big"))
    return verifier, QuoteEvidence(1, nonce, body, sig, (pcr23,)).to_bytes()


def test_synthetic_quote_is_accepted_once():
    verifier, evidence = _synthetic_setup()
    seat = verifier.verify("pi-01", 1, b"keys", evidence)
    assert seat.pcr_values == {23: QuoteEvidence.from_bytes(evidence).pcr_values[0]}
    with pytest.raises(errors.ReplayedNonce):
        verifier.verify("pi-01", 1, b"keys", evidence)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_change_to_the_evidence_bytes_is_refused_with_a_typed_error(data):
    verifier, evidence = _synthetic_setup()
    position = data.draw(st.integers(0, len(evidence) - 1))
    junk = data.draw(st.binary(min_size=1, max_size=4))
    mutated = bytearray(evidence)
    mutated[position:position + len(junk)] = junk
    mutated = bytes(mutated)
    if mutated == evidence:
        return
    try:
        verifier.verify("pi-01", 1, b"keys", mutated)
    except errors.AttestationError:
        return
    # Only changes outside what is signed or checked could pass: there are none.
    raise AssertionError(f"mutated evidence accepted (bytes {position}..{position + len(junk)})")
