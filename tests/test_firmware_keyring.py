"""The firmware's keyring (ztfw/keyring.py) follows the rules of protocol.epochs.ClientKeyring:
the same sequence of rounds gives the same key generations, for the same reasons, in real
MicroPython; and the agent's round announcement accepts the key-epoch fields."""
from __future__ import annotations

from ztfl.protocol.epochs import ClientKeyring, EpochPolicy
from ztfl.firmware_tools.micropython_host import run_json

_KEYRING = r"""
import sys, json
from ztfw.keyring import ClientKeyring, EpochPolicy

class Done:
    def __init__(self, keys, exposed):
        self.keys = keys
        self.keys_exposed = exposed

d = json.loads(sys.stdin.read())
out = []
for policy, events in d:
    ring = ClientKeyring(EpochPolicy(policy[0], policy[1]))
    log = []
    last = None
    for epoch, rnd, now, reuse, exposed in events:
        try:
            keys = ring.keys_for(epoch, rnd, now, reuse)
        except ValueError as e:
            log.append(["ValueError", str(e)])
            continue
        ended = ring.finish(Done(keys, exposed))
        log.append([keys.epoch, keys.uses, keys is not last, ended])
        last = keys
    out.append({"log": log, "rekeys": [[r, why] for r, why in ring.rekeys]})
bad = []
for args in ((0, 10.0), (True, 10.0), (2, 0), (2, float("inf")), (2, True)):
    try:
        EpochPolicy(*args)
        bad.append("accepted %r" % (args,))
    except ValueError:
        pass
print(json.dumps({"runs": out, "bad_policies": bad}))
"""

# (max_rounds, max_seconds), then rounds: (epoch, round id, now s, key_reuse, keys exposed by the round)
SCENARIOS = [
    # One epoch of three rounds, then the lifetime in rounds ends it.
    ((3, 1000.0), [(5, 10, 0, True, False), (5, 11, 1, True, False), (5, 12, 2, True, False),
                   (5, 13, 3, True, False), (5, 14, 4, True, False)]),
    # New gateway epoch; a round id that does not increase; the lifetime in seconds.
    ((100, 50.0), [(5, 10, 0, True, False), (6, 11, 1, True, False), (6, 11, 2, True, False),
                   (6, 12, 3, True, False), (6, 13, 60, True, False), (6, 14, 61, True, False)]),
    # A classic round gets keys of its own; one that exposed the secret ends the epoch.
    ((100, 1000.0), [(5, 10, 0, True, False), (5, 11, 1, False, True), (5, 12, 2, True, False),
                     (5, 13, 3, True, False), (5, 14, 4, False, False), (5, 15, 5, False, False)]),
    # Per-round key agreement: every round has fresh keys.
    ((1, 1000.0), [(7, 1, 0, True, False), (7, 2, 1, True, False), (7, 3, 2, True, False)]),
    # Ids that are not u32 are refused without touching the keys.
    ((100, 1000.0), [(5, 10, 0, True, False), (-1, 11, 1, True, False), (5, 2 ** 32, 1, True, False),
                     (5, 11, 2, True, False)]),
]


def _reference(policy, events):
    ring = ClientKeyring(EpochPolicy(*policy))
    log, last = [], None

    class Done:
        def __init__(self, keys, exposed):
            self.keys, self.keys_exposed = keys, exposed

    for epoch, rnd, now, reuse, exposed in events:
        try:
            keys = ring.keys_for(epoch, rnd, now, reuse)
        except ValueError:
            log.append("ValueError")
            continue
        log.append((keys.epoch, keys.uses, keys is not last, ring.finish(Done(keys, exposed))))
        last = keys
    return log, [(r, why.value) for r, why in ring.rekeys]


def test_firmware_keyring_makes_the_same_key_generations_as_the_reference():
    out = run_json(_KEYRING, [[list(p), [list(e) for e in ev]] for p, ev in SCENARIOS])
    assert out["bad_policies"] == []
    for (policy, events), run in zip(SCENARIOS, out["runs"]):
        ref_log, ref_rekeys = _reference(policy, events)
        got = ["ValueError" if entry[0] == "ValueError" else tuple(entry) for entry in run["log"]]
        assert got == ref_log, (policy, events)
        assert [tuple(r) for r in run["rekeys"]] == ref_rekeys


_ANNOUNCE = r"""
import sys, json
from ztfw.agent_wire import decode_round, WireError
out = []
for doc in json.loads(sys.stdin.read()):
    try:
        m = decode_round(json.dumps(doc).encode())
        out.append([m.epoch, m.protocol_round, m.key_reuse, m.dp])
    except WireError as e:
        out.append(["WireError", str(e)])
print(json.dumps(out))
"""

BASE = {"round": 7, "attempt": 2, "cohort": "micro-32", "model_variant": "micro", "mask_bits": 32,
        "model_version": 3, "model_sha256": "0" * 64, "participants": [], "threshold": 2, "nonce": "00",
        "deadlines_s": {}}


ANNOUNCEMENTS = [
    ({}, [7 * 16 + 2, 7, False, None]),                                 # the fields as before
    ({"epoch": 3, "protocol_round": 1794, "key_reuse": True}, [3, 1794, True, None]),
    ({"epoch": 0, "protocol_round": 2 ** 32 - 1}, [0, 2 ** 32 - 1, False, None]),
    ({"dp": {"mechanism": "skellam"}}, [7 * 16 + 2, 7, False, {"mechanism": "skellam"}]),
    ({"epoch": 2 ** 32}, "WireError"),
    ({"protocol_round": -1}, "WireError"),
    ({"key_reuse": 1}, "WireError"),
    ({"epoch": True}, "WireError"),
    ({"epoch": 1.5}, "WireError"),
    ({"dp": [1]}, "WireError"),
    ({"dp": None}, "WireError"),
    ({"dp_noise": 1}, "WireError"),
]


def test_round_announcement_key_epoch_fields():
    out = run_json(_ANNOUNCE, [{**BASE, **extra} for extra, _ in ANNOUNCEMENTS])
    for (extra, expected), got in zip(ANNOUNCEMENTS, out):
        if expected == "WireError":
            assert got[0] == "WireError", extra
        else:
            assert got == expected, extra
