"""Property-based fuzzing of the MQTT payloads agents and gateways decode from each other: the
JSON control messages, the protocol envelope, the model, vector and detector blobs, topics and
the retained pipeline. Every input decodes or raises the error class its receiver catches."""
from __future__ import annotations

import json
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ztfl.fednet.messages import MODEL_MAGIC, ModelBlob, WireError
from fuzzkit import decode_typed, inputs_for, peak_allocation
from ztfl.bench.fuzz_targets import by_name

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TARGETS = by_name(["mqtt"])
JSON_TARGETS = [t for t in TARGETS if t.name in ("mqtt.hello", "mqtt.heartbeat", "mqtt.alert",
                                                 "mqtt.roundannounce", "mqtt.roundend")]
FIELDS = ["agent_id", "profile", "model_variant", "mask_bits", "runtime", "samples", "attestation",
          "identity_pk", "state", "round", "model_version", "alerts_total", "records_total", "seq", "label",
          "score", "attempt", "cohort", "model_sha256", "participants", "threshold", "nonce", "deadlines_s",
          "weight_unit", "server_pk", "outcome", "reason", "extra"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@FAST
@given(st.data())
def test_every_payload_decoder_accepts_or_raises_its_typed_error(data):
    target = data.draw(st.sampled_from(TARGETS), label="target")
    decode_typed(target, data.draw(inputs_for(target), label="input"))


@FAST
@given(st.sampled_from(JSON_TARGETS), st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=14))
def test_json_messages_with_any_field_values_decode_or_raise_wire_error(target, doc):
    decode_typed(target, json.dumps(doc).encode())


@FAST
@given(st.sampled_from(JSON_TARGETS), json_values)
def test_json_messages_that_are_not_objects_raise_wire_error(target, doc):
    assert isinstance(decode_typed(target, json.dumps(doc).encode()), WireError)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(JSON_TARGETS + by_name(["mqtt.vector"])), st.integers(1_000, 60_000),
       st.sampled_from("[{"))
def test_deeply_nested_json_is_refused_typed(target, depth, opener):
    payload = (opener * depth).encode() if opener == "[" else b'{"a":' * depth
    if target.name == "mqtt.vector":
        payload = struct.pack(">4sII", b"ZTV1", len(payload), 0) + payload
    assert isinstance(decode_typed(target, payload), WireError)


@FAST
@given(st.lists(st.integers(0, 2**24 - 1), min_size=1, max_size=6), st.binary(max_size=64))
def test_model_blob_with_any_declared_shape_is_refused_without_allocating_it(shape, data):
    head = json.dumps({"variant": "cnn-lstm", "sha256": "00", "tensors": [["w", shape, 0.5]]}).encode()
    payload = struct.pack(">4sIII", MODEL_MAGIC, 1, 1, len(head)) + head + data
    out = decode_typed(by_name(["mqtt.model_blob"])[0], payload)
    if isinstance(out, ModelBlob):
        assert out.tensors["w"].shape == tuple(shape)
    assert peak_allocation(decode_typed, by_name(["mqtt.model_blob"])[0], payload) < 64 * 1024 + 8 * len(payload)


def test_round_announcement_of_a_large_cohort_decodes():
    """The announcement lists every participant: 5,000 agents are well above 64 KiB of JSON."""
    from ztfl.fednet.messages import RoundAnnounce
    ann = RoundAnnounce(1, 0, "cnn-lstm-32", "cnn-lstm", 32, 0, "00" * 32,
                        [[f"sim-{i:05d}", i, "ab" * 32] for i in range(1, 5001)], 15, "cd" * 32, {}, 1, "ef" * 32)
    payload = ann.encode()
    assert len(payload) > 64 * 1024
    assert RoundAnnounce.decode(payload).participants == ann.participants


@FAST
@given(json_values)
def test_pipeline_that_is_not_an_object_is_refused_typed(doc):
    """Found by `ztfl bench fuzz`: a retained pipeline `7` stopped the agent (AttributeError)."""
    from ztfl.fednet.messages import decode_pipeline
    try:
        decode_pipeline(json.dumps(doc).encode())
    except WireError:
        pass
