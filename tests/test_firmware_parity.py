"""The firmware (firmware/micropython/ztfw, MicroPython) writes the protocol's numbers by hand:
message types, stage names and transitions, error names, wire and key sizes, limits, the
attempt id formula. Each is compared here with the CPython side it mirrors, so a change to one
side only fails. Fixed wire facts must be equal; a device cap may be tighter than the protocol's
limit, never looser.

The firmware modules run here under CPython (they also import there), from firmware/micropython.
"""
from __future__ import annotations

import importlib
import json
import re
import struct
import sys

import pytest

from ztfl.attestation import binding
from ztfl.attestation import messages as attest_messages
from ztfl.fednet import messages as fednet
from ztfl.firmware_tools.micropython_host import FIRMWARE_DIR
from ztfl.hw_profiles import load_profile
from ztfl.protocol import config, errors, rounds, session, shamir, stages, wire

# Every message type, by the name both sides give it.
TYPE_NAMES = ("ROUND_CONFIG", "ADVERTISE_KEYS", "ROSTER", "SHARE_KEYS", "SHARES_RELAY", "MASKED_INPUT",
              "CONSISTENCY_REQUEST", "CONSISTENCY_SIGNATURE", "UNMASK_REQUEST", "UNMASK_SHARES", "ABORT",
              "UNMASK_ROUND_KEYS", "CONSISTENCY_TAGS", "UNMASK_REQUEST_TAGS", "GRAPH_REVEAL", "GRAPH_SEEDS")
# Protocol errors the firmware has no class for, and why.
PROTOCOL_ONLY_ERRORS = {
    # The client never reconstructs a secret: its share arithmetic (ztfw.shamir) raises its own
    # ValueError, and a relayed share outside the field is refused as MalformedMessage.
    "ShamirError",
}


@pytest.fixture(scope="module")
def fw():
    """The firmware modules, imported from firmware/micropython."""
    sys.path.insert(0, str(FIRMWARE_DIR))
    try:
        names = ("secagg_wire", "secagg_errors", "secagg_client", "agent_wire", "agent", "shamir",
                 "session_auth", "attest", "mqtt")
        return {name: importlib.import_module(f"ztfw.{name}") for name in names}
    finally:
        sys.path.remove(str(FIRMWARE_DIR))


def test_message_type_numbers(fw):
    fw_wire = fw["secagg_wire"]
    assert {getattr(wire, n) for n in TYPE_NAMES} == set(wire.MESSAGE_TYPES), "a type is missing from TYPE_NAMES"
    assert {n: getattr(fw_wire, n) for n in TYPE_NAMES} == {n: getattr(wire, n) for n in TYPE_NAMES}
    assert sorted(fw_wire.KNOWN_TYPES) == sorted(wire.MESSAGE_TYPES)
    assert set(fw_wire.ALWAYS_SIGNED) == set(wire.ALWAYS_SIGNED)
    assert fw["agent"].SHARES_RELAY == wire.SHARES_RELAY       # the agent holds this frame until trained


def test_frame_layout_and_version(fw):
    fw_wire = fw["secagg_wire"]
    assert (fw_wire.MAGIC, fw_wire.VERSION) == (wire.MAGIC, wire.VERSION)
    assert fw_wire.HEADER_FMT == wire.HEADER.format
    assert fw_wire.HEADER_BYTES == wire.HEADER_BYTES == struct.calcsize(fw_wire.HEADER_FMT)
    assert (fw_wire.AUTH_SIGNATURE, fw_wire.AUTH_SESSION, fw_wire.SERVER_ID) == \
        (wire.AUTH_SIGNATURE, wire.AUTH_SESSION, wire.SERVER_ID)
    assert fw_wire.CONFIG_FMT == config.CONFIG_STRUCT.format
    assert fw_wire.CONFIG_BYTES == config.CONFIG_STRUCT.size
    assert (fw_wire.SEMI_HONEST, fw_wire.ACTIVE, fw_wire.FLAG_THRESHOLD_OVERRIDE, fw_wire.FLAG_KEY_REUSE,
            fw_wire.FLAG_NEW_GRAPH) == (config.SEMI_HONEST, config.ACTIVE, config.FLAG_THRESHOLD_OVERRIDE,
                                        config.FLAG_KEY_REUSE, config.FLAG_NEW_GRAPH)
    assert (fw_wire.SURVIVORS_CONTEXT, fw_wire.SHARE_AAD_CONTEXT) == (wire.SURVIVORS_CONTEXT, wire.SHARE_AAD_CONTEXT)
    entries = (fw_wire.ROSTER_ENTRY, fw_wire.SHARE_ENTRY, fw_wire.UNMASK_ENTRY, fw_wire.MASKED_PREFIX_BYTES,
               fw_wire.TAG_ENTRY, fw_wire.TAG_ENTRY, fw_wire.GRAPH_SEED_ENTRY, fw_wire.REVEAL_BYTES)
    assert entries == (wire.ROSTER_ENTRY, wire.SHARE_ENTRY, wire.UNMASK_ENTRY, wire.MASKED_PREFIX.size,
                       wire.RECIPIENT_TAG_ENTRY, wire.CONSISTENCY_TAG_ENTRY, wire.GRAPH_SEED_ENTRY, wire.REVEAL_BYTES)
    assert fw_wire.NO_COMMITMENT == wire.NO_COMMITMENT


def test_key_and_share_sizes(fw):
    fw_wire, fw_shamir, fw_auth = fw["secagg_wire"], fw["shamir"], fw["session_auth"]
    assert (fw_wire.KEY_BYTES, fw_wire.SIGNATURE_BYTES, fw_wire.TAG_BYTES, fw_wire.ROUND_KEY_BYTES,
            fw_wire.CIPHERTEXT_BYTES) == (wire.KEY_BYTES, wire.SIGNATURE_BYTES, wire.TAG_BYTES,
                                          wire.ROUND_KEY_BYTES, wire.CIPHERTEXT_BYTES)
    assert (fw_shamir.PRIME, fw_shamir.SECRET_BYTES, fw_shamir.SHARE_BYTES, fw_shamir.MAX_INDEX) == \
        (shamir.PRIME, shamir.SECRET_BYTES, shamir.SHARE_BYTES, shamir.MAX_INDEX)
    assert (fw_auth.TAG_BYTES, fw_auth.INFO_SESSION, fw_auth.INFO_CONSISTENCY) == \
        (session.TAG_BYTES, session.INFO_SESSION, session.INFO_PAIRWISE_CONSISTENCY)


def _config_body(dim=8, threshold=3, max_clients=4, mask_bits=64, clip_q=1, neighbors=0, flags=0,
                 security=config.ACTIVE) -> bytes:
    # Packed by hand: the protocol's encoder would refuse the out-of-range cases up front.
    return struct.pack(config.CONFIG_STRUCT.format, dim, mask_bits, 16, security, flags, threshold,
                       neighbors, max_clients, 0, clip_q, 1)


def _verdicts(fw, body: bytes) -> tuple[str, str]:
    """The error class name each side raises for this ROUND_CONFIG body ('' when it accepts)."""
    try:
        config.RoundConfig.decode(body)
        ours = ""
    except errors.ProtocolError as exc:
        ours = type(exc).__name__
    try:
        fw["secagg_wire"].RoundConfig(body)
        theirs = ""
    except fw["secagg_errors"].ProtocolError as exc:
        theirs = type(exc).__name__
    return ours, theirs


@pytest.mark.parametrize("fields, accepted", [
    ({"dim": 0}, False), ({"dim": 1}, True), ({"dim": config.MAX_DIM}, True), ({"dim": config.MAX_DIM + 1}, False),
    ({"max_clients": 1, "threshold": 1}, False), ({"max_clients": 2, "threshold": 2}, True),
    ({"max_clients": 0xFFFF, "threshold": 2 * 0xFFFF // 3 + 1}, True),
    # A wire value, not a policy: a low threshold decodes (the security floor refuses it), one
    # above the group cannot be met and is malformed.
    ({"max_clients": 0xFFFF, "threshold": 2 * 0xFFFF // 3}, True), ({"threshold": 0}, False),
    ({"max_clients": 4, "threshold": 5}, False), ({"max_clients": 10, "threshold": 4, "neighbors": 2}, False),
    ({"mask_bits": 48}, False), ({"neighbors": 3}, False), ({"clip_q": 0}, False),
    ({"flags": config.FLAG_NEW_GRAPH}, False), ({"flags": config.FLAG_NEW_GRAPH | config.FLAG_KEY_REUSE}, False),
    ({"flags": config.FLAG_NEW_GRAPH | config.FLAG_KEY_REUSE, "neighbors": 2, "threshold": 3}, True),
    ({"flags": 0x08}, False), ({"security": 2}, False),
])
def test_round_config_limits(fw, fields, accepted):
    ours, theirs = _verdicts(fw, _config_body(**fields))
    assert ours == theirs
    assert (ours == "") is accepted


def test_device_caps_stay_within_the_protocol(fw):
    fw_wire, fw_client, fw_agent_wire, fw_agent = fw["secagg_wire"], fw["secagg_client"], fw["agent_wire"], fw["agent"]
    assert fw_wire.MAX_DIM == config.MAX_DIM
    assert fw_client.DEFAULT_MAX_BODY <= wire.MAX_BODY
    assert fw_agent_wire.MAX_JSON_BYTES <= fednet.MAX_JSON_BYTES
    assert fw_agent_wire.MAX_TENSORS <= fednet.MAX_TENSORS
    assert fw_agent.PAYLOAD_LIMIT_BYTES == load_profile("esp32").payload_limit_bytes
    assert fw_agent_wire.MAX_JSON_BYTES <= fw_agent.PAYLOAD_LIMIT_BYTES


def test_mqtt_packet_limits(fw):
    # The board announces the packet of its payload limit as its MQTT 5 Maximum Packet Size.
    from ztfl.fednet import transport
    assert fw["mqtt"].PUBLISH_OVERHEAD == transport.PUBLISH_OVERHEAD
    assert fw["mqtt"].MQTT_MAX_PACKET == transport.MQTT_MAX_PACKET


def test_envelope_and_model_headers(fw):
    fw_agent_wire = fw["agent_wire"]
    assert (fw_agent_wire.ENV_MAGIC, fw_agent_wire.MODEL_MAGIC) == (fednet.ENV_MAGIC, fednet.MODEL_MAGIC)
    assert fw_agent_wire.ENV_HEAD_BYTES == struct.calcsize(fw_agent_wire.ENV_HEAD)
    assert fw_agent_wire.MODEL_HEAD_BYTES == struct.calcsize(fw_agent_wire.MODEL_HEAD)
    # Both ways through the real codecs: layout, magic and version byte agree.
    body = bytes(range(40))
    ours = fednet.Envelope(7, 3, "micro-32", "masked", body).encode()
    theirs = fw_agent_wire.envelope_prefix(7, 3, "micro-32", "masked", len(body)) + body
    assert theirs == ours
    got = fw_agent_wire.Envelope(ours, len(ours))
    assert (got.round, got.attempt, got.cohort, got.stage, got.body) == (7, 3, "micro-32", "masked", body)


def test_attestation_binding(fw):
    fw_attest = fw["attest"]
    assert (fw_attest.SOFTWARE_QUOTE_LABEL, fw_attest.TAG_SOFTWARE, fw_attest.MIN_NONCE_BYTES) == \
        (binding.SOFTWARE_QUOTE_LABEL, attest_messages.TAG_SOFTWARE, binding.MIN_NONCE_BYTES)
    nonce, keys = bytes(range(64)), bytes(range(32))
    assert fw_attest.qualifying_data(nonce, 33, keys) == binding.qualifying_data(nonce, 33, keys)
    for n in (binding.MIN_NONCE_BYTES - 1, fw_attest.MAX_NONCE_BYTES + 1):
        with pytest.raises(ValueError):
            binding.qualifying_data(bytes(n), 33, keys)
        with pytest.raises(fw_attest.AttestError):
            fw_attest.qualifying_data(bytes(n), 33, keys)


def test_stage_names(fw):
    fw_client = fw["secagg_client"]
    assert fw_client.ORDER == tuple(stage.value for stage in stages.Stage.order(reveal=True))
    for stage in stages.Stage:
        assert getattr(fw_client, stage.name) == stage.value


@pytest.mark.parametrize("key_reuse, reveal", stages.KINDS)
def test_client_transitions(fw, key_reuse, reveal):
    fw_client = fw["secagg_client"]
    table = stages.client_transitions(key_reuse, reveal)
    for stage in stages.Stage:
        for mtype in wire.MESSAGE_TYPES:
            try:
                ours = stages.next_stage(table, stage, mtype).value
            except errors.InvalidTransition:
                ours = "InvalidTransition"
            try:
                theirs = fw_client.next_stage(stage.value, mtype, key_reuse, reveal)
            except fw["secagg_errors"].InvalidTransition:
                theirs = "InvalidTransition"
            assert theirs == ours, f"{stage.value} + 0x{mtype:02x} (key reuse {key_reuse}, reveal {reveal})"


@pytest.mark.parametrize("fields", [
    {"max_clients": 5, "threshold": 4}, {"max_clients": 5, "threshold": 3}, {"max_clients": 4, "threshold": 3},
    {"max_clients": 5, "threshold": 4, "security": config.SEMI_HONEST},
    {"max_clients": 5, "threshold": 1, "flags": config.FLAG_THRESHOLD_OVERRIDE},
    {"max_clients": 100, "threshold": 4, "neighbors": 4}, {"max_clients": 100, "threshold": 3, "neighbors": 2},
    {"max_clients": 100, "threshold": 67}, {"max_clients": 100, "threshold": 66},
])
def test_security_floor_verdicts_and_defaults(fw, fields):
    """The board's floor refuses what the agent's refuses, with the same error, and has the same
    defaults; a stricter provisioned floor refuses more on both sides."""
    body = _config_body(**fields)
    ours_cfg, theirs_cfg = config.RoundConfig.decode(body), fw["secagg_wire"].RoundConfig(body)
    for kwargs in ({}, {"min_group": 8, "min_neighbors": 6}):
        verdicts = []
        for floor, cfg, root in ((config.SecurityFloor(**kwargs), ours_cfg, errors.ProtocolError),
                                 (fw["secagg_client"].SecurityFloor(**kwargs), theirs_cfg,
                                  fw["secagg_errors"].ProtocolError)):
            try:
                floor.check_config(cfg)
                verdicts.append("")
            except root as exc:
                verdicts.append(type(exc).__name__)
        assert verdicts[0] == verdicts[1], (fields, kwargs)
    fw_floor = fw["secagg_client"].SecurityFloor()
    assert (fw_floor.min_group, fw_floor.min_neighbors) == (config.SecurityFloor().min_group,
                                                            config.SecurityFloor().min_neighbors)


def _error_classes(module, root: type) -> dict[str, type]:
    return {name: cls for name, cls in vars(module).items()
            if isinstance(cls, type) and issubclass(cls, root)}


def test_error_names_and_hierarchy(fw):
    fw_errors = fw["secagg_errors"]
    ours = _error_classes(errors, errors.ProtocolError)
    theirs = _error_classes(fw_errors, fw_errors.ProtocolError)
    assert set(ours) - set(theirs) == PROTOCOL_ONLY_ERRORS
    assert set(theirs) <= set(ours), f"firmware-only errors: {sorted(set(theirs) - set(ours))}"
    for name, cls in theirs.items():
        if name == "ProtocolError":
            continue                # the root; the firmware has no Refusal above it (nothing counts there)
        parent = cls.__mro__[1].__name__
        assert parent == ours[name].__mro__[1].__name__, f"{name} derives from {parent} in the firmware"
    assert fw_errors.RoundAborted("x").code == errors.RoundAborted("x").code


def test_attempt_ids(fw):
    fw_agent_wire = fw["agent_wire"]
    assert fw_agent_wire.ATTEMPTS_PER_ROUND == rounds.ATTEMPTS_PER_ROUND
    for round_id, attempt in ((0, 0), (1, 0), (3, 2), (7, rounds.ATTEMPTS_PER_ROUND - 1), (1 << 20, 5)):
        assert fw_agent_wire.attempt_id(round_id, attempt) == rounds.attempt_id(round_id, attempt)
    # An announcement without key-epoch fields: both sides derive the same epoch from it.
    ann = fednet.RoundAnnounce(5, 3, "micro-32", "micro", 32, 0, "00" * 32, [["esp-1", 1, "ab" * 32]], 2,
                               "cd" * 32, {"masked": 60.0})
    assert fw_agent_wire.decode_round(ann.encode()).epoch == ann.keying.epoch == rounds.attempt_id(5, 3)
    # The formula is written once in the firmware too.
    for path in sorted((FIRMWARE_DIR / "ztfw").glob("*.py")):
        assert not re.search(r"round\w*\s*\*\s*16\b", path.read_text()), f"{path.name} writes round * 16"


def test_json_payloads_decode_alike(fw):
    """A hello the firmware writes is one the gateway reads; every announcement field the gateway
    may send is one the firmware knows (it refuses unknown fields), with the same type."""
    fw_agent_wire = fw["agent_wire"]
    doc = json.loads(fw_agent_wire.hello("esp-1", "esp32", "micro", 32, "micropython", 10, "device-key", "ab" * 32))
    assert fednet.Hello.decode(json.dumps(doc).encode()).agent_id == "esp-1"
    known = dict(fw_agent_wire.RoundAnnounce.FIELDS) | {n: t for n, t, _ in fw_agent_wire.RoundAnnounce.OPTIONAL}
    for name, kind in fednet.RoundAnnounce._TYPES.items():
        assert known.get(name) is kind, f"RoundAnnounce field {name!r}"
