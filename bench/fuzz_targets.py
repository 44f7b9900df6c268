"""Every decoder that reads bytes from a peer or from a file, with valid seed inputs.

A target names the decoder, the exact error classes its caller handles (anything else raised on
bad input is a crash: it would escape the caller's handler and stop the agent or the gateway),
and a few valid encodings that the mutation engine starts from. Seeds are built here through the
project's own encoders, so the fuzzer starts inside each format rather than at random bytes.
"""
from __future__ import annotations

import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Target:
    name: str
    decode: Callable[[bytes], object]
    errors: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]
    group: str


# --- protocol/ ---------------------------------------------------------------------------------
def _protocol_seeds() -> list[bytes]:
    import numpy as np
    from nacl.signing import SigningKey

    from ztfl.protocol import wire
    from ztfl.protocol.config import RoundConfig

    key = SigningKey(bytes(range(32)))
    cfg = RoundConfig(dim=8, threshold=3, max_clients=4)
    k32, sig = bytes(range(32)), bytes(64)
    ct = bytes(range(wire.CIPHERTEXT_BYTES))
    share = (5).to_bytes(33, "little")
    msgs = [
        wire.RoundConfigMessage(0, 7, 3, cfg),
        wire.AdvertiseKeys(1, 7, 3, cfg.digest(), k32, k32[::-1]),
        wire.Roster(0, 7, 3, tuple(wire.RosterEntry(i, k32, k32, sig) for i in (1, 2, 4))),
        wire.ShareKeys(1, 7, 3, (wire.EncryptedShare(2, ct), wire.EncryptedShare(4, ct))),
        wire.SharesRelay(0, 7, 3, (wire.EncryptedShare(2, ct),)),
        wire.MaskedInput(1, 7, 3, 32, np.arange(9, dtype=np.uint32)),
        wire.MaskedInput(1, 7, 3, 64, np.arange(9, dtype=np.uint64)),
        wire.ConsistencyRequest(0, 7, 3, (1, 2, 4)),
        wire.ConsistencySignature(2, 7, 3, sig),
        wire.UnmaskRequest(0, 7, 3, ((1, sig), (2, sig)), (3,)),
        wire.UnmaskShares(2, 7, 3, ((1, share), (2, share)), ((3, share),)),
        wire.UnmaskRoundKeys(2, 7, 3, ((1, share),), ((3, bytes(16)),)),
        wire.Abort(0, 7, 3, wire.ABORT_TIMEOUT),
        wire.ConsistencyTags(2, 7, 3, ((1, bytes(16)), (4, bytes(range(16))))),
        wire.UnmaskRequestTags(0, 7, 3, ((1, bytes(16)), (4, bytes(range(16)))), (3,)),
    ]
    return [m.encode(key) for m in msgs]


SESSION_KEY = bytes(range(32, 64))


def _tagged_seeds() -> list[bytes]:
    """Key-reuse frames (docs/protocol.md 1.8): a client's with its tag, the server's with one tag
    per recipient (one and several)."""
    import numpy as np

    from ztfl.protocol import wire

    k32, sig = bytes(range(32)), bytes(64)
    akeys = {1: SESSION_KEY, 2: bytes(32), 4: bytes(range(32))}
    return [
        wire.MaskedInput(1, 7, 3, 32, np.arange(9, dtype=np.uint32)).encode_tagged(SESSION_KEY),
        wire.ConsistencyTags(2, 7, 3, ((1, bytes(16)), (4, bytes(range(16))))).encode_tagged(SESSION_KEY),
        wire.UnmaskRoundKeys(2, 7, 3, (), ((3, bytes(16)),)).encode_tagged(SESSION_KEY),
        wire.Roster(0, 7, 3, tuple(wire.RosterEntry(i, k32, k32, sig) for i in (1, 2, 4))).encode_for(akeys),
        wire.ConsistencyRequest(0, 7, 3, (1, 2, 4)).encode_for(akeys),
        wire.UnmaskRequestTags(0, 7, 3, ((2, bytes(16)),), (3,)).encode_for({1: SESSION_KEY}),
    ]


def _tagged_frame(data: bytes):
    """A key-reuse frame as client 1 handles it: parsed, then its own tag looked up and checked
    (server frames), or the sender's tag checked (client frames)."""
    from ztfl.protocol.wire import SERVER_ID, decode_frame
    frame = decode_frame(data, max_recipients=8)
    if frame.message.sender == SERVER_ID:
        return frame.verify_recipient(1, SESSION_KEY)
    return frame.verify_tag(SESSION_KEY)


def _body_parser(cls_name: str) -> Callable[[bytes], object]:
    def decode(data: bytes):
        from ztfl.protocol import wire
        return getattr(wire, cls_name).parse(1, 7, 3, data)
    decode.__name__ = f"{cls_name}.parse"
    return decode


def _consistency_tags_seeds() -> list[bytes]:
    from ztfl.protocol import wire
    return [wire.ConsistencyTags(2, 7, 3, ((1, bytes(16)), (4, bytes(range(16))))).body(),
            wire.ConsistencyTags(2, 7, 3, ()).body()]


def _unmask_request_tags_seeds() -> list[bytes]:
    from ztfl.protocol import wire
    return [wire.UnmaskRequestTags(0, 7, 3, ((2, bytes(16)), (9, bytes(range(16)))), (3, 5)).body(),
            wire.UnmaskRequestTags(0, 7, 3, (), (3,)).body()]


def _decode_frame(data: bytes):
    from ztfl.protocol.wire import decode_frame
    return decode_frame(data)


def _peek(data: bytes):
    from ztfl.protocol.wire import peek
    return peek(data)


def _round_config(data: bytes):
    from ztfl.protocol.config import RoundConfig
    return RoundConfig.decode(data)


def _round_config_seeds() -> list[bytes]:
    from ztfl.protocol.config import RoundConfig
    return [RoundConfig(dim=8, threshold=3, max_clients=4).encode(),
            RoundConfig(dim=100_000, threshold=12, max_clients=1000, neighbors=16, mask_bits=64,
                        frac_bits=24, clip_q=8 << 24).encode()]


def _share_value(data: bytes):
    from ztfl.protocol.shamir import decode_y
    return decode_y(data)


# --- attestation/ ------------------------------------------------------------------------------
def tpms_attest_quote(extra: bytes = bytes(32), pcr_digest: bytes = bytes(32)) -> bytes:
    """A well-formed marshalled TPMS_ATTEST of type quote (sha256:0,16,23)."""
    signer = struct.pack(">H", 0x000B) + bytes(range(32))
    return (struct.pack(">IH", 0xFF544347, 0x8018) + struct.pack(">H", len(signer)) + signer
            + struct.pack(">H", len(extra)) + extra + struct.pack(">QIIB", 123456, 1, 2, 1)
            + struct.pack(">Q", 0x2023) + struct.pack(">IHB", 1, 0x000B, 3) + bytes([1, 0, 0x81])
            + struct.pack(">H", len(pcr_digest)) + pcr_digest)


def tpmt_signature_ecdsa() -> bytes:
    return struct.pack(">HH", 0x0018, 0x000B) + struct.pack(">H", 32) + bytes(range(1, 33)) \
        + struct.pack(">H", 32) + bytes(range(2, 34))


def tpm2b_public_ecc() -> bytes:
    inner = (struct.pack(">HHI", 0x0023, 0x000B, 0x00050072) + struct.pack(">H", 0)
             + struct.pack(">H", 0x0010) + struct.pack(">HH", 0x0018, 0x000B) + struct.pack(">HH", 0x0003, 0x0010)
             + struct.pack(">H", 32) + bytes(range(32)) + struct.pack(">H", 32) + bytes(range(32, 64)))
    return struct.pack(">H", len(inner)) + inner


def tpm2b_public_rsa() -> bytes:
    inner = (struct.pack(">HHI", 0x0001, 0x000B, 0x000300B2) + struct.pack(">H", 32) + bytes(32)
             + struct.pack(">HHH", 0x0006, 128, 0x0043) + struct.pack(">H", 0x0010)
             + struct.pack(">HI", 2048, 0) + struct.pack(">H", 256) + bytes(range(256)))
    return struct.pack(">H", len(inner)) + inner


def _evidence_seeds() -> list[bytes]:
    from ztfl.attestation.messages import AttestationReceipt, QuoteEvidence, SoftwareEvidence
    return [QuoteEvidence(9, bytes(32), tpms_attest_quote(), tpmt_signature_ecdsa(),
                          (bytes(32), bytes(32), bytes(32))).to_bytes(),
            QuoteEvidence(9, bytes(32), tpms_attest_quote(), tpmt_signature_ecdsa(), (bytes(32),),
                          boot_event_log(), 1, b"".join(ima_list()[1:])).to_bytes(),
            SoftwareEvidence(9, bytes(32), bytes(64)).to_bytes(),
            AttestationReceipt(9, 120).to_bytes()]


def boot_event_log() -> bytes:
    """A small crypto-agile TCG2 log (SHA-1 and SHA-256 banks): separators, a boot application,
    the SecureBoot variable."""
    import hashlib

    from ztfl.attestation.boot_policy import EFI_GLOBAL_VARIABLE
    from ztfl.attestation.eventlog import encode_event, encode_spec_id
    from ztfl.attestation.tpm_wire import ALG_SHA1, ALG_SHA256

    def event(pcr: int, kind: int, data: bytes) -> bytes:
        return encode_event(pcr, kind, {ALG_SHA1: hashlib.sha1(data).digest(),
                                        ALG_SHA256: hashlib.sha256(data).digest()}, data)
    secure_boot = EFI_GLOBAL_VARIABLE + struct.pack("<QQ", 10, 1) + "SecureBoot".encode("utf-16-le") + b"\x01"
    return (encode_spec_id({ALG_SHA1: 20, ALG_SHA256: 32}) + event(7, 0x80000001, secure_boot)
            + b"".join(event(pcr, 4, bytes(4)) for pcr in range(8)) + event(4, 0x80000003, b"shim"))


def ima_list() -> list[bytes]:
    """IMA entries (ima-ng, ima-sig) as binary_runtime_measurements holds them."""
    import hashlib

    from ztfl.attestation.ima import encode_ima_entry
    return [encode_ima_entry("boot_aggregate", bytes(32)),
            encode_ima_entry("/usr/bin/python3.11", hashlib.sha256(b"python").digest()),
            encode_ima_entry("/opt/ztfl/agent/update.py", hashlib.sha256(b"update").digest(), template="ima-sig"),
            encode_ima_entry("/tmp/x", bytes(20), hash_alg="sha1", violation=True)]


def _event_log(data: bytes):
    """Parse, replay every bank, read the Secure Boot state: what the verifier does with a log."""
    from ztfl.attestation.boot_policy import secure_boot_state
    from ztfl.attestation.eventlog import parse_event_log, replay
    log = parse_event_log(data)
    return [replay(log, bank) for bank in log.banks()], secure_boot_state(log)


def _ima_entries(data: bytes):
    from ztfl.attestation.ima import parse_ima_log, replay_ima
    entries = parse_ima_log(data, 3)
    return replay_ima(entries, "sha1"), replay_ima(entries, "sha256")


def _enrolment_seeds() -> list[bytes]:
    from ztfl.attestation.messages import ActivationResponse, EnrolmentChallenge, EnrolmentRequest
    return [EnrolmentRequest("pi-01", "raspberry-pi-4", tpm2b_public_rsa(), tpm2b_public_ecc(), b"\x30\x82").to_bytes(),
            EnrolmentChallenge(bytes(range(50)), bytes(range(70))).to_bytes(),
            ActivationResponse("pi-01", bytes(32)).to_bytes()]


def _attestation_message(cls_name: str) -> Callable[[bytes], object]:
    def decode(data: bytes):
        from ztfl.attestation import messages
        return getattr(messages, cls_name).from_bytes(data)
    decode.__name__ = f"{cls_name}.from_bytes"
    return decode


def _decode_evidence(data: bytes):
    from ztfl.attestation.messages import decode_evidence
    return decode_evidence(data)


def _tpm(fn_name: str) -> Callable[[bytes], object]:
    def decode(data: bytes):
        from ztfl.attestation import tpm_wire
        return getattr(tpm_wire, fn_name)(data)
    decode.__name__ = fn_name
    return decode


# --- agent <-> gateway MQTT payloads -----------------------------------------------------------
def _json_seeds() -> list[bytes]:
    from ztfl.fednet.messages import Alert, Heartbeat, Hello, RoundAnnounce, RoundEnd
    return [Hello("pi-01", "raspberry-pi-4", "cnn-lstm", 64, "onnxruntime", 1200, "tpm-required", "ab" * 32).encode(),
            Heartbeat("pi-01", "training", 3, 2, 10, 400).encode(),
            Alert("pi-01", 17, "dos", 0.93, 2).encode(),
            RoundAnnounce(3, 0, "cnn-lstm-64", "cnn-lstm", 64, 2, "00" * 32, [["pi-01", 1, "ab" * 32]], 2,
                          "cd" * 32, {"masked": 60.0}, 1, "ef" * 32).encode(),
            # with the optional key-epoch and DP fields, so mutations reach their checks too
            RoundAnnounce(3, 1, "cnn-lstm-64", "cnn-lstm", 64, 2, "00" * 32, [["pi-01", 1, "ab" * 32]], 2,
                          "cd" * 32, {"masked": 60.0}, 1, "ef" * 32, epoch=257, protocol_round=769,
                          key_reuse=True, dp={"mechanism": "skellam", "clip_norm": 1.0, "noise_variance": 4.0e9,
                                              "frac_bits": 16, "dim": 3061, "min_survivors": 3}).encode(),
            RoundEnd(3, 0, "cnn-lstm-64", "committed", 3).encode()]


def _json_message(cls_name: str) -> Callable[[bytes], object]:
    def decode(data: bytes):
        from ztfl.fednet import messages as wire
        return getattr(wire, cls_name).decode(data)
    decode.__name__ = f"{cls_name}.decode"
    return decode


LIMIT = 1 << 20


def _envelope(data: bytes):
    from ztfl.fednet.messages import Envelope
    return Envelope.decode(data, LIMIT)


def _envelope_seeds() -> list[bytes]:
    from ztfl.fednet.messages import Envelope
    return [Envelope(3, 1, "cnn-lstm-64", "masked", frame).encode() for frame in _protocol_seeds()[:3]]


def _model_blob(data: bytes):
    from ztfl.fednet.messages import ModelBlob
    return ModelBlob.decode(data, LIMIT)


def _model_seeds() -> list[bytes]:
    import numpy as np

    from ztfl.fednet.messages import ModelBlob
    tensors = {"conv.weight": np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4),
               "fc.bias": np.array([0.5, -0.25], dtype=np.float32), "empty": np.zeros((0,), dtype=np.float32)}
    return [ModelBlob(4, "cnn-lstm", "ab" * 32, tensors).encode()]


def _vector(data: bytes):
    from ztfl.fednet.messages import AGGREGATE_FIELDS, VectorMessage
    return VectorMessage.decode(data, LIMIT, AGGREGATE_FIELDS)


def _vector_seeds() -> list[bytes]:
    import numpy as np

    from ztfl.fednet.messages import VectorMessage
    return [VectorMessage({"gateway": "fog1", "round": 3, "variant": "cnn-lstm", "base_version": 2,
                           "samples": 900}, np.arange(6, dtype=np.float32)).encode()]


def _detector(data: bytes):
    from ztfl.fednet.messages import DetectorBlob
    return DetectorBlob.decode(data, LIMIT)


def _detector_seeds() -> list[bytes]:
    from ztfl.fednet.messages import DetectorBlob
    return [DetectorBlob(3, b"\x08\x07\x12\x04onnx").encode()]


def _agent_topic(data: bytes):
    from ztfl.fednet.topics import Topics
    return Topics("plant", "fog1").parse_agent_topic(data.decode("utf-8", "replace"))


def _broadcast_topic(data: bytes):
    from ztfl.fednet.topics import Topics
    return Topics("plant", "fog1").parse_broadcast_topic(data.decode("utf-8", "replace"))


def _topic_seeds() -> list[bytes]:
    return [b"ztfl/plant/fog1/agents/pi-01/masked", b"ztfl/plant/fog1/agents/esp.7_a/hello",
            b"ztfl/plant/fog1/broadcast/round", b"ztfl/plant/fog1/broadcast/to/pi-01/protocol"]


def _pipeline(data: bytes):
    """The gateway's retained pipeline, as the agent decodes it."""
    from ztfl.fednet.messages import decode_pipeline
    return decode_pipeline(data)


def _pipeline_seeds() -> list[bytes]:
    import json
    doc = {"version": 1, "fmt": "nsl_kdd", "target": "multiclass", "classes": ["normal", "dos"],
           "numeric": [], "categorical": [{"name": "proto", "values": ["tcp", "udp"]}],
           "device": None, "window": 1, "extra": {}}
    try:
        from ztfl.models.preprocess import PIPELINE_VERSION
        doc["version"] = PIPELINE_VERSION
    except ImportError:
        pass
    return [json.dumps(doc).encode()]


# --- configuration files -----------------------------------------------------------------------
def _gateway_config(data: bytes):
    from ztfl.gateway.config import GatewayConfig
    return GatewayConfig.load(_scratch_file("gateway.yaml", data))


def _gateway_config_seeds() -> list[bytes]:
    return [b"federation: plant\ngateway: fog1\nrounds: 3\nmin_agents: 2\nbroker: {url: 'mqtt://127.0.0.1:1883'}\n"
            b"deadlines_s: {masked: 30, attest: 2}\nthreshold_fraction: 0.7\n"]


_SCRATCH_DIR = None


def _scratch_file(name: str, data: bytes) -> Path:
    """The loaders read paths: each input goes through one scratch file (tmpfs when there is one)."""
    global _SCRATCH_DIR
    if _SCRATCH_DIR is None:
        _SCRATCH_DIR = Path(tempfile.mkdtemp(prefix="ztfl-fuzz-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    path = _SCRATCH_DIR / name
    # Files are read as UTF-8 text: the fuzzer varies the text, not the codec.
    path.write_bytes(data.decode("utf-8", "replace").encode("utf-8"))
    return path


def _agent_config(data: bytes):
    from ztfl.agent.config import AgentConfig
    return AgentConfig.load(_scratch_file("agent.yaml", data))


def _agent_config_seeds() -> list[bytes]:
    return [b"agent_id: pi-01\nfederation: plant\ngateway: fog1\nprofile: raspberry-pi-4\n"
            b"broker: {url: 'mqtt://127.0.0.1:1883', keepalive_s: 10}\ndata: {path: x.txt, count: 4, index: 0}\n"]


def _profile(data: bytes):
    from ztfl.hw_profiles import load_profile
    return load_profile(_scratch_file("profile.yaml", data))


def _profile_seeds() -> list[bytes]:
    from ztfl.hw_profiles import PROFILE_DIR
    return [p.read_bytes() for p in sorted(PROFILE_DIR.glob("*.yaml"))[:3]]


def _errors(*paths: str) -> tuple[type[BaseException], ...]:
    import importlib
    out = []
    for path in paths:
        module, _, name = path.rpartition(".")
        out.append(getattr(importlib.import_module(module), name))
    return tuple(out)


def catalogue() -> list[Target]:
    """All targets. Error classes are the ones the caller of each decoder catches."""
    proto = _errors("ztfl.protocol.errors.ProtocolError")
    attest = _errors("ztfl.attestation.errors.AttestationError")
    wire_err = _errors("ztfl.fednet.messages.WireError")
    targets = [
        Target("protocol.frame", _decode_frame, proto, _protocol_seeds, "protocol"),
        Target("protocol.peek", _peek, proto, _protocol_seeds, "protocol"),
        Target("protocol.round_config", _round_config, proto, _round_config_seeds, "protocol"),
        Target("protocol.share_value", _share_value, proto, lambda: [(7).to_bytes(33, "little")], "protocol"),
        Target("protocol.tagged_frame", _tagged_frame, proto, _tagged_seeds, "protocol"),
        Target("protocol.consistency_tags", _body_parser("ConsistencyTags"), proto, _consistency_tags_seeds,
               "protocol"),
        Target("protocol.unmask_request_tags", _body_parser("UnmaskRequestTags"), proto,
               _unmask_request_tags_seeds, "protocol"),
        Target("attestation.evidence", _decode_evidence, attest, _evidence_seeds, "attestation"),
        Target("attestation.quote_evidence", _attestation_message("QuoteEvidence"), attest, _evidence_seeds,
               "attestation"),
        Target("attestation.software_evidence", _attestation_message("SoftwareEvidence"), attest,
               _evidence_seeds, "attestation"),
        Target("attestation.enrolment_request", _attestation_message("EnrolmentRequest"), attest,
               _enrolment_seeds, "attestation"),
        Target("attestation.enrolment_challenge", _attestation_message("EnrolmentChallenge"), attest,
               _enrolment_seeds, "attestation"),
        Target("attestation.activation_response", _attestation_message("ActivationResponse"), attest,
               _enrolment_seeds, "attestation"),
        Target("attestation.receipt", _attestation_message("AttestationReceipt"), attest, _evidence_seeds,
               "attestation"),
        Target("attestation.event_log", _event_log, attest, lambda: [boot_event_log()], "attestation"),
        Target("attestation.ima_log", _ima_entries, attest, lambda: [b"".join(ima_list()), ima_list()[2]],
               "attestation"),
        Target("tpm.attest_quote", _tpm("parse_quote_attest"), attest, lambda: [tpms_attest_quote()], "attestation"),
        Target("tpm.signature", _tpm("parse_signature"), attest, lambda: [tpmt_signature_ecdsa()], "attestation"),
        Target("tpm.public", _tpm("parse_public"), attest, lambda: [tpm2b_public_ecc(), tpm2b_public_rsa()],
               "attestation"),
    ]
    for cls_name in ("Hello", "Heartbeat", "Alert", "RoundAnnounce", "RoundEnd"):
        targets.append(Target(f"mqtt.{cls_name.lower()}", _json_message(cls_name), wire_err, _json_seeds, "mqtt"))
    targets += [
        Target("mqtt.envelope", _envelope, wire_err, _envelope_seeds, "mqtt"),
        Target("mqtt.model_blob", _model_blob, wire_err, _model_seeds, "mqtt"),
        Target("mqtt.vector", _vector, wire_err, _vector_seeds, "mqtt"),
        Target("mqtt.detector", _detector, wire_err, _detector_seeds, "mqtt"),
        Target("mqtt.agent_topic", _agent_topic, _errors("ztfl.fednet.topics.TopicError"), _topic_seeds, "mqtt"),
        Target("mqtt.broadcast_topic", _broadcast_topic, _errors("ztfl.fednet.topics.TopicError"), _topic_seeds, "mqtt"),
        Target("mqtt.pipeline", _pipeline, wire_err, _pipeline_seeds, "mqtt"),
        Target("config.gateway", _gateway_config, _errors("ztfl.gateway.config.ConfigError"),
               _gateway_config_seeds, "config"),
        Target("config.agent", _agent_config, _errors("ztfl.agent.config.AgentConfigError"),
               _agent_config_seeds, "config"),
        Target("config.hw_profile", _profile, _errors("ztfl.hw_profiles.ProfileError"), _profile_seeds,
               "config"),
    ]
    return targets


def by_name(names: list[str] | None = None) -> list[Target]:
    targets = catalogue()
    if not names:
        return targets
    known = {t.name: t for t in targets}
    unknown = [n for n in names if n not in known and not any(t.group == n for t in targets)]
    if unknown:
        raise KeyError(f"unknown fuzz target {unknown[0]!r}; known: {', '.join(known)}")
    return [t for t in targets if t.name in names or t.group in names]
