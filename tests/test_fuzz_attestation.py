"""Property-based fuzzing of the attestation decoders: the framed evidence and enrolment messages
and the TPM structures a verifier parses (TPMS_ATTEST, TPMT_SIGNATURE, TPM2B_PUBLIC). Every
input decodes or raises an AttestationError."""
from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztfl.attestation.errors import AttestationError
from ztfl.attestation.messages import QuoteEvidence
from fuzzkit import decode_typed, inputs_for, peak_allocation
from ztfl.bench.fuzz_targets import boot_event_log, by_name, ima_list, tpms_attest_quote

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TARGETS = by_name(["attestation"])


@FAST
@given(st.data())
def test_every_attestation_decoder_accepts_or_raises_attestation_error(data):
    target = data.draw(st.sampled_from(TARGETS), label="target")
    decode_typed(target, data.draw(inputs_for(target), label="input"))


@FAST
@given(st.binary(min_size=1, max_size=64))
def test_quote_attest_with_any_tail_is_refused_typed(tail):
    out = decode_typed(by_name(["tpm.attest_quote"])[0], tpms_attest_quote() + tail)
    assert isinstance(out, AttestationError)     # trailing bytes are never accepted


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFF))
def test_length_prefixes_are_checked_before_slicing(n16, n8):
    evidence = QuoteEvidence(1, bytes(32), b"\x01", b"\x02", ()).to_bytes()
    # Claim n16 bytes of attest, provide none: refused, no allocation of n16 bytes.
    forged = evidence[:4 + 8 + 33] + struct.pack(">H", n16)
    target = by_name(["attestation.quote_evidence"])[0]
    assert isinstance(decode_typed(target, forged), AttestationError)
    assert peak_allocation(decode_typed, target, forged) < 16 * 1024
    public = by_name(["tpm.public"])[0]
    assert isinstance(decode_typed(public, struct.pack(">HB", n16, n8)), AttestationError)


MEASURED = by_name(["attestation.event_log", "attestation.ima_log", "attestation.quote_evidence",
                    "attestation.receipt"])


@FAST
@given(st.data())
def test_boot_and_ima_logs_refuse_hostile_bytes_typed(data):
    target = data.draw(st.sampled_from(MEASURED), label="target")
    decode_typed(target, data.draw(inputs_for(target), label="input"))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 0xFFFFFFFF))
def test_log_length_fields_are_checked_before_reading(n32):
    # A length claiming up to 4 GiB, followed by nothing: refused without allocating it.
    event_log = by_name(["attestation.event_log"])[0]
    spec = boot_event_log()[:32 + 28]                         # SHA-1-format header, Spec ID body cut short
    ima = by_name(["attestation.ima_log"])[0]
    for target, data in ((event_log, spec[:28] + struct.pack("<I", n32)),
                         (ima, struct.pack("<I", 10) + bytes(20) + struct.pack("<I", n32)),
                         (ima, ima_list()[1][:34] + struct.pack("<I", n32))):         # template data length
        assert isinstance(decode_typed(target, data), AttestationError)
        assert peak_allocation(decode_typed, target, data) < 64 * 1024
