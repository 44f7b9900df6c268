"""The firmware's secure-aggregation client (real MicroPython) in rounds run by the CPython
server next to CPython clients: the aggregate must be exact, dropouts and the graph reveal of
sparse rounds included, and hostile or malformed server frames must be refused with a typed
error and no change of stage."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from nacl.signing import SigningKey

from ztfl.protocol import wire
from ztfl.protocol.client import ClientSession
from ztfl.protocol.config import RoundConfig
from ztfl.protocol.server import ServerSession
from ztfl.protocol.simulate import Cohort, expected_sums
from ztfl.protocol.stages import Stage
from ztfl.firmware_tools.micropython_host import FirmwareClient, drive_round, run_json

EPOCH, ROUND = 5, 9


def _run_round(config, ids, firmware_ids, drop_before=None, seed=0):
    """One round through the CPython ServerSession (micropython_host.drive_round); returns (server,
    inputs, weights, per firmware client its stats and `answered`: the stages it replied in)."""
    drop_before = drop_before or {}
    cohort = Cohort.create(ids, epoch=EPOCH)
    rng = np.random.default_rng(seed)
    # float32 values: the device holds its weights as float32, so both sides quantise the same numbers.
    inputs = {c: rng.normal(0, 1.5, config.dim).astype(np.float32) for c in ids}
    weights = {c: 1 + (7 * c) % config.max_weight for c in ids}
    server = ServerSession(config, cohort.server_identity, cohort.directory, EPOCH, ROUND)
    clients, firmware = {}, []
    try:
        for c in ids:
            keys = cohort.epoch_keys[c]
            if c in firmware_ids:
                fw = FirmwareClient()
                firmware.append((c, fw))
                fw.open_session(c, cohort.identities[c].encode(),
                                {k: bytes(v) for k, v in cohort.directory.items()}, EPOCH, keys.c_sk, keys.s_sk,
                                ROUND)
                fw.set_input(inputs[c], weights[c])
                clients[c] = fw
            else:
                session = ClientSession(c, cohort.identities[c], cohort.directory, keys, ROUND)
                session.set_input(inputs[c], weights[c])
                clients[c] = session
        # A firmware refusal of a valid frame fails the test (MicroPythonError).
        replies = drive_round(server, clients, drop_before)
        assert server.stage != Stage.ABORTED, server.abort_reason
        stats = {c: {**fw.stats(), "answered": [s for s, r in replies[c].items() if r.get("reply")]}
                 for c, fw in firmware}
    finally:
        for _, fw in firmware:
            fw.close()
    return server, inputs, weights, stats


def test_mixed_round_with_two_firmware_clients_is_exact():
    config = RoundConfig(dim=300, threshold=4, max_clients=5, mask_bits=32, max_weight=50)
    server, inputs, weights, stats = _run_round(config, [1, 2, 3, 4, 5], {2, 4})
    expected, total_weight = expected_sums(config, inputs, weights, [1, 2, 3, 4, 5])
    assert np.array_equal(server.result.sums, expected)
    assert server.result.total_weight == total_weight
    assert all(s["stage"] == "Done" for s in stats.values())
    # A complete graph: no graph reveal.
    assert stats[2]["answered"] == ["AdvertiseKeys", "ShareKeys", "MaskedInputCollection", "ConsistencyCheck",
                                    "Unmasking"]


def test_firmware_clients_unmask_a_dropped_cpython_client():
    # Client 1 (CPython) vanishes after sharing its keys: the firmware clients must release
    # their shares of its mask key so its pairwise masks can be removed.
    config = RoundConfig(dim=100, threshold=4, max_clients=5, mask_bits=32)
    server, inputs, weights, _ = _run_round(config, [1, 2, 3, 4, 5], {3, 4},
                                            drop_before={1: Stage.MASKED_INPUT_COLLECTION}, seed=1)
    assert server.result.dropped == (1,)
    expected, total_weight = expected_sums(config, inputs, weights, [2, 3, 4, 5])
    assert np.array_equal(server.result.sums, expected)
    assert server.result.total_weight == total_weight


def test_sparse_neighbour_graph_round_with_a_dropped_firmware_client():
    # SecAgg+ graph of degree 4 over 7 clients, fixed by everyone's reveal (the firmware clients
    # commit, reveal and derive it too); firmware client 5 drops after ShareKeys.
    config = RoundConfig(dim=64, threshold=4, max_clients=7, mask_bits=32, neighbors=4)
    assert config.reveals_graph
    server, inputs, weights, stats = _run_round(config, [1, 2, 3, 4, 5, 6, 7], {2, 5},
                                                drop_before={5: Stage.MASKED_INPUT_COLLECTION}, seed=2)
    assert server.result.dropped == (5,) and set(server.reveals) == set(range(1, 8))
    assert stats[2]["answered"] == ["AdvertiseKeys", "GraphReveal", "ShareKeys", "MaskedInputCollection",
                                    "ConsistencyCheck", "Unmasking"]
    assert stats[5]["answered"] == ["AdvertiseKeys", "GraphReveal", "ShareKeys"]
    expected, total_weight = expected_sums(config, inputs, weights, [1, 2, 3, 4, 6, 7])
    assert np.array_equal(server.result.sums, expected)
    assert server.result.total_weight == total_weight


def test_64_bit_masks_round_is_exact():
    config = RoundConfig(dim=40, threshold=4, max_clients=5, mask_bits=64)
    server, inputs, weights, _ = _run_round(config, [1, 2, 3, 4, 5], {2}, seed=3)
    expected, _ = expected_sums(config, inputs, weights, [1, 2, 3, 4, 5])
    assert np.array_equal(server.result.sums, expected)


PEERS = (2, 3, 4, 5)
SMALLEST = RoundConfig(dim=16, threshold=4, max_clients=5)       # what the default floor accepts


@pytest.fixture
def lone_firmware_client():
    """A firmware session of client 1 (with peers 2 to 5 enrolled) and the server's key."""
    server_key = SigningKey.generate()
    identities = {c: SigningKey.generate() for c in (1, *PEERS)}
    directory = {0: bytes(server_key.verify_key), **{c: bytes(k.verify_key) for c, k in identities.items()}}
    fw = FirmwareClient()
    fw.open_session(1, identities[1].encode(), directory, EPOCH, bytes(range(32)), bytes(range(32, 64)), ROUND)
    yield fw, server_key, identities
    fw.close()


def test_firmware_refuses_bad_server_frames_and_keeps_its_stage(lone_firmware_client):
    fw, server_key, identities = lone_firmware_client
    config = SMALLEST
    good = wire.RoundConfigMessage(0, EPOCH, ROUND, config).encode(server_key)

    def resign(frame: bytes, key=server_key) -> bytes:
        head, body = frame[:20], frame[20:-64]
        import hashlib
        return head + body + key.sign(head + hashlib.sha256(body).digest()).signature

    tampered = bytearray(good)
    tampered[25] ^= 1                                   # a config byte, signature left as is
    wrong_round = wire.RoundConfigMessage(0, EPOCH, ROUND + 1, config).encode(server_key)
    by_peer = wire.RoundConfigMessage(2, EPOCH, ROUND, config).encode(identities[2])
    forged = resign(good, identities[2])                 # sender 0, signed by someone else
    bad_magic = resign(b"XS" + good[2:-64] + good[-64:])
    bad_version = resign(good[:2] + b"\x02" + good[3:-64] + good[-64:])
    unknown_type = resign(good[:3] + b"\x7f" + good[4:-64] + good[-64:])
    long_len = good[:16] + struct.pack("<I", 29) + good[20:]
    roster_first = wire.Roster(0, EPOCH, ROUND, ()).encode(server_key)
    unsafe = bytearray(config.encode())
    unsafe[8:10] = struct.pack("<H", 1)                # threshold 1 without the override flag
    impossible = bytearray(config.encode())
    impossible[8:10] = struct.pack("<H", 6)            # more shares needed than the group holds
    unsafe_cfg = resign(good[:20] + bytes(unsafe) + good[-64:])
    impossible_cfg = resign(good[:20] + bytes(impossible) + good[-64:])
    cases = [
        (bytes(tampered), "BadSignature"),
        (wrong_round, "WrongRound"),
        (by_peer, "UnknownSender"),
        (forged, "BadSignature"),
        (bad_magic, "MalformedMessage"),
        (bad_version, "UnsupportedVersion"),
        (unknown_type, "MalformedMessage"),
        (long_len, "MalformedMessage"),
        (good[:83], "MalformedMessage"),
        (good + b"\x00", "MalformedMessage"),
        (roster_first, "InvalidTransition"),
        (unsafe_cfg, "ThresholdBelowFloor"),
        (impossible_cfg, "MalformedMessage"),
    ]
    for frame, error in cases:
        reply, got = fw.receive(frame)
        assert (reply, got) == (None, error), frame.hex()
        assert fw.stage == "AdvertiseKeys"
    reply, error = fw.receive(good)
    assert error is None and fw.stage == "ShareKeys"
    advert = wire.decode_frame(reply)
    advert.verify(identities[1].verify_key)
    assert advert.message.config_digest == config.digest()
    # The same ROUND_CONFIG again is not a valid transition any more.
    assert fw.receive(good) == (None, "InvalidTransition")


def _entry(identity, client_id, config, c_sk, s_sk) -> wire.RosterEntry:
    """A peer's honest roster entry: its keys and its signature of its ADVERTISE_KEYS."""
    from nacl.bindings import crypto_scalarmult_base
    advert = wire.AdvertiseKeys(client_id, EPOCH, ROUND, config.digest(), crypto_scalarmult_base(c_sk),
                                crypto_scalarmult_base(s_sk))
    return wire.RosterEntry(client_id, advert.c_pk, advert.s_pk, advert.encode(identity)[-64:])


def test_firmware_refuses_a_roster_with_a_forged_entry(lone_firmware_client):
    fw, server_key, identities = lone_firmware_client
    config = SMALLEST
    reply, _ = fw.receive(wire.RoundConfigMessage(0, EPOCH, ROUND, config).encode(server_key))
    mine = wire.decode_frame(reply)
    own = wire.RosterEntry(1, mine.message.c_pk, mine.message.s_pk, mine.signature)
    peers = [_entry(identities[c], c, config, bytes([c]) * 32, bytes([c + 100]) * 32) for c in PEERS]
    honest = peers[0]
    forged = wire.RosterEntry(2, honest.c_pk, honest.s_pk, SigningKey.generate().sign(b"x").signature)
    duplicate_key = wire.RosterEntry(2, mine.message.c_pk, honest.s_pk, honest.signature)
    for entry, error in ((forged, "BadSignature"), (duplicate_key, "DuplicateMessage")):
        roster = wire.Roster(0, EPOCH, ROUND, (own, entry, *peers[1:])).encode(server_key)
        assert fw.receive(roster) == (None, error)
        assert fw.stage == "ShareKeys"
    without_me = wire.Roster(0, EPOCH, ROUND, tuple(peers)).encode(server_key)
    assert fw.receive(without_me) == (None, "ConsistencyViolation")
    # A commitment in a round that reveals nothing is not what this client advertised.
    committed = wire.RosterEntry(1, own.c_pk, own.s_pk, own.signature, bytes([7]) * 32)
    assert fw.receive(wire.Roster(0, EPOCH, ROUND, (committed, *peers)).encode(server_key)) == \
        (None, "ConsistencyViolation")
    # Four of the five: a group below the board's floor, whatever the signatures.
    assert fw.receive(wire.Roster(0, EPOCH, ROUND, (own, *peers[:3])).encode(server_key)) == \
        (None, "GroupBelowFloor")
    reply, error = fw.receive(wire.Roster(0, EPOCH, ROUND, (own, *peers)).encode(server_key))
    assert error is None and fw.stage == "MaskedInputCollection"
    shares = wire.decode_frame(reply).message
    assert [s.peer for s in shares.shares] == list(PEERS)


_MASK_SCRIPT = r"""
import sys, json, array
from binascii import hexlify, unhexlify
from ztfw import wordops
from ztfw.masking import MaskedStream
d = json.loads(sys.stdin.read())
vals = array.array("f", d["values"])
def src(start, n, out):
    for i in range(n):
        out[i] = vals[start + i]
res = []
for viper in (True, False):
    wordops.use_viper(viper)
    for bits in (32, 64):
        m = MaskedStream(len(vals), bits, d["frac"], d["clip"], d["weight"], src,
                         [unhexlify(k) for k in d["plus"]], [unhexlify(k) for k in d["minus"]], chunk=d["chunk"])
        res.append(hexlify(b"".join(bytes(c) for c in m.chunks())).decode())
print(json.dumps({"viper": wordops.HAVE_VIPER, "out": res}))
"""


def test_masked_stream_matches_the_reference_encoder_in_both_word_paths():
    from ztfl.protocol import fixedpoint, prg
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(0, 3, 97), [0.5, -0.5, 1.5, 2.5, -2.5, 9.0, -9.0, 1e-9]]).astype(np.float32)
    plus, minus = [bytes([7]) * 16, bytes([9]) * 16], [bytes([1]) * 16]
    frac, clip, weight = 12, 8 << 12, 13
    out = run_json(_MASK_SCRIPT, {"values": [float(v) for v in values], "frac": frac, "clip": clip, "weight": weight,
                                  "plus": [k.hex() for k in plus], "minus": [k.hex() for k in minus], "chunk": 32})
    assert out["viper"] is True   # the unix port has the viper emitter, as the ESP32 port does
    for i, bits in enumerate((32, 64) * 2):
        e = fixedpoint.encode(values, weight, frac, clip, bits)
        for k in plus:
            e = e + prg.mask(k, values.size + 1, bits)
        for k in minus:
            e = e - prg.mask(k, values.size + 1, bits)
        assert out["out"][i] == e.tobytes().hex(), (i, bits)


@pytest.mark.parametrize("neighbors", [0, 4], ids=["complete", "graph-reveal"])
def test_firmware_stage_transition_matrix(neighbors):
    """Walk a full round; at every stage every message type except the expected one (and ABORT,
    which ends any unfinished stage) is refused with InvalidTransition, leaving the stage as is.
    With a sparse graph the round has the GraphReveal stage as well."""
    config = RoundConfig(dim=8, threshold=5, max_clients=6, mask_bits=32, neighbors=neighbors)
    ids = [1, 2, 3, 4, 5, 6]
    cohort = Cohort.create(ids, epoch=EPOCH)
    server = ServerSession(config, cohort.server_identity, cohort.directory, EPOCH, ROUND)
    peers = {c: ClientSession(c, cohort.identities[c], cohort.directory, cohort.epoch_keys[c], ROUND) for c in ids[:-1]}
    for c, s in peers.items():
        s.set_input(np.zeros(8, dtype=np.float32), 1)
    import hashlib

    def server_frame(mtype: int) -> bytes:
        body = bytes(4)
        head = struct.pack("<2sBBHHIII", b"ZS", 1, mtype, 0, 0, EPOCH, ROUND, len(body))
        return head + body + cohort.server_identity.sign(head + hashlib.sha256(body).digest()).signature

    expected = {"AdvertiseKeys": wire.ROUND_CONFIG, "ShareKeys": wire.ROSTER,
                "MaskedInputCollection": wire.SHARES_RELAY, "ConsistencyCheck": wire.CONSISTENCY_REQUEST,
                "Unmasking": wire.UNMASK_REQUEST}
    if config.reveals_graph:
        expected.update({"GraphReveal": wire.ROSTER, "ShareKeys": wire.GRAPH_SEEDS})
    all_types = sorted(wire.MESSAGE_TYPES)
    refused = 0
    with FirmwareClient() as fw:
        keys = cohort.epoch_keys[6]
        fw.open_session(6, cohort.identities[6].encode(), {k: bytes(v) for k, v in cohort.directory.items()},
                        EPOCH, keys.c_sk, keys.s_sk, ROUND)
        fw.set_input([0.5] * 8, 1)
        out = server.round_config()
        stages = []
        while not server.stage.terminal:
            stage = server.stage
            stages.append(stage)
            assert fw.stage is None or fw.stage == stage.value
            for mtype in all_types:
                if mtype in (expected[stage.value], wire.ABORT):
                    continue
                assert fw.receive(server_frame(mtype)) == (None, "InvalidTransition"), (stage, mtype)
                assert fw.stage == stage.value
                refused += 1
            for c in ids:
                frame = out if isinstance(out, bytes) else out.frame_for(c)
                if frame is None:
                    continue
                if c == 6:
                    reply, error = fw.receive(frame)
                    assert error is None
                else:
                    reply = peers[c].receive(frame)
                if reply:
                    server.receive(reply)
            out = server.close_stage()
        assert fw.stage == "Done"
        for mtype in all_types:   # nothing moves a finished session, not even ABORT
            assert fw.receive(server_frame(mtype)) == (None, "InvalidTransition")
            refused += 1
    assert stages == list(Stage.order(config.reveals_graph)[:-1])
    assert refused == len(stages) * (len(all_types) - 2) + len(all_types)
    assert server.result is not None


def test_firmware_abort_is_final(lone_firmware_client):
    fw, server_key, _ = lone_firmware_client
    config = SMALLEST
    assert fw.receive(wire.RoundConfigMessage(0, EPOCH, ROUND, config).encode(server_key))[1] is None
    bad_reserved = wire.Abort(0, EPOCH, ROUND, wire.ABORT_TIMEOUT).encode(server_key)
    head, body = bad_reserved[:20], b"\x04\x00\x01\x00"
    import hashlib
    bad_reserved = head + body + server_key.sign(head + hashlib.sha256(body).digest()).signature
    assert fw.receive(bad_reserved) == (None, "MalformedMessage") and fw.stage == "ShareKeys"
    assert fw.receive(wire.Abort(0, EPOCH, ROUND, wire.ABORT_TIMEOUT).encode(server_key)) == (None, None)
    assert fw.stage == "Aborted"
    assert fw.receive(wire.RoundConfigMessage(0, EPOCH, ROUND, config).encode(server_key)) == \
        (None, "InvalidTransition")


def test_firmware_checks_only_its_groups_consistency_signatures():
    """docs/protocol.md 2.2: a client verifies the survivor signatures of its own group only.
    A forged signature of a non-member is not looked at (it releases nothing about non-members);
    a forged one of a member is refused, and the stage stays where it was."""
    import hashlib
    config = RoundConfig(dim=16, threshold=4, max_clients=8, mask_bits=32, neighbors=4)
    ids, fw_id = [1, 2, 3, 4, 5, 6, 7, 8], 5
    cohort = Cohort.create(ids, epoch=EPOCH)
    server = ServerSession(config, cohort.server_identity, cohort.directory, EPOCH, ROUND)
    clients = {c: ClientSession(c, cohort.identities[c], cohort.directory, cohort.epoch_keys[c], ROUND)
               for c in ids if c != fw_id}
    for s in clients.values():
        s.set_input(np.zeros(16, dtype=np.float32), 1)

    def resigned(message) -> bytes:
        return message.encode(cohort.server_identity)

    with FirmwareClient() as fw:
        keys = cohort.epoch_keys[fw_id]
        fw.open_session(fw_id, cohort.identities[fw_id].encode(), {k: bytes(v) for k, v in cohort.directory.items()},
                        EPOCH, keys.c_sk, keys.s_sk, ROUND)
        fw.set_input([0.25] * 16, 1)
        out = server.round_config()
        while not server.stage.terminal:
            for c in ids:
                frame = out if isinstance(out, bytes) else out.frame_for(c)
                if frame is None:
                    continue
                if c != fw_id:
                    reply = clients[c].receive(frame)
                else:
                    msg = wire.decode_frame(frame).message
                    if isinstance(msg, wire.UnmaskRequest):
                        # The graph every member derived from the reveals, the server's too.
                        group = server.neighbours[fw_id] | {fw_id}
                        outsider = next(s for s, _ in msg.signatures if s not in group)
                        member = next(s for s, _ in msg.signatures if s in group and s != fw_id)

                        def forge(victim):
                            sigs = tuple((s, hashlib.sha512(sig).digest() if s == victim else sig)
                                         for s, sig in msg.signatures)
                            return resigned(wire.UnmaskRequest(0, EPOCH, ROUND, sigs, msg.dropped))

                        assert fw.receive(forge(member)) == (None, "BadSignature")
                        assert fw.stage == "Unmasking"
                        frame = forge(outsider)
                    reply, error = fw.receive(frame)
                    assert error is None, error
                if reply:
                    server.receive(reply)
            out = server.close_stage()
        assert fw.stage == "Done"
    assert server.result is not None and server.result.survivors == tuple(ids)


def test_firmware_refuses_the_unmask_request_of_the_other_round_kind(lone_firmware_client):
    """0x0E belongs to key-reuse rounds: a classic round refuses it even in stage Unmasking,
    as it refuses it in any other stage (and a key-reuse round refuses 0x09: session.json)."""
    import hashlib
    fw, server_key, _ = lone_firmware_client
    config = SMALLEST
    assert fw.receive(wire.RoundConfigMessage(0, EPOCH, ROUND, config).encode(server_key))[1] is None
    body = struct.pack("<HH", 0, 0)
    head = struct.pack("<2sBBHHIII", b"ZS", 1, wire.UNMASK_REQUEST_TAGS, 0, 0, EPOCH, ROUND, len(body))
    frame = head + body + server_key.sign(head + hashlib.sha256(body).digest()).signature
    assert fw.receive(frame) == (None, "InvalidTransition") and fw.stage == "ShareKeys"
