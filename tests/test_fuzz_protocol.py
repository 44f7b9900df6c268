"""Property-based fuzzing of the protocol decoders: frames (signed, and session-tagged with their
recipient trailers), the round configuration, share values and the key-reuse consistency bodies.
Every input either decodes or raises a ProtocolError; nothing is allocated from a size field
before it is checked against the bytes at hand."""
from __future__ import annotations

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from fuzzkit import decode_typed, inputs_for, peak_allocation
from ztfl.protocol import wire
from ztfl.protocol.errors import MalformedMessage, ProtocolError
from ztfl.bench.fuzz_targets import by_name

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FRAME, PEEK, CONFIG, SHARE, TAGGED, CTAGS, UTAGS = by_name(
    ["protocol.frame", "protocol.peek", "protocol.round_config", "protocol.share_value",
     "protocol.tagged_frame", "protocol.consistency_tags", "protocol.unmask_request_tags"])


@FAST
@given(inputs_for(FRAME))
def test_frame_decoder_accepts_or_raises_protocol_error(data):
    out = decode_typed(FRAME, data)
    if not isinstance(out, ProtocolError):
        # Accepted frames re-encode to the same body, and the trailer is exactly what remains.
        body_len = struct.unpack_from("<I", data, 16)[0]
        assert out.message.body() == data[wire.HEADER_BYTES:wire.HEADER_BYTES + body_len]
        trailer = len(data) - wire.HEADER_BYTES - body_len
        assert trailer == (wire.SIGNATURE_BYTES if out.auth == wire.AUTH_SIGNATURE else
                           wire.TAG_BYTES if out.message.sender else 2 + wire.RECIPIENT_TAG_ENTRY * len(out.tags))


@FAST
@given(inputs_for(TAGGED))
def test_tagged_frames_decode_and_check_their_tag_or_raise_protocol_error(data):
    out = decode_typed(TAGGED, data)
    if not isinstance(out, ProtocolError):
        # Only an unchanged tagged frame (or one whose change the tag does not cover) authenticates.
        assert data[6:8] == b"\x01\x00"


@FAST
@given(inputs_for(CTAGS))
def test_consistency_tags_body_accepts_or_raises_protocol_error(data):
    out = decode_typed(CTAGS, data)
    if not isinstance(out, ProtocolError):
        assert out.body() == data and len(data) == 4 + 18 * len(out.tags)


@FAST
@given(inputs_for(UTAGS))
def test_unmask_request_tags_body_accepts_or_raises_protocol_error(data):
    out = decode_typed(UTAGS, data)
    if not isinstance(out, ProtocolError):
        assert out.body() == data and len(data) == 4 + 18 * len(out.tags) + 2 * len(out.dropped)


@FAST
@given(inputs_for(PEEK))
def test_peek_accepts_or_raises_protocol_error(data):
    decode_typed(PEEK, data)


@FAST
@given(st.one_of(inputs_for(CONFIG), st.binary(min_size=28, max_size=28)))
def test_round_config_decoder_accepts_or_raises_protocol_error(data):
    out = decode_typed(CONFIG, data)
    if not isinstance(out, ProtocolError):
        assert out.encode() == data


@FAST
@given(st.binary(max_size=40))
def test_share_value_decoder_accepts_or_raises_protocol_error(data):
    decode_typed(SHARE, data)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([wire.ROSTER, wire.SHARE_KEYS, wire.SHARES_RELAY, wire.CONSISTENCY_REQUEST,
                        wire.UNMASK_REQUEST, wire.UNMASK_SHARES, wire.UNMASK_ROUND_KEYS, wire.MASKED_INPUT,
                        wire.CONSISTENCY_TAGS, wire.UNMASK_REQUEST_TAGS]),
       st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=64))
def test_announced_counts_allocate_nothing_before_they_are_checked(mtype, count_a, count_b, rest):
    """A body that announces up to 65535 entries (or 2^27 words) but carries a few bytes is refused
    with no allocation proportional to the announced count."""
    if mtype == wire.MASKED_INPUT:
        body = struct.pack("<IB3x", (count_a << 11) | count_b, 64) + rest
    else:
        body = struct.pack("<HH", count_a, count_b) + rest
    frame = struct.pack("<2sBBHHIII", b"ZS", 1, mtype, 1, 0, 7, 3, len(body)) + body + bytes(64)
    peak = peak_allocation(decode_typed, FRAME, frame)
    assert peak < 16 * 1024 + 4 * len(frame)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 0xFFFF), st.binary(max_size=64))
def test_announced_recipient_tags_allocate_nothing_before_they_are_checked(count, rest):
    """A server frame announcing up to 65535 recipient tags over a few bytes is refused with no
    allocation proportional to the count."""
    body = wire.ConsistencyRequest(0, 7, 3, (1, 2)).body()
    frame = struct.pack("<2sBBHHIII", b"ZS", 1, wire.CONSISTENCY_REQUEST, 0, 1, 7, 3, len(body)) + body \
        + struct.pack("<H", count) + rest
    peak = peak_allocation(decode_typed, FRAME, frame)
    assert peak < 16 * 1024 + 4 * len(frame)


def test_announced_body_length_is_checked_before_the_body_is_read():
    # A header claiming a 1 GiB body over 84 bytes: refused, nothing big allocated.
    frame = struct.pack("<2sBBHHIII", b"ZS", 1, wire.MASKED_INPUT, 1, 0, 7, 3, 1 << 30) + bytes(64)
    peak = peak_allocation(decode_typed, FRAME, frame)
    assert isinstance(decode_typed(FRAME, frame), MalformedMessage)
    assert peak < 16 * 1024


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 3000), st.sampled_from([32, 64]))
def test_masked_input_is_parsed_in_place(words, bits):
    msg = wire.MaskedInput(1, 7, 3, bits, np.arange(words, dtype=np.uint64 if bits == 64 else np.uint32))
    frame = msg.encode(SigningKey(bytes(32)))
    peak = peak_allocation(wire.decode_frame, frame)
    # one copy of the frame at most (bytes of a view), never a conversion of the vector
    assert peak < 16 * 1024 + len(frame) * 1.2
