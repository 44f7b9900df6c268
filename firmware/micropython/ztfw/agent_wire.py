"""The agent <-> gateway payloads besides protocol frames (docs/wire.md, agent/wire.py):
JSON control messages, the binary envelope around protocol frames, and the int8 model blob.

Every decoder checks sizes before allocating, consumes the whole buffer and raises
WireError with a reason.
"""
import json
import math
import struct
from binascii import a2b_base64

MAX_JSON_BYTES = 16 * 1024
ENV_MAGIC = b"ZE"
ENV_HEAD = ">2sBIHB"       # magic, version, round, attempt, cohort length
ENV_HEAD_BYTES = 10
MODEL_MAGIC = b"ZTM1"
MODEL_HEAD = ">4sIII"      # magic, version, tensor count, header JSON length
MODEL_HEAD_BYTES = 16
MAX_TENSORS = 64


class WireError(ValueError):
    pass


def _json(payload, limit=MAX_JSON_BYTES):
    if len(payload) > limit:
        raise WireError("JSON payload of %d bytes above limit %d" % (len(payload), limit))
    try:
        doc = json.loads(bytes(payload).decode())
    except (ValueError, UnicodeError) as e:
        raise WireError("not JSON: %s" % e)
    if not isinstance(doc, dict):
        raise WireError("expected a JSON object")
    return doc


def _field(doc, name, kind, default=None, required=True):
    if name not in doc:
        if required:
            raise WireError("missing field '%s'" % name)
        return default
    v = doc[name]
    if isinstance(v, bool) and kind is not bool:
        raise WireError("field '%s' must be %s, got bool" % (name, kind.__name__))
    if kind is float and isinstance(v, int):
        return float(v)
    if not isinstance(v, kind):
        raise WireError("field '%s' must be %s" % (name, kind.__name__))
    return v


MAX_U32 = 0xFFFFFFFF
# At most this many attempts per round keep the attempt ids of different rounds apart
# (protocol/rounds.py; tests/test_firmware_parity.py holds the two equal).
ATTEMPTS_PER_ROUND = 16


def attempt_id(round_id, attempt):
    """The id of one attempt of one round: the attestation round and a classic round's epoch."""
    return round_id * ATTEMPTS_PER_ROUND + attempt


CERTIFIED_ANNOUNCE = 2     # the announcement version whose participants carry certificates


def certificate_bytes(text, what):
    try:
        return a2b_base64(text)
    except ValueError:
        raise WireError("%s: certificate is not base64" % what)


class RoundAnnounce:
    """A round starts for one cohort. Optional key-epoch fields (docs/wire.md): `epoch` (the key
    epoch id; absent: attempt_id(round, attempt)), `protocol_round` (the round id inside the protocol;
    absent: `round`), `key_reuse` (absent: false) and `dp` (differential-privacy parameters;
    absent: none). Certified identities: `version` 2 with `server_cert`, participants
    [agent id, protocol id, certificate base64]; absent: version 1, bare keys (refused)."""
    FIELDS = (("round", int), ("attempt", int), ("cohort", str), ("model_variant", str), ("mask_bits", int),
              ("model_version", int), ("model_sha256", str), ("participants", list), ("threshold", int),
              ("nonce", str), ("deadlines_s", dict))
    OPTIONAL = (("weight_unit", int, 1), ("server_pk", str, ""), ("scale", float, 1.0),
                ("epoch", int, None), ("protocol_round", int, None), ("key_reuse", bool, False),
                ("dp", dict, None), ("version", int, None), ("server_cert", str, None))

    def __init__(self, doc):
        known = set(n for n, _ in self.FIELDS) | set(n for n, _, _ in self.OPTIONAL)
        for k in doc:
            if k not in known:
                raise WireError("RoundAnnounce: unknown field '%s'" % k)
        for name, kind in self.FIELDS:
            setattr(self, name, _field(doc, name, kind))
        for name, kind, default in self.OPTIONAL:
            setattr(self, name, _field(doc, name, kind, default, False))
        if self.weight_unit < 1:
            raise WireError("RoundAnnounce: weight_unit must be positive")
        if self.epoch is None:
            self.epoch = attempt_id(self.round, self.attempt)
        if self.protocol_round is None:
            self.protocol_round = self.round
        for name in ("epoch", "protocol_round"):
            if not 0 <= getattr(self, name) <= MAX_U32:
                raise WireError("RoundAnnounce: %s must be a u32" % name)
        if self.version not in (None, CERTIFIED_ANNOUNCE) or (self.version is None) != (self.server_cert is None):
            raise WireError("RoundAnnounce: version %s is not one this board speaks" % self.version)

    def seats(self):
        """[(agent id, protocol id, certificate bytes)] of a version 2 announcement."""
        out = []
        for p in self.participants:
            if not (isinstance(p, list) and len(p) == 3 and isinstance(p[0], str)
                    and isinstance(p[1], int) and not isinstance(p[1], bool) and isinstance(p[2], str)):
                raise WireError("RoundAnnounce: bad participant entry")
            if not 1 <= p[1] <= 0xFFFF:
                raise WireError("RoundAnnounce: participant id out of range")
            out.append((p[0], p[1], certificate_bytes(p[2], "participant " + p[0])))
        return out


class RoundEnd:
    def __init__(self, doc):
        for k in doc:
            if k not in ("round", "attempt", "cohort", "outcome", "model_version", "reason"):
                raise WireError("RoundEnd: unknown field '%s'" % k)
        self.round = _field(doc, "round", int)
        self.attempt = _field(doc, "attempt", int)
        self.cohort = _field(doc, "cohort", str)
        self.outcome = _field(doc, "outcome", str)
        self.model_version = _field(doc, "model_version", int)
        self.reason = _field(doc, "reason", str, "", False)


def decode_round(payload):
    """A RoundAnnounce or a RoundEnd (the latter has an 'outcome')."""
    doc = _json(payload)
    return RoundEnd(doc) if "outcome" in doc else RoundAnnounce(doc)


def hello(agent_id, profile, model_variant, mask_bits, runtime, samples, attestation, identity_pk_hex,
          certificate_b64=""):
    doc = {"agent_id": agent_id, "profile": profile, "model_variant": model_variant,
           "mask_bits": mask_bits, "runtime": runtime, "samples": samples,
           "attestation": attestation, "identity_pk": identity_pk_hex}
    if certificate_b64:
        doc["certificate"] = certificate_b64
    return json.dumps(doc).encode()


def heartbeat(agent_id, state, round_id, model_version, alerts_total, records_total):
    return json.dumps({"agent_id": agent_id, "state": state, "round": round_id, "model_version": model_version,
                       "alerts_total": alerts_total, "records_total": records_total}).encode()


def alert(agent_id, seq, label, score, model_version):
    return json.dumps({"agent_id": agent_id, "seq": seq, "label": label, "score": score,
                       "model_version": model_version}).encode()


def envelope_prefix(round_id, attempt, cohort, stage, body_len):
    """Everything of an envelope before its body (the body can then be streamed)."""
    c = cohort.encode()
    s = stage.encode()
    if len(c) > 255 or len(s) > 255:
        raise WireError("cohort or stage name too long")
    return (struct.pack(ENV_HEAD, ENV_MAGIC, 1, round_id, attempt, len(c)) + c
            + struct.pack(">B", len(s)) + s + struct.pack(">I", body_len))


class Envelope:
    def __init__(self, payload, limit):
        n = len(payload)
        if n > limit:
            raise WireError("envelope of %d bytes above limit %d" % (n, limit))
        if n < ENV_HEAD_BYTES:
            raise WireError("envelope shorter than its header")
        magic, version, self.round, self.attempt, clen = struct.unpack_from(ENV_HEAD, payload, 0)
        if magic != ENV_MAGIC or version != 1:
            raise WireError("bad envelope magic/version")
        pos = ENV_HEAD_BYTES
        if pos + clen + 1 > n:
            raise WireError("envelope truncated in cohort")
        cohort = bytes(payload[pos:pos + clen])
        pos += clen
        slen = payload[pos]
        pos += 1
        if pos + slen + 4 > n:
            raise WireError("envelope truncated in stage")
        stage = bytes(payload[pos:pos + slen])
        pos += slen
        blen = struct.unpack_from(">I", payload, pos)[0]
        pos += 4
        if pos + blen != n:
            raise WireError("envelope body length %d does not match the %d bytes left" % (blen, n - pos))
        try:
            self.cohort = cohort.decode()
            self.stage = stage.decode()
        except UnicodeError:
            raise WireError("envelope names are not UTF-8")
        self.body = bytes(payload[pos:])


class ModelBlob:
    """The global model as sent by the gateway: int8 per tensor with a float32 scale.

    Kept in int8 (a quarter of the float size): `value(i)` dequantises one parameter.
    """

    def __init__(self, payload, limit, max_params):
        n = len(payload)
        if n > limit:
            raise WireError("model of %d bytes above limit %d" % (n, limit))
        if n < MODEL_HEAD_BYTES:
            raise WireError("model shorter than its header")
        magic, self.version, count, hlen = struct.unpack_from(MODEL_HEAD, payload, 0)
        if magic != MODEL_MAGIC:
            raise WireError("bad model magic")
        if count > MAX_TENSORS or MODEL_HEAD_BYTES + hlen > n:
            raise WireError("model header sizes out of range")
        head = _json(payload[MODEL_HEAD_BYTES:MODEL_HEAD_BYTES + hlen], hlen)
        self.variant = _field(head, "variant", str)
        self.sha256 = _field(head, "sha256", str)
        meta = _field(head, "tensors", list)
        if len(meta) != count:
            raise WireError("model tensor table does not match its count")
        self.tensors = []          # (name, shape, scale, offset into q)
        total = 0
        for entry in meta:
            if (not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str)
                    or not isinstance(entry[1], list) or not isinstance(entry[2], (int, float))
                    or isinstance(entry[2], bool)):
                raise WireError("bad tensor entry")
            size = 1
            for dim in entry[1]:
                if not isinstance(dim, int) or isinstance(dim, bool) or not 0 <= dim < 1 << 24:
                    raise WireError("bad tensor shape")
                size *= dim
            self.tensors.append((entry[0], tuple(entry[1]), float(entry[2]), total, size))
            total += size
            if total > max_params:
                raise WireError("model holds more than %d parameters" % max_params)
        pos = MODEL_HEAD_BYTES + hlen
        if pos + total != n:
            raise WireError("model data is %d bytes, tensors need %d" % (n - pos, total))
        # A view, not a copy: the payload buffer is kept instead (a model-sized saving).
        self.q = memoryview(payload)[pos:]
        self.n_params = total

    def layer_sizes(self):
        """[n_features, hidden..., n_classes] of an MLP stored as layers.i.weight / layers.i.bias."""
        sizes = []
        expect = 0
        for i in range(0, len(self.tensors), 2):
            w = self.tensors[i]
            b = self.tensors[i + 1] if i + 1 < len(self.tensors) else None
            if (b is None or w[0] != "layers.%d.weight" % expect or b[0] != "layers.%d.bias" % expect
                    or len(w[1]) != 2 or b[1] != (w[1][0],)):
                raise WireError("model is not the micro MLP layout")
            if sizes and sizes[-1] != w[1][1]:
                raise WireError("layer sizes do not chain")
            if not sizes:
                sizes.append(w[1][1])
            sizes.append(w[1][0])
            expect += 1
        return sizes

    def fill_float(self, out):
        """Dequantise every parameter into `out` (array('f') in flat order)."""
        q = self.q
        for name, shape, scale, off, size in self.tensors:
            for i in range(off, off + size):
                v = q[i]
                out[i] = (v - 256 if v > 127 else v) * scale

    def scales(self):
        """[(offset, size, scale)] for dequantising on the fly."""
        return [(off, size, scale) for _, _, scale, off, size in self.tensors]


# -- distributed DP (docs/privacy.md) ------------------------------------------------------------
# This board adds no DP noise: it never joins a round that asks for it. It refuses such a round
# as the CPython agent would first (its privacy floor), else because it cannot add the noise; the
# reason codes are those of privacy/errors.py.
FLAG_DP = 0x08                 # ROUND_CONFIG flags: a 20-byte DP record follows the 28 bytes
DP_UNSUPPORTED = "the round asks for differential-privacy noise, which this firmware does not implement"
FLOOR_DEFAULTS = (("min_noise_multiplier", 0.7), ("max_clip_norm", 10.0), ("min_survivors", 3))


class PrivacyRefused(ValueError):
    """A round's DP refused; `reason` is the code of the privacy/errors.py class of that name."""
    reason = "privacy_refused"


# One line each: the names and codes of privacy/errors.py, nothing else of those classes.
class NoiseBelowFloor(PrivacyRefused): reason = "dp_noise_below_floor"  # noqa: E701
class ClipAboveFloor(PrivacyRefused): reason = "dp_clip_above_floor"  # noqa: E701
class SurvivorsBelowFloor(PrivacyRefused): reason = "dp_survivors_below_floor"  # noqa: E701
class DpMismatch(PrivacyRefused): reason = "dp_announcement_mismatch"  # noqa: E701
class DpUnsupported(PrivacyRefused): reason = "dp_unsupported"  # noqa: E701


class PrivacyFloor:
    """`privacy_floor` of config.json: the keys and defaults of agent.yaml's privacy_floor that
    bound a round's DP parameters (the budget keys are the CPython agent's: this board spends none)."""

    def __init__(self, doc=None):
        doc = doc or {}
        if not isinstance(doc, dict):
            raise WireError("privacy_floor must be an object")
        for k in doc:
            if k not in [name for name, _ in FLOOR_DEFAULTS]:
                raise WireError("privacy_floor: unknown key '%s'" % k)
        for name, default in FLOOR_DEFAULTS:
            value = doc.get(name, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise WireError("privacy_floor: %s must be a positive number" % name)
            setattr(self, name, value)

    def check(self, clip_norm, variance, frac_bits, dim, survivors):
        """The privacy.floor checks, in the same order, with the same reasons."""
        if survivors < self.min_survivors:
            raise SurvivorsBelowFloor("the noise counts on %d honest survivors, this agent on at least %d"
                                      % (survivors, self.min_survivors))
        if not clip_norm <= self.max_clip_norm:
            raise ClipAboveFloor("L2 clip %g, this agent allows at most %g" % (clip_norm, self.max_clip_norm))
        sensitivity = clip_norm * (1 << frac_bits) + math.sqrt(dim) / 2
        z = math.sqrt(survivors * variance) / sensitivity
        if not z >= self.min_noise_multiplier:
            raise NoiseBelowFloor("noise multiplier %.4g, this agent needs at least %g" % (z, self.min_noise_multiplier))


def dp_refusal(floor, dp):
    """Why this board declines a round whose announcement has `dp`: the floor's refusal if the
    announced parameters break it, else DpUnsupported. The message starts with DP_UNSUPPORTED."""
    try:
        values = [dp[k] for k in ("clip_norm", "noise_variance", "frac_bits", "dim", "min_survivors")]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError
    except (KeyError, TypeError, ValueError):
        return DpUnsupported(DP_UNSUPPORTED + " (and its dp object is malformed)")
    try:
        floor.check(*values)
    except PrivacyRefused as e:
        return type(e)(DP_UNSUPPORTED + "; and below this board's floor: " + str(e))
    return DpUnsupported(DP_UNSUPPORTED)


def config_signs_dp(frame):
    """Whether a ROUND_CONFIG frame's body (after the 20-byte header) sets the DP flag."""
    return len(frame) > 27 and bool(frame[27] & FLAG_DP)
