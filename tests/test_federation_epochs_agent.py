"""The agent's side of key epochs and distributed DP, in one process against the protocol's real
ServerSession (frames as bytes, no transport): what the round announcement carries, key rings
that outlive rounds, the configuration checked against the announcement, and the DP input path."""
from __future__ import annotations

import json

import numpy as np
import pytest
from nacl.signing import SigningKey

from ztfl.agent.keyrings import AgentKeyrings
from ztfl.agent.secagg import AgentAggregation
from ztfl.fednet.messages import RoundAnnounce, RoundKeying, WireError, dp_document
from ztfl.protocol.config import minimum_threshold
from ztfl.gateway.secagg import cohort_round_config
from ztfl.privacy import clip_l2
from ztfl.privacy.floor import PrivacyFloor
from ztfl.privacy.guard import PrivacyGuard
from ztfl.privacy.params import DpParams
from ztfl.privacy.sampling import KeyedWords
from ztfl.protocol.errors import ConfigurationError
from ztfl.protocol.fixedpoint import quantize
from ztfl.protocol.server import ServerSession
from ztfl.protocol.stages import Stage

COHORT = "cnn-lstm-32"
DIM = 3000
# The DP input path with a small, checkable noise (variance 400): far below any real floor.
TEST_FLOOR = PrivacyFloor(min_noise_multiplier=1e-6, epsilon=1e15)


def _announce(**optional) -> RoundAnnounce:
    return RoundAnnounce(3, 1, COHORT, "cnn-lstm", 32, 2, "00" * 32, [["a", 1, "ab" * 32]], 2, "cd" * 32,
                         {"masked": 60.0}, **optional)


def test_announcement_without_key_epochs_is_the_classic_one_on_the_wire():
    doc = json.loads(_announce().encode())
    assert not {"epoch", "protocol_round", "key_reuse", "dp"} & set(doc)     # older agents refuse unknown fields
    back = RoundAnnounce.decode(_announce().encode())
    assert back.keying == RoundKeying(3 * 16 + 1, 3, False) and back.dp_params is None


def test_announcement_key_epoch_and_dp_fields_round_trip_and_are_checked():
    dp = DpParams(1.0, 16, DIM, 2.5e9, 4)
    ann = _announce(epoch=768, protocol_round=769, key_reuse=True, dp=dp_document(dp))
    back = RoundAnnounce.decode(ann.encode())
    assert back.keying == RoundKeying(768, 769, True) and back.dp_params == dp
    doc = json.loads(ann.encode())
    for bad, why in [({"epoch": -1}, "u32"), ({"protocol_round": 1 << 32}, "u32"), ({"epoch": None}, "epoch"),
                     ({"key_reuse": 1}, "key_reuse"), ({"dp": [1]}, "dp"),
                     ({"dp": {**doc["dp"], "mechanism": "gaussian"}}, "mechanism"),
                     ({"dp": {**doc["dp"], "noise_variance": -1.0}}, "noise_variance"),
                     ({"dp": {**doc["dp"], "dim": True}}, "dim"),
                     ({"dp": {**doc["dp"], "dim": 10 ** 400}}, "dim"),
                     ({"dp": {**doc["dp"], "clip_norm": 10 ** 400}}, "clip_norm"),
                     ({"dp": {k: v for k, v in doc["dp"].items() if k != "clip_norm"}}, "clip_norm"),
                     ({"dp": {**doc["dp"], "seed": 7}}, "seed")]:
        with pytest.raises(WireError, match=why):
            RoundAnnounce.decode(json.dumps({**doc, **bad}).encode())


class Round:
    """One round between a ServerSession and AgentAggregation clients; `lost` stop answering once
    the masked inputs are asked for (they shared their keys and never mask)."""

    def __init__(self, rings: dict[int, AgentKeyrings], ids: dict[int, SigningKey], server_id: SigningKey,
                 epoch: int, protocol_round: int, key_reuse: bool, announced_reuse: bool | None = None,
                 dp: DpParams | None = None, revealed: set | None = None):
        config = cohort_round_config(32, DIM, minimum_threshold(len(ids)), len(ids), key_reuse, dp)   # signs its DP
        directory = {sid: k.verify_key for sid, k in ids.items()}
        self.server = ServerSession(config, server_id, directory, epoch, protocol_round, revealed_keys=revealed)
        peers = {sid: bytes(k.verify_key) for sid, k in ids.items()}
        keying = RoundKeying(epoch, protocol_round, key_reuse if announced_reuse is None else announced_reuse)
        self.rings = rings
        self.clients = {sid: AgentAggregation(sid, ids[sid], bytes(server_id.verify_key), peers, protocol_round,
                                              rings[sid].keys_for(COHORT, keying, float(protocol_round)),
                                              keying.key_reuse, dp, KeyedWords.from_labels("epochs", sid),
                                              privacy=PrivacyGuard.in_memory(TEST_FLOOR))
                        for sid in ids}

    def run(self, updates: dict[int, np.ndarray], lost: frozenset = frozenset()):
        frames = {sid: self.server.round_config() for sid in self.clients}
        while not self.server.stage.terminal:
            stage = self.server.stage
            for sid, frame in frames.items():
                if sid in lost and stage is Stage.MASKED_INPUT_COLLECTION:
                    continue
                agg = self.clients[sid]
                replies = agg.receive(frame)
                if agg.wants_input:
                    replies += agg.provide_input(updates[sid], 7)
                for _, reply in replies:
                    self.server.receive(reply)
            out = self.server.close_stage()
            frames = {sid: out.frame_for(sid) for sid in self.clients if out.frame_for(sid) is not None}
        for sid, agg in self.clients.items():
            self.rings[sid].finish(COHORT, agg.session)
        return self.server.result


def _fleet(n: int = 5):                # the agents' security floor: groups of 5 at least
    ids = {sid: SigningKey.generate() for sid in range(1, n + 1)}
    rng = np.random.default_rng(5)
    updates = {sid: rng.normal(0, 0.02, DIM) for sid in ids}
    return ids, {sid: AgentKeyrings() for sid in ids}, SigningKey.generate(), updates


def _exact_sum(updates, sids, weight: int = 7) -> np.ndarray:
    return sum(weight * quantize(updates[s], 16, 8 << 16) for s in sids)


def test_key_rings_keep_one_key_setup_across_rounds_and_a_key_reuse_dropout():
    ids, rings, server_id, updates = _fleet()
    advertised = []
    for r, lost in ((256, frozenset()), (512, frozenset({4})), (768, frozenset())):
        rnd = Round(rings, ids, server_id, epoch=256, protocol_round=r, key_reuse=True)
        result = rnd.run(updates, lost)
        survivors = sorted(set(ids) - lost)
        assert list(result.survivors) == survivors
        np.testing.assert_array_equal(result.sums, _exact_sum(updates, survivors))
        advertised.append({sid: e.s_pk for sid, e in rnd.server.adverts.items()})
    assert advertised[0] == advertised[1] == advertised[2]          # one key setup for three rounds
    assert all(rings[sid].key_setups(COHORT) == 1 for sid in ids)
    # A new epoch id from the gateway: new keys, once.
    rnd = Round(rings, ids, server_id, epoch=1024, protocol_round=1024, key_reuse=True)
    rnd.run(updates)
    assert all(rings[sid].key_setups(COHORT) == 2 for sid in ids)
    assert {sid: e.s_pk for sid, e in rnd.server.adverts.items()} != advertised[0]


def test_classic_dropout_ends_the_dropped_agents_epoch_and_the_server_refuses_its_old_key():
    ids, rings, server_id, updates = _fleet()
    revealed: set[bytes] = set()
    first = Round(rings, ids, server_id, epoch=17, protocol_round=1, key_reuse=False, revealed=revealed)
    first.run(updates, frozenset({4}))
    old_key = first.server.adverts[4].s_pk
    assert revealed == {old_key}
    assert first.clients[4].session.keys_exposed and not first.clients[1].session.keys_exposed
    second = Round(rings, ids, server_id, epoch=33, protocol_round=2, key_reuse=False, revealed=revealed)
    result = second.run(updates)
    assert list(result.survivors) == [1, 2, 3, 4, 5] and second.server.adverts[4].s_pk != old_key


@pytest.mark.parametrize("config_reuse, announced_reuse", [(False, True), (True, False)])
def test_configuration_other_than_announced_is_refused_before_advertising(config_reuse, announced_reuse):
    ids, rings, server_id, _ = _fleet()
    rnd = Round(rings, ids, server_id, epoch=9, protocol_round=9, key_reuse=config_reuse,
                announced_reuse=announced_reuse)
    agg = rnd.clients[1]
    with pytest.raises(ConfigurationError, match="key reuse"):
        agg.receive(rnd.server.round_config())
    with pytest.raises(ConfigurationError, match="round refused"):
        agg.receive(rnd.server.round_config())


def test_dp_agents_clip_weigh_one_and_add_noise_of_the_announced_variance():
    ids, rings, server_id, updates = _fleet()
    updates = {sid: u * 100 for sid, u in updates.items()}          # L2 norm about 110: clipped to 1
    dp = DpParams(clip_norm=1.0, frac_bits=16, dim=DIM, noise_variance=400.0, min_survivors=3)
    result = Round(rings, ids, server_id, epoch=5, protocol_round=5, key_reuse=True, dp=dp).run(updates)
    assert result.total_weight == len(ids)                            # weight 1 each, whatever was given
    clipped = sum(quantize(clip_l2(updates[s], 1.0), 16, 8 << 16) for s in ids)
    noise = (result.sums - clipped).astype(np.float64)
    assert abs(noise.std() / np.sqrt(len(ids) * 400.0) - 1) < 0.1
    assert abs(noise.mean()) < 5 * np.sqrt(len(ids) * 400.0 / DIM)
    # Parameters announced for another dimension are not the signed ones: refused before advertising.
    wrong = DpParams(1.0, 16, DIM + 1, 400.0, 3)
    rnd = Round(rings, ids, server_id, epoch=6, protocol_round=6, key_reuse=True, dp=wrong)
    with pytest.raises(ConfigurationError, match="announcement's DP"):
        rnd.clients[1].receive(rnd.server.round_config())
