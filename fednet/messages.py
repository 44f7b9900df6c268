"""Payloads exchanged over MQTT besides the secure-aggregation messages themselves.

Control messages (hello, heartbeat, alert, round announcements) are small JSON objects mapped to
dataclasses; every field is type-checked on decode. Binary payloads (protocol messages, the model)
travel in a length-checked envelope. Every decoder checks the size before it allocates, consumes
the whole buffer, and raises WireError with a reason.
"""
from __future__ import annotations
from ztfl.protocol.rounds import attempt_id

import base64
import binascii
import hashlib
import json
import math
import struct
from dataclasses import MISSING, asdict, dataclass, field, fields

import numpy as np

from ztfl.protocol.refusal import Refusal

MAX_JSON_BYTES = 64 * 1024


class WireError(Refusal, ValueError):
    """A payload from a peer that we refuse; the message says why."""

    reason = "malformed"


# ---------------------------------------------------------------------------------------------
# JSON control messages
def _check_type(name: str, value, expected) -> None:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return
    if isinstance(value, bool) and expected is not bool:
        raise WireError(f"field '{name}' must be {expected.__name__}, got bool")
    if not isinstance(value, expected):
        raise WireError(f"field '{name}' must be {expected.__name__}, got {type(value).__name__}")


class JsonMessage:
    """Mixin: `encode()` to bytes, `decode(bytes)` with per-field type checks."""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    _LIMIT = MAX_JSON_BYTES

    @classmethod
    def decode(cls, payload: bytes, limit: int | None = None):
        limit = cls._LIMIT if limit is None else limit
        if len(payload) > limit:
            raise WireError(f"{cls.__name__}: {len(payload)} bytes, limit {limit}")
        try:
            doc = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise WireError(f"{cls.__name__}: not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise WireError(f"{cls.__name__}: expected an object")
        known = {f.name: f for f in fields(cls)}
        unknown = set(doc) - set(known)
        if unknown:
            raise WireError(f"{cls.__name__}: unknown field '{sorted(unknown)[0]}'")
        values = {}
        for name, f in known.items():
            if name not in doc:
                if f.default is not MISSING or f.default_factory is not MISSING:
                    continue
                raise WireError(f"{cls.__name__}: missing field '{name}'")
            expected = cls._TYPES[name]
            _check_type(name, doc[name], expected)
            values[name] = doc[name]
        try:
            return cls(**values)
        except TypeError as exc:
            raise WireError(f"{cls.__name__}: {exc}") from exc


@dataclass
class Hello(JsonMessage):
    """An agent announces itself (on every connect)."""
    agent_id: str
    profile: str
    model_variant: str
    mask_bits: int
    runtime: str
    samples: int
    attestation: str
    identity_pk: str            # hex Ed25519 key that signs this agent's protocol messages
    # base64 of the agent's identity certificate (protocol.certs), which certifies identity_pk;
    # left out of the JSON when empty (an agent without one is seated by no certified round).
    certificate: str = ""
    _TYPES = {"agent_id": str, "profile": str, "model_variant": str, "mask_bits": int, "runtime": str,
              "samples": int, "attestation": str, "identity_pk": str, "certificate": str}

    def encode(self) -> bytes:
        doc = {k: v for k, v in asdict(self).items() if not (k == "certificate" and not v)}
        return json.dumps(doc, separators=(",", ":")).encode()

    def certificate_bytes(self) -> bytes:
        """The certificate's bytes (empty if none); WireError if it is not base64."""
        return certificate_bytes(self.certificate, f"hello of {self.agent_id}")


def certificate_text(raw: bytes) -> str:
    """How a certificate travels in JSON: standard base64."""
    return base64.b64encode(bytes(raw)).decode("ascii")


def certificate_bytes(text: str, what: str) -> bytes:
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (ValueError, binascii.Error):             # ValueError: not ASCII
        raise WireError(f"{what}: certificate is not base64") from None


@dataclass
class Heartbeat(JsonMessage):
    """Liveness and state: idle | training | detecting | offline (the last as MQTT will)."""
    agent_id: str
    state: str
    round: int
    model_version: int
    alerts_total: int
    records_total: int
    _TYPES = {"agent_id": str, "state": str, "round": int, "model_version": int, "alerts_total": int,
              "records_total": int}


@dataclass
class Alert(JsonMessage):
    """A detection: the predicted attack class and its score, from which global model."""
    agent_id: str
    seq: int
    label: str
    score: float
    model_version: int
    _TYPES = {"agent_id": str, "seq": int, "label": str, "score": float, "model_version": int}


@dataclass
class RoundAnnounce(JsonMessage):
    """Gateway -> agents: a round starts for one cohort; `participants` are the seated agents."""
    round: int
    attempt: int
    cohort: str
    model_variant: str
    mask_bits: int
    model_version: int
    model_sha256: str
    participants: list
    threshold: int
    nonce: str
    deadlines_s: dict
    weight_unit: int = 1        # samples per unit of secure-aggregation weight
    server_pk: str = ""         # hex Ed25519 key of the gateway for this federation
    # Optional, left out of the JSON when None so that agents which predate them (firmware) still
    # decode the announcement. Key epochs (docs/protocol.md 2.7): the protocol's epoch id and round
    # id, and whether the round reuses the epoch's keys; absent: round * 16 + attempt, round, false.
    epoch: int | None = None
    protocol_round: int | None = None
    key_reuse: bool | None = None
    # Distributed DP (docs/privacy.md): the parameters the gateway signed into ROUND_CONFIG (DP_FIELDS),
    # said again for agents that decline early; agents refuse any difference. Absent: no DP.
    dp: dict | None = None
    # Certified identities (docs/wire.md): version 2 lists every participant with its certificate
    # (base64) in place of a bare key and carries the gateway's own certificate; absent: version 1,
    # bare keys, which agents that check certificates refuse (and older agents refuse version 2
    # for its unknown fields): a mixed fleet fails on the first announcement, with a reason.
    version: int | None = None
    server_cert: str | None = None
    # It lists every participant (under 384 bytes each, at most 65535 client ids): the generic
    # 64 KiB limit would refuse the announcement of a cohort above about 200 agents.
    _LIMIT = MAX_JSON_BYTES + 384 * 0xFFFF
    _TYPES = {"round": int, "attempt": int, "cohort": str, "model_variant": str, "mask_bits": int,
              "model_version": int, "model_sha256": str, "participants": list, "threshold": int,
              "nonce": str, "deadlines_s": dict, "weight_unit": int, "server_pk": str,
              "epoch": int, "protocol_round": int, "key_reuse": bool, "dp": dict, "version": int,
              "server_cert": str}
    _OPTIONAL = ("epoch", "protocol_round", "key_reuse", "dp", "version", "server_cert")

    def __post_init__(self):
        for name in ("epoch", "protocol_round"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_U32:
                raise WireError(f"RoundAnnounce: field '{name}' must be a u32, got {value}")
        if self.dp is not None:
            dp_params(self.dp)
        if self.version not in (None, CERTIFIED_ANNOUNCE):
            raise WireError(f"RoundAnnounce: version {self.version} is not one this agent speaks "
                            f"(1: absent, or {CERTIFIED_ANNOUNCE})")
        if (self.version is None) != (self.server_cert is None):
            raise WireError("RoundAnnounce: version 2 and server_cert go together")

    @property
    def certified(self) -> bool:
        return self.version == CERTIFIED_ANNOUNCE

    def seats(self) -> list[tuple[str, int, bytes]]:
        """(agent id, protocol id, certificate bytes) of every participant of a version 2
        announcement; WireError on a malformed entry."""
        out = []
        for entry in self.participants:
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                    and type(entry[1]) is int and isinstance(entry[2], str)):
                raise WireError(f"RoundAnnounce: participant entry {entry!r:.80} is not [id, number, certificate]")
            if not 1 <= entry[1] <= 0xFFFF:
                raise WireError(f"RoundAnnounce: participant number {entry[1]} out of range")
            out.append((entry[0], entry[1], certificate_bytes(entry[2], f"participant {entry[0]}")))
        return out

    def server_certificate(self) -> bytes:
        return certificate_bytes(self.server_cert or "", "gateway")

    def encode(self) -> bytes:
        doc = {k: v for k, v in asdict(self).items() if not (k in self._OPTIONAL and v is None)}
        return json.dumps(doc, separators=(",", ":")).encode()

    @property
    def keying(self) -> "RoundKeying":
        """The protocol epoch, round id and key-reuse flag this announcement asks for."""
        return RoundKeying(attempt_id(self.round, self.attempt) if self.epoch is None else self.epoch,
                           self.round if self.protocol_round is None else self.protocol_round,
                           bool(self.key_reuse))

    @property
    def dp_params(self):
        """The announced DP parameters (privacy.DpParams), or None for a round without DP."""
        return None if self.dp is None else dp_params(self.dp)


MAX_U32 = 0xFFFFFFFF
CERTIFIED_ANNOUNCE = 2      # the RoundAnnounce version whose participants carry certificates


@dataclass(frozen=True)
class RoundKeying:
    epoch: int
    protocol_round: int
    key_reuse: bool


# The `dp` object of a round announcement: the fields of privacy.DpParams plus the mechanism.
DP_FIELDS = {"mechanism": str, "clip_norm": float, "noise_variance": float, "frac_bits": int, "dim": int,
             "min_survivors": int}
DP_MECHANISMS = ("skellam",)


def dp_params(doc: dict):
    """privacy.DpParams from an announcement's `dp` object; WireError on any bad or missing field."""
    from ztfl.privacy.params import DpParams
    from ztfl.protocol.config import MAX_DIM
    if not isinstance(doc, dict):
        raise WireError("dp: expected an object")
    unknown = set(doc) - set(DP_FIELDS)
    if unknown:
        raise WireError(f"dp: unknown field '{sorted(map(str, unknown))[0]}'")
    for name, expected in DP_FIELDS.items():
        if name not in doc:
            raise WireError(f"dp: missing field '{name}'")
        _check_type(f"dp.{name}", doc[name], expected)
    if doc["mechanism"] not in DP_MECHANISMS:
        raise WireError(f"dp: unsupported mechanism {doc['mechanism']!r:.40}")
    for name, top in (("frac_bits", 62), ("dim", MAX_DIM), ("min_survivors", 0xFFFF)):
        if not 0 <= doc[name] <= top:
            raise WireError(f"dp: field '{name}' must be in 0..{top}")
    try:
        clip_norm, variance = float(doc["clip_norm"]), float(doc["noise_variance"])
    except OverflowError:                          # a JSON integer beyond the float range
        raise WireError("dp: fields 'clip_norm' and 'noise_variance' must be finite numbers") from None
    try:
        return DpParams(clip_norm, doc["frac_bits"], doc["dim"], variance, doc["min_survivors"])
    except ValueError as exc:
        raise WireError(f"dp: {exc}") from exc


def dp_document(params) -> dict:
    """The `dp` object announcing these privacy.DpParams."""
    return {"mechanism": "skellam", "clip_norm": float(params.clip_norm),
            "noise_variance": float(params.noise_variance), "frac_bits": int(params.frac_bits),
            "dim": int(params.dim), "min_survivors": int(params.min_survivors)}


@dataclass
class RoundEnd(JsonMessage):
    """Gateway -> agents: a round's cohort finished (committed or aborted) so agents reset."""
    round: int
    attempt: int
    cohort: str
    outcome: str
    model_version: int
    reason: str = ""
    _TYPES = {"round": int, "attempt": int, "cohort": str, "outcome": str, "model_version": int,
              "reason": str}


def decode_pipeline(payload: bytes, limit: int = 1 << 20):
    """The gateway's retained preprocessing pipeline (JSON) as a models.preprocess.Pipeline."""
    from ztfl.models.preprocess import Pipeline
    if len(payload) > limit:
        raise WireError(f"pipeline of {len(payload)} bytes above limit {limit}")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise WireError(f"pipeline: not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise WireError("pipeline: expected an object")
    try:
        return Pipeline.from_dict(doc)
    except (ValueError, KeyError, TypeError) as exc:      # PipelineError is a ValueError
        raise WireError(f"bad pipeline: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Binary envelope for protocol messages: which round/attempt/cohort/stage a body belongs to.
_ENV_HEAD = struct.Struct(">2sBIHB")  # magic, version, round, attempt, cohort length
ENV_MAGIC = b"ZE"


@dataclass
class Envelope:
    round: int
    attempt: int
    cohort: str
    stage: str
    body: bytes

    def encode(self) -> bytes:
        cohort = self.cohort.encode()
        stage = self.stage.encode()
        if len(cohort) > 255 or len(stage) > 255:
            raise WireError("cohort or stage name too long")
        return (_ENV_HEAD.pack(ENV_MAGIC, 1, self.round, self.attempt, len(cohort)) + cohort
                + struct.pack(">B", len(stage)) + stage + struct.pack(">I", len(self.body)) + self.body)

    @classmethod
    def decode(cls, payload: bytes, limit: int) -> "Envelope":
        if len(payload) > limit:
            raise WireError(f"envelope of {len(payload)} bytes above limit {limit}")
        if len(payload) < _ENV_HEAD.size:
            raise WireError("envelope shorter than its header")
        magic, version, rnd, attempt, clen = _ENV_HEAD.unpack_from(payload, 0)
        if magic != ENV_MAGIC or version != 1:
            raise WireError(f"bad envelope magic/version {magic!r}/{version}")
        pos = _ENV_HEAD.size
        if pos + clen + 1 > len(payload):
            raise WireError("envelope truncated in cohort")
        cohort = payload[pos:pos + clen]
        pos += clen
        slen = payload[pos]
        pos += 1
        if pos + slen + 4 > len(payload):
            raise WireError("envelope truncated in stage")
        stage = payload[pos:pos + slen]
        pos += slen
        (blen,) = struct.unpack_from(">I", payload, pos)
        pos += 4
        if pos + blen != len(payload):
            raise WireError(f"envelope body length {blen} does not match the {len(payload) - pos} bytes left")
        try:
            return cls(rnd, attempt, cohort.decode(), stage.decode(), payload[pos:])
        except UnicodeDecodeError as exc:
            raise WireError("envelope names are not UTF-8") from exc


# ---------------------------------------------------------------------------------------------
# The global model on the wire: int8 per tensor with a float32 scale (symmetric quantisation).
MODEL_MAGIC = b"ZTM1"
_MODEL_HEAD = struct.Struct(">4sIII")  # magic, version, tensor count, header json length
MAX_TENSORS = 256
MAX_TENSOR_DIMS = 8


@dataclass
class ModelBlob:
    version: int
    variant: str
    sha256: str                     # of the float weights the gateway holds (registry id)
    tensors: dict = field(default_factory=dict)   # name -> float32 ndarray (dequantised on decode)

    def encode(self) -> bytes:
        meta, chunks = [], []
        for name, arr in self.tensors.items():
            arr = np.asarray(arr, dtype=np.float32)
            peak = float(np.max(np.abs(arr))) if arr.size else 0.0
            scale = peak / 127.0 if peak > 0 else 1.0
            q = np.clip(np.rint(arr / scale), -127, 127).astype(np.int8)
            meta.append([name, list(arr.shape), scale])
            chunks.append(q.tobytes())
        head = json.dumps({"variant": self.variant, "sha256": self.sha256, "tensors": meta},
                          separators=(",", ":")).encode()
        return _MODEL_HEAD.pack(MODEL_MAGIC, self.version, len(meta), len(head)) + head + b"".join(chunks)

    @classmethod
    def decode(cls, payload: bytes, limit: int) -> "ModelBlob":
        if len(payload) > limit:
            raise WireError(f"model of {len(payload)} bytes above limit {limit}")
        if len(payload) < _MODEL_HEAD.size:
            raise WireError("model shorter than its header")
        magic, version, count, hlen = _MODEL_HEAD.unpack_from(payload, 0)
        if magic != MODEL_MAGIC:
            raise WireError("bad model magic")
        if count > MAX_TENSORS or _MODEL_HEAD.size + hlen > len(payload):
            raise WireError("model header sizes out of range")
        try:
            head = json.loads(payload[_MODEL_HEAD.size:_MODEL_HEAD.size + hlen].decode())
            meta = head["tensors"]
            variant, digest = str(head["variant"]), str(head["sha256"])
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError, TypeError) as exc:
            raise WireError(f"bad model header: {exc}") from exc
        if not isinstance(meta, list) or len(meta) != count:
            raise WireError("model tensor table does not match its count")
        pos = _MODEL_HEAD.size + hlen
        tensors = {}
        for entry in meta:
            if (not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str)
                    or not isinstance(entry[1], list)
                    or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**24 for d in entry[1])
                    or not isinstance(entry[2], (int, float)) or len(entry[1]) > MAX_TENSOR_DIMS):
                raise WireError(f"bad tensor entry {entry!r:.80}")
            # Python ints (np.prod wraps at 2^63), and even a shape holding a 0 must have a
            # product of its other dimensions numpy can represent: bounded by the payload.
            if math.prod(d for d in entry[1] if d) > len(payload):
                raise WireError(f"tensor {entry[0]} shape {entry[1]!r:.80} is larger than the model")
            n = math.prod(entry[1])
            if pos + n > len(payload):
                raise WireError(f"tensor {entry[0]} runs past the end of the model")
            q = np.frombuffer(payload, dtype=np.int8, count=n, offset=pos).reshape(entry[1])
            tensors[entry[0]] = q.astype(np.float32) * np.float32(entry[2])
            pos += n
        if pos != len(payload):
            raise WireError(f"{len(payload) - pos} trailing bytes after the model")
        return cls(version, variant, digest, tensors)


def weights_sha256(tensors: dict) -> str:
    """A stable digest of named float32 tensors (names and shapes included)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name], dtype=np.float32)
        h.update(name.encode() + b"\0" + repr(arr.shape).encode() + b"\0" + arr.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Float vectors between tiers (fog aggregate up, cloud model down): a JSON header and float32s.
VECTOR_MAGIC = b"ZTV1"
_VECTOR_HEAD = struct.Struct(">4sII")  # magic, header length, element count


@dataclass
class VectorMessage:
    header: dict
    vector: np.ndarray

    def encode(self) -> bytes:
        head = json.dumps(self.header, separators=(",", ":"), sort_keys=True).encode()
        data = np.ascontiguousarray(self.vector, dtype="<f4").tobytes()
        return _VECTOR_HEAD.pack(VECTOR_MAGIC, len(head), self.vector.size) + head + data

    @classmethod
    def decode(cls, payload: bytes, limit: int, required: dict) -> "VectorMessage":
        """`required` maps header fields to their types; all must be present and typed."""
        if len(payload) > limit:
            raise WireError(f"vector message of {len(payload)} bytes above limit {limit}")
        if len(payload) < _VECTOR_HEAD.size:
            raise WireError("vector message shorter than its header")
        magic, hlen, count = _VECTOR_HEAD.unpack_from(payload, 0)
        if magic != VECTOR_MAGIC:
            raise WireError("bad vector magic")
        if _VECTOR_HEAD.size + hlen + 4 * count != len(payload):
            raise WireError("vector message sizes do not add up to its length")
        try:
            header = json.loads(payload[_VECTOR_HEAD.size:_VECTOR_HEAD.size + hlen].decode())
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise WireError(f"bad vector header: {exc}") from exc
        if not isinstance(header, dict):
            raise WireError("vector header is not an object")
        for name, typ in required.items():
            if name not in header:
                raise WireError(f"vector header lacks '{name}'")
            _check_type(name, header[name], typ)
        vector = np.frombuffer(payload, dtype="<f4", count=count, offset=_VECTOR_HEAD.size + hlen).astype(np.float32)
        if not np.all(np.isfinite(vector)):
            raise WireError("vector holds NaN or infinity")
        return cls(header, vector)


AGGREGATE_FIELDS = {"gateway": str, "round": int, "variant": str, "base_version": int, "samples": int}
CLOUD_MODEL_FIELDS = {"variant": str, "version": int, "round": int, "sha256": str}


# ---------------------------------------------------------------------------------------------
# The int8 detector (ONNX) of one global model version, exported once by the gateway.
DETECTOR_MAGIC = b"ZTD1"
_DETECTOR_HEAD = struct.Struct(">4sII")  # magic, model version, byte count


@dataclass
class DetectorBlob:
    version: int
    onnx: bytes

    def encode(self) -> bytes:
        return _DETECTOR_HEAD.pack(DETECTOR_MAGIC, self.version, len(self.onnx)) + self.onnx

    @classmethod
    def decode(cls, payload: bytes, limit: int) -> "DetectorBlob":
        if len(payload) > limit:
            raise WireError(f"detector of {len(payload)} bytes above limit {limit}")
        if len(payload) < _DETECTOR_HEAD.size:
            raise WireError("detector shorter than its header")
        magic, version, n = _DETECTOR_HEAD.unpack_from(payload, 0)
        if magic != DETECTOR_MAGIC or _DETECTOR_HEAD.size + n != len(payload):
            raise WireError("bad detector magic or length")
        return cls(version, payload[_DETECTOR_HEAD.size:])
