"""Agent/gateway payloads: round trips, and every malformed payload refused with a WireError."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ztfl.fednet.topics import Topics, TopicError
from ztfl.fednet.messages import Alert, Envelope, Hello, ModelBlob, RoundAnnounce, WireError


def _hello() -> Hello:
    return Hello("rpi4-1", "raspberry-pi-4", "cnn-lstm", 64, "onnxruntime", 120, "tpm-required", "ab" * 32)


def test_json_messages_round_trip_and_refuse_bad_fields():
    assert Hello.decode(_hello().encode()) == _hello()
    doc = json.loads(_hello().encode())
    for bad, why in [({**doc, "mask_bits": "64"}, "mask_bits"), ({**doc, "mask_bits": True}, "mask_bits"),
                     ({**doc, "extra": 1}, "extra"), ({k: v for k, v in doc.items() if k != "samples"}, "samples")]:
        with pytest.raises(WireError, match=why):
            Hello.decode(json.dumps(bad).encode())
    with pytest.raises(WireError, match="limit"):
        Alert.decode(b"{" + b" " * 70000 + b"}")
    with pytest.raises(WireError, match="JSON"):
        Alert.decode(b"\xff\xfe")


def test_envelope_round_trip_and_truncations():
    env = Envelope(7, 1, "cnn-lstm-64", "masked", b"\x01" * 100)
    data = env.encode()
    assert Envelope.decode(data, 1000) == env
    for cut in range(len(data)):
        with pytest.raises(WireError):
            Envelope.decode(data[:cut], 1000)
    with pytest.raises(WireError, match="does not match"):
        Envelope.decode(data + b"\x00", 1000)
    with pytest.raises(WireError, match="limit"):
        Envelope.decode(data, 50)


def test_model_blob_is_int8_on_the_wire_and_checked():
    rng = np.random.default_rng(0)
    tensors = {"w": rng.normal(size=(16, 8)).astype(np.float32), "b": np.zeros(8, np.float32)}
    data = ModelBlob(3, "cnn-lstm", "00" * 32, tensors).encode()
    assert len(data) < 16 * 8 + 8 + 400          # one byte per weight plus a small header
    back = ModelBlob.decode(data, 1 << 20)
    assert back.version == 3
    assert np.max(np.abs(back.tensors["w"] - tensors["w"])) <= np.max(np.abs(tensors["w"])) / 127 + 1e-6
    with pytest.raises(WireError, match="trailing"):
        ModelBlob.decode(data + b"\x00", 1 << 20)
    with pytest.raises(WireError, match="past the end"):
        ModelBlob.decode(data[:-1], 1 << 20)
    with pytest.raises(WireError, match="limit"):
        ModelBlob.decode(data, 10)


def test_topics_parse_only_our_layout():
    t = Topics("plant", "fog1")
    assert t.agent("a1", "masked") == "ztfl/plant/fog1/agents/a1/masked"
    assert t.parse_agent_topic("ztfl/plant/fog1/agents/a1/masked") == ("a1", "masked")
    for bad in ("ztfl/plant/fog2/agents/a1/masked", "ztfl/plant/fog1/agents/a1/x", "ztfl/plant/fog1/agents/a/b/masked"):
        with pytest.raises(TopicError):
            t.parse_agent_topic(bad)
    with pytest.raises(TopicError):
        t.agent("../a", "hello")
    assert t.parse_broadcast_topic("ztfl/plant/fog1/broadcast/to/a1/protocol") == "protocol"
