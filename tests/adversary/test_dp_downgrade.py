"""A malicious gateway against the agents' differential privacy.

The gateway used to set the DP noise, clip and survivors in the unsigned round announcement, and
only its own ledger counted: announcing a variance of 1e-300 made every agent send its update
with no noise. Now the DP parameters are signed in ROUND_CONFIG, each agent holds them to its
provisioned floor and to its own ledger, and refuses with a typed reason before its masked input
(or even its key advertisement) leaves; the ESP32 firmware, which adds no noise, refuses the same
rounds with the same reason codes. Everything here runs the real code: the protocol's
ServerSession signs the configuration, AgentAggregation is the daemon's client, the firmware
runs in the MicroPython unix port.
"""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from nacl.signing import SigningKey

from ztfl.agent.config import AgentConfig
from ztfl.agent.keyrings import AgentKeyrings
from ztfl.agent.privacy_guard import LEDGER_FILE, open_guard
from ztfl.agent.secagg import AgentAggregation
from ztfl.config import ConfigError
from ztfl.fednet.messages import RoundAnnounce, RoundKeying, dp_document
from ztfl.firmware_tools.micropython_host import run_json
from ztfl.gateway.secagg import cohort_round_config
from ztfl.privacy import clip_l2
from ztfl.privacy.accountant import epsilon_for
from ztfl.privacy.errors import (ClipAboveFloor, DpMismatch, DpRequired, NoiseBelowFloor, PrivacyBudgetSpent,
                                 SurvivorsBelowFloor)
from ztfl.privacy.floor import PrivacyFloor
from ztfl.privacy.guard import PrivacyGuard
from ztfl.privacy.params import DpParams
from ztfl.privacy.sampling import KeyedWords
from ztfl.protocol import wire
from ztfl.protocol.errors import ConfigurationError
from ztfl.protocol.fixedpoint import quantize
from ztfl.protocol.server import ServerSession
from ztfl.protocol.stages import Stage

COHORT = "cnn-lstm-32"
DIM = 2000
N = 5                      # the agents' security floor takes part in groups of at least 5
THRESHOLD = 4
# What a careful gateway signs: noise multiplier 2 over 4 honest survivors.
HONEST = DpParams(1.0, 16, DIM, (2.0 * (65536 + np.sqrt(DIM) / 2)) ** 2 / 4, 4).signed()


class Round:
    """One gateway round: a ServerSession signing `signed` into its ROUND_CONFIG, and the agents'
    AgentAggregation clients told `announced` by the announcement, each with its own guard."""

    def __init__(self, signed: DpParams | None, announced: DpParams | None, guards=None, epoch: int = 7,
                 round_id: int = 7):
        self.ids = {sid: SigningKey.generate() for sid in range(1, N + 1)}
        self.server_key = SigningKey.generate()
        config = cohort_round_config(32, DIM, THRESHOLD, N, True, signed)
        self.server = ServerSession(config, self.server_key, {s: k.verify_key for s, k in self.ids.items()},
                                    epoch, round_id)
        peers = {s: bytes(k.verify_key) for s, k in self.ids.items()}
        keying = RoundKeying(epoch, round_id, True)
        self.rings = {s: AgentKeyrings() for s in self.ids}
        guards = guards or {s: PrivacyGuard.in_memory() for s in self.ids}
        self.clients = {s: AgentAggregation(s, self.ids[s], bytes(self.server_key.verify_key), peers, round_id,
                                            self.rings[s].keys_for(COHORT, keying, float(round_id)), True,
                                            announced, KeyedWords.from_labels("adversary", s), privacy=guards[s])
                        for s in self.ids}
        self.sent: dict[int, list[int]] = {s: [] for s in self.ids}     # frame types each agent sent

    def run(self, updates: dict[int, np.ndarray]):
        frames = {s: self.server.round_config() for s in self.clients}
        while not self.server.stage.terminal:
            for sid, frame in frames.items():
                agg = self.clients[sid]
                replies = agg.receive(frame)
                if agg.wants_input:
                    replies += agg.provide_input(updates[sid], 3)
                for _, reply in replies:
                    self.sent[sid].append(wire.peek(reply).type)
                    self.server.receive(reply)
            out = self.server.close_stage()
            frames = {s: out.frame_for(s) for s in self.clients if out.frame_for(s) is not None}
        return self.server.result


def _refused_at_config(rnd: Round, refusal: type) -> None:
    """Every agent refuses the signed ROUND_CONFIG with `refusal`, sends nothing, and stays refused."""
    for sid, agg in rnd.clients.items():
        with pytest.raises(refusal) as caught:
            agg.receive(rnd.server.round_config())
        assert caught.value.reason == refusal.reason
        assert agg.provide_input(np.zeros(DIM), 1) == []          # not even a held frame is answered
        with pytest.raises(ConfigurationError, match="round refused"):
            agg.receive(rnd.server.round_config())
        assert rnd.sent[sid] == []


def test_a_tiny_signed_variance_is_refused_before_anything_leaves():
    # Poisson(1) - Poisson(1): the smallest the configuration can carry, noise multiplier ~ 4e-5.
    tiny = DpParams(1.0, 16, DIM, 2.0, 4)
    _refused_at_config(Round(tiny, tiny), NoiseBelowFloor)


def test_a_tiny_announced_variance_cannot_lower_the_signed_noise():
    # The old attack, 1e-300 in the JSON: the announcement no longer sets anything. Whatever the
    # configuration signs (careful noise, or no DP at all), a differing announcement is refused.
    ann = RoundAnnounce(3, 0, COHORT, "cnn-lstm", 32, 1, "00" * 32, [["a", 1, "ab" * 32]], THRESHOLD, "cd" * 32,
                        {"masked": 60.0}, dp={**dp_document(HONEST), "noise_variance": 1e-300})
    whisper = ann.dp_params
    assert whisper.noise_variance == 1e-300
    _refused_at_config(Round(HONEST, whisper), DpMismatch)
    _refused_at_config(Round(None, whisper), DpMismatch)


def test_a_large_clip_is_refused_even_with_proportional_noise():
    # Same noise multiplier as HONEST, but updates clipped to 1000: above the agents' maximum.
    loud = DpParams(1000.0, 16, DIM, HONEST.noise_variance * 1000.0 ** 2, 4).signed()
    assert loud.noise_multiplier() == pytest.approx(HONEST.noise_multiplier(), rel=1e-3)
    _refused_at_config(Round(loud, loud), ClipAboveFloor)


def test_noise_that_counts_on_too_few_survivors_is_refused():
    few = DpParams(1.0, 16, DIM, HONEST.noise_variance * 4, 2).signed()     # same total noise, on 2 agents
    _refused_at_config(Round(few, few), SurvivorsBelowFloor)


def test_signed_and_announced_parameters_must_be_the_same():
    stronger = DpParams(1.0, 16, DIM, HONEST.noise_variance * 9, 4).signed()
    _refused_at_config(Round(HONEST, stronger), DpMismatch)       # JSON says more noise than signed
    _refused_at_config(Round(stronger, HONEST), DpMismatch)       # ... or less
    _refused_at_config(Round(HONEST, None), DpMismatch)           # signed DP the announcement hides


def test_an_agent_that_requires_dp_refuses_a_round_without_it():
    guards = {s: PrivacyGuard.in_memory(PrivacyFloor(require_dp=True)) for s in range(1, N + 1)}
    _refused_at_config(Round(None, None, guards), DpRequired)


def test_an_honest_dp_round_adds_the_signed_noise_and_both_ledgers_agree():
    rng = np.random.default_rng(1)
    updates = {s: rng.normal(0, 0.5, DIM) for s in range(1, N + 1)}          # L2 norm ~22: clipped to 1
    rnd = Round(HONEST, HONEST)
    result = rnd.run(updates)
    assert result is not None and result.total_weight == N                   # weight 1 each
    assert all(wire.MASKED_INPUT in sent for sent in rnd.sent.values())
    clipped = sum(quantize(clip_l2(updates[s], 1.0), 16, 8 << 16) for s in rnd.clients)
    noise = (result.sums - clipped).astype(np.float64)
    assert abs(noise.std() / np.sqrt(N * HONEST.noise_variance) - 1) < 0.1
    # Each agent's ledger spent what the gateway's accountant says one round costs.
    for agg in rnd.clients.values():
        assert agg.privacy.ledger.epsilon_spent == pytest.approx(epsilon_for(HONEST, 1, 1e-5), rel=1e-12)


def test_an_exhausted_ledger_stops_the_agent_and_survives_a_restart(tmp_path):
    two, three = epsilon_for(HONEST, 2, 1e-5), epsilon_for(HONEST, 3, 1e-5)
    floor = PrivacyFloor(epsilon=(two + three) / 2, delta=1e-5)            # two rounds fit, not three
    state = {s: tmp_path / f"agent{s}" for s in range(1, N + 1)}
    rng = np.random.default_rng(2)
    updates = {s: rng.normal(0, 0.01, DIM) for s in state}
    for r in (1, 2):
        rnd = Round(HONEST, HONEST, {s: open_guard(floor, d) for s, d in state.items()}, epoch=r, round_id=r)
        assert rnd.run(updates) is not None
    records = json.loads((state[1] / LEDGER_FILE).read_text())["rounds"]
    assert [r["round"] for r in records] == ["epoch 1 round 1", "epoch 2 round 2"]
    # A restarted agent reads its ledger back: the third round is refused before advertising.
    restarted = {s: open_guard(floor, d) for s, d in state.items()}
    assert restarted[1].ledger.epsilon_spent == pytest.approx(epsilon_for(HONEST, 2, 1e-5), rel=1e-12)
    _refused_at_config(Round(HONEST, HONEST, restarted, epoch=3, round_id=3), PrivacyBudgetSpent)
    # A ledger file that does not parse stops the agent rather than forgetting what was spent.
    (state[1] / LEDGER_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="restore the file"):
        open_guard(floor, state[1])


def test_the_budget_is_charged_before_the_masked_input_leaves():
    # The budget fits when the configuration arrives, but is spent by the time the input would
    # leave (another round of the same agent got there first): the masked input never leaves.
    one_of_two = (epsilon_for(HONEST, 1, 1e-5) + epsilon_for(HONEST, 2, 1e-5)) / 2
    guards = {s: PrivacyGuard.in_memory(PrivacyFloor(epsilon=one_of_two)) for s in range(1, N + 1)}
    rnd = Round(HONEST, HONEST, guards)
    refused = set()
    frames = {s: rnd.server.round_config() for s in rnd.clients}
    while frames and not rnd.server.stage.terminal:
        for sid, frame in frames.items():
            agg = rnd.clients[sid]
            try:
                replies = agg.receive(frame) + (agg.provide_input(np.zeros(DIM), 1) if agg.wants_input else [])
            except PrivacyBudgetSpent as exc:
                assert rnd.server.stage is Stage.MASKED_INPUT_COLLECTION and exc.reason == "dp_budget_spent"
                refused.add(sid)
                continue
            for _, reply in replies:
                rnd.sent[sid].append(wire.peek(reply).type)
                rnd.server.receive(reply)
            if rnd.server.stage is Stage.SHARE_KEYS and sid not in refused:
                guards[sid].ledger.spend(HONEST, "a concurrent round")  # after the admission check
        out = rnd.server.close_stage()
        frames = {s: out.frame_for(s) for s in rnd.clients if out.frame_for(s) is not None}
    assert refused == set(rnd.clients)
    assert all(wire.MASKED_INPUT not in sent for sent in rnd.sent.values())
    assert rnd.server.stage is Stage.ABORTED


def test_privacy_floor_is_a_typed_section_of_agent_yaml():
    base = {"agent_id": "a1"}
    assert AgentConfig.from_dict(base).privacy_floor == PrivacyFloor()
    cfg = AgentConfig.from_dict({**base, "privacy_floor": {"min_noise_multiplier": 2.0, "require_dp": True,
                                                            "epsilon": 3.0}})
    assert (cfg.privacy_floor.min_noise_multiplier, cfg.privacy_floor.require_dp) == (2.0, True)
    for bad, why in (({"min_noise_multiplier": 0}, "above 0"), ({"min_survivors": 1}, "at least 2"),
                     ({"delta": 1.5}, "below 1"), ({"min_noise": 1.0}, "min_noise_multiplier")):
        with pytest.raises(ConfigError, match=why):
            AgentConfig.from_dict({**base, "privacy_floor": bad})


# -- the firmware (MicroPython unix port) ---------------------------------------------------------
_FIRMWARE = r"""
import sys, json
from ztfw import agent_wire
from ztfw.agent import Agent
d = json.loads(sys.stdin.read())
floor = agent_wire.PrivacyFloor(d["floor"])
out = {"refusals": [], "signs_dp": [agent_wire.config_signs_dp(bytes.fromhex(f)) for f in d["frames"]]}
for dp in d["announced"]:
    e = agent_wire.dp_refusal(floor, dp)
    out["refusals"].append([e.reason, str(e)])

class Client:
    def __init__(self):
        self.sent = []
    def publish(self, topic, payload, retain=False, qos=0):
        self.sent.append(topic)
    def publish_stream(self, topic, n, produce, qos=0):
        self.sent.append(topic)

agent = Agent(d["config"], d["dir"])
agent.client = Client()
agent._on_message(b"ztfl/plant/fog1/broadcast/round", d["announcement"].encode())
out["events"] = agent.events
out["declined"] = agent.stats["declined"]
out["sent"] = agent.client.sent
out["session"] = agent.session is not None
print(json.dumps(out))
"""


def _signed_config_frame(signed: DpParams | None) -> str:
    config = cohort_round_config(32, DIM, THRESHOLD, N, True, signed)
    return wire.RoundConfigMessage(0, 7, 7, config).encode(SigningKey.generate()).hex()


def test_firmware_refuses_the_same_rounds_with_the_same_reasons(tmp_path):
    from ztfl.attestation.software_identity import new_device_key
    from ztfl.firmware_tools.micropython_host import firmware_device_config
    from ztfl.firmware_tools.records import encode_records, write_device_dir
    seed, public = new_device_key()
    cfg = firmware_device_config("esp-9", "plant", "fog1", "127.0.0.1", 1883, ["normal", "dos"], seed, public)
    rng = np.random.default_rng(0)
    device = write_device_dir(tmp_path / "esp-9", cfg,
                              encode_records(rng.random((8, 6)).astype(np.float32), rng.integers(0, 2, 8)))
    tiny = DpParams(1.0, 16, DIM, 2.0, 4)
    loud = DpParams(1000.0, 16, DIM, HONEST.noise_variance * 1000.0 ** 2, 4).signed()
    few = DpParams(1.0, 16, DIM, HONEST.noise_variance * 4, 2).signed()
    cases = [(tiny, NoiseBelowFloor), (loud, ClipAboveFloor), (few, SurvivorsBelowFloor), (HONEST, None)]
    announcement = RoundAnnounce(4, 0, "micro-32", "micro", 32, 0, "0" * 64, [["esp-9", 1, public.hex()]], 2,
                                 "00" * 16, {}, dp=dp_document(tiny))
    out = run_json(_FIRMWARE, {"floor": {}, "announced": [dp_document(p) for p, _ in cases],
                               "frames": [_signed_config_frame(HONEST), _signed_config_frame(None)],
                               "config": cfg, "dir": str(device), "announcement": announcement.encode().decode()})
    # The reasons the CPython agent gives for the same parameters (privacy.floor), and
    # dp_unsupported for parameters the floor accepts: this board adds no noise at all.
    for (params, refusal), (reason, message) in zip(cases, out["refusals"]):
        if refusal is None:
            assert PrivacyFloor().check(params) is None
            assert reason == "dp_unsupported"
        else:
            with pytest.raises(refusal):
                PrivacyFloor().check(params)
            assert reason == refusal.reason
        assert message.startswith("the round asks for differential-privacy noise, which this firmware does not")
    assert out["signs_dp"] == [True, False]
    # The real agent: the tiny-variance round is declined with its reason, no session, nothing sent.
    assert out["declined"] == 1 and not out["session"] and out["sent"] == []
    assert any("[dp_noise_below_floor]" in e for e in out["events"]), out["events"]


def test_firmware_privacy_floor_keys_match_the_agent_yaml_section():
    out = run_json(r"""
import json
from ztfw import agent_wire
f = agent_wire.PrivacyFloor()
bad = []
for doc in ({"min_noise": 1}, {"min_survivors": 0}, {"max_clip_norm": True}, [1]):
    try:
        agent_wire.PrivacyFloor(doc)
        bad.append(doc)
    except agent_wire.WireError:
        pass
print(json.dumps({"defaults": [[n, getattr(f, n)] for n, _ in agent_wire.FLOOR_DEFAULTS], "accepted": bad,
                  "flag": agent_wire.FLAG_DP}))
""")
    ours = PrivacyFloor()
    assert {n: v for n, v in out["defaults"]} == {n: getattr(ours, n) for n, _ in out["defaults"]}
    assert out["accepted"] == []
    from ztfl.protocol.config import FLAG_DP
    assert out["flag"] == FLAG_DP
    from ztfl.privacy import errors
    for name in ("NoiseBelowFloor", "ClipAboveFloor", "SurvivorsBelowFloor", "DpMismatch", "DpUnsupported"):
        assert getattr(errors, name).reason in json.dumps(run_json(
            "import json\nfrom ztfw import agent_wire\nprint(json.dumps(agent_wire.%s.reason))" % name))


def test_dp_record_rides_in_the_signed_body_and_rounds_without_dp_keep_their_bytes():
    plain = cohort_round_config(32, DIM, THRESHOLD, N, True)
    assert len(plain.encode()) == 28 and plain.dp is None
    signed = cohort_round_config(32, DIM, THRESHOLD, N, True, HONEST)
    body = signed.encode()
    assert body[:28] == plain.encode()[:7] + bytes([body[7]]) + plain.encode()[8:28]
    assert body[7] & 0x08 and len(body) == 48
    assert struct.unpack("<BBHQQ", body[28:]) == (1, 0, 4, 65536, HONEST.poisson_mean)
    assert signed.digest() != plain.digest()      # the agents' adverts bind the DP record too
