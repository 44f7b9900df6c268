"""Key epochs: one key setup for many rounds (key-reuse rounds), exact aggregates, dropouts unmasked
with round keys (the epoch secret never leaves a client), rekeying; and classic rounds, where a
reconstructed mask secret ends its owner's epoch."""
from __future__ import annotations

import numpy as np
import pytest

from ztfl.protocol import graph, kdf
from ztfl.protocol.keys import EpochKeys
from ztfl.protocol.config import RoundConfig
from ztfl.protocol.epochs import ClientKeyring, EpochPolicy, EpochSchedule, RekeyReason
from dataclasses import replace

from ztfl.protocol.errors import (BadSignature, ConfigurationError, ConsistencyViolation, InvalidTransition,
                                  NoEpochGraph)
from ztfl.protocol.simulate import Cohort, expected_sums, run_round
from ztfl.protocol.stages import Stage

# Nine clients: t = 7 (> 2n/3) still leaves a survivor's missing round key to be the reason an
# unmasking with one dropout and one silent survivor fails.
IDS = list(range(1, 10))
DIM = 40
CLASSIC = RoundConfig.for_range(dim=DIM, max_clients=len(IDS), threshold=7, clip=4.0)
CONFIG = replace(CLASSIC, key_reuse=True)


class Fleet:
    """Clients with keyrings and a gateway with an epoch schedule, all in one process."""

    def __init__(self, client_policy: EpochPolicy, gateway_policy: EpochPolicy | None = None,
                 config: RoundConfig = CONFIG):
        self.config = config
        self.cohort = Cohort.create(IDS)
        self.keyrings = {c: ClientKeyring(client_policy) for c in IDS}
        self.schedule = EpochSchedule(gateway_policy or client_policy)
        self.rng = np.random.default_rng(7)

    def round(self, round_id: int, now: float = 0.0, drop_before=None, present=IDS, keys=None):
        epoch = self.schedule.epoch_for(round_id, now)
        keys = keys or {c: self.keyrings[c].keys_for(epoch, round_id, now, self.config.key_reuse)
                        for c in present}
        before = {c: keys[c].agreements for c in present}
        inputs = {c: self.rng.normal(0, 0.3, DIM) for c in present}
        run = run_round(self.config, self.cohort, inputs, drop_before=drop_before, round_id=round_id,
                        epoch_keys=keys, revealed_keys=self.schedule.revealed_keys)
        for c in present:
            if keys[c] is self.keyrings[c].keys:
                self.keyrings[c].finish(run.clients[c])
        ended = self.schedule.finish(run.server)
        run.x25519 = {c: keys[c].agreements - before[c] for c in present}
        run.inputs = inputs
        run.ended = ended
        return run


def assert_exact(run):
    assert run.result is not None, run.server.abort_reason
    expected, weight = expected_sums(CONFIG, run.inputs, {}, run.result.survivors)
    assert np.array_equal(run.result.sums, expected)
    assert run.result.total_weight == weight


def test_one_key_setup_serves_many_rounds_with_exact_aggregates():
    fleet = Fleet(EpochPolicy(max_rounds=10))
    first = fleet.round(1)
    assert_exact(first)
    # Round 1: 2 public keys + (share-encryption + pairwise) agreement per peer + the session key.
    assert all(n == 3 + 2 * (len(IDS) - 1) for n in first.x25519.values())
    keys = {c: fleet.keyrings[c].keys for c in IDS}
    for round_id in (2, 3, 4):
        run = fleet.round(round_id)
        assert_exact(run)
        assert run.x25519 == {c: 0 for c in IDS}, "key reuse must not run X25519 again"
        assert all(fleet.keyrings[c].keys is keys[c] for c in IDS)
    assert {c: fleet.keyrings[c].rekeys for c in IDS} == {c: [(1, RekeyReason.FIRST)] for c in IDS}


def test_per_round_policy_agrees_keys_every_round():
    fleet = Fleet(EpochPolicy.per_round())
    for round_id in (1, 2, 3):
        run = fleet.round(round_id)
        assert_exact(run)
        assert all(n == 3 + 2 * (len(IDS) - 1) for n in run.x25519.values())
    assert fleet.schedule.epoch == 3          # the gateway also starts an epoch per round
    assert [r for r, _ in fleet.keyrings[1].rekeys] == [1, 2, 3]


def test_self_mask_seeds_are_fresh_each_round_and_pairwise_keys_change_with_the_round():
    fleet = Fleet(EpochPolicy(max_rounds=10))
    runs = [fleet.round(r) for r in (1, 2, 3)]
    seeds = [run.clients[1]._state.seed for run in runs]
    assert len(set(seeds)) == 3
    keys = fleet.keyrings[1].keys
    peer_pk = runs[0].clients[2].keys.s_pk
    round_keys = {keys.pairwise_mask_key(1, 2, peer_pk, r) for r in (1, 2, 3)}
    assert len(round_keys) == 3
    # ... all derived from one epoch key, exactly as docs/protocol.md 1.2 writes them.
    shared = kdf.x25519(keys.s_sk, peer_pk)
    epoch_key = kdf.pairwise_epoch_key(shared, 1, 2, keys.epoch)
    assert round_keys == {kdf.pairwise_round_key(epoch_key, r) for r in (1, 2, 3)}


def test_a_dropout_in_a_key_reuse_round_is_unmasked_with_round_keys_and_keeps_every_epoch():
    fleet = Fleet(EpochPolicy(max_rounds=10))
    assert_exact(fleet.round(1))
    keys5 = fleet.keyrings[5].keys
    dropped = fleet.round(2, drop_before={5: Stage.MASKED_INPUT_COLLECTION})
    assert_exact(dropped)
    assert dropped.result.dropped == (5,) and dropped.ended == []
    # Survivors gave their round-2 key with 5, never a share of 5's epoch secret.
    for c in (1, 2, 3, 4):
        released = dropped.clients[c].released
        assert released["secret_key"] == frozenset() and released["round_key"] == frozenset({5})
    assert fleet.schedule.revealed_keys == set() and not fleet.keyrings[5].exposed
    # The shares 5 dealt in the secret-key slot are shares of zero, not of s_sk.
    back = fleet.round(3)
    assert_exact(back)
    assert fleet.keyrings[5].keys is keys5 and back.x25519 == {c: 0 for c in IDS}


def test_the_round_keys_given_for_a_dropout_open_no_other_round():
    fleet = Fleet(EpochPolicy(max_rounds=10))
    assert_exact(fleet.round(1))
    run = fleet.round(2, drop_before={5: Stage.MASKED_INPUT_COLLECTION})
    given = {v: dict(run.server.unmask[v].round_keys)[5] for v in (1, 2, 3, 4)}
    keys = {v: fleet.keyrings[v].keys for v in (1, 2, 3, 4)}
    pk5 = fleet.keyrings[5].keys.s_pk
    for v in given:
        assert given[v] == keys[v].pairwise_mask_key(v, 5, pk5, 2)
        assert given[v] != keys[v].pairwise_mask_key(v, 5, pk5, 1)
        assert given[v] != keys[v].pairwise_mask_key(v, 5, pk5, 3)


def test_a_survivor_that_withholds_its_round_key_aborts_the_round_without_exposing_anyone():
    fleet = Fleet(EpochPolicy(max_rounds=10))
    assert_exact(fleet.round(1))
    run = fleet.round(2, drop_before={5: Stage.MASKED_INPUT_COLLECTION, 2: Stage.UNMASKING})
    assert run.result is None and "round key" in run.server.abort_reason
    assert not any(fleet.keyrings[c].exposed for c in IDS)
    assert_exact(fleet.round(3))
    assert all(fleet.keyrings[c].rekeys == [(1, RekeyReason.FIRST)] for c in IDS)


def test_server_refuses_the_wrong_unmasking_message_for_the_round_kind():
    from ztfl.protocol import wire
    fleet = Fleet(EpochPolicy(max_rounds=10))
    run = fleet.round(1)
    server = run.server
    server.unmask.clear()
    wrong = wire.UnmaskShares(1, server.epoch, server.round_id, (), ())
    server.stage = Stage.UNMASKING
    with pytest.raises(InvalidTransition, match="UnmaskShares"):
        server.receive(wrong.encode_tagged(server.akeys[1]))
    # Signed, it is not even authenticated: a key-reuse round tags everything after the adverts.
    with pytest.raises(BadSignature, match="wrong authentication mode"):
        server.receive(wrong.encode(fleet.cohort.identities[1]))
    classic_fleet = Fleet(EpochPolicy(max_rounds=10), config=CLASSIC)
    classic = classic_fleet.round(1).server
    classic.unmask.clear()
    classic.stage = Stage.UNMASKING
    wrong = wire.UnmaskRoundKeys(1, classic.epoch, classic.round_id, (), ()).encode(
        classic_fleet.cohort.identities[1])
    with pytest.raises(InvalidTransition, match="UnmaskRoundKeys"):
        classic.receive(wrong)


def test_keys_that_served_several_rounds_are_refused_in_a_classic_round():
    fleet = Fleet(EpochPolicy(max_rounds=10))
    assert_exact(fleet.round(1))
    assert_exact(fleet.round(2))
    reused = {c: fleet.keyrings[c].keys for c in IDS}
    classic = Fleet(EpochPolicy(max_rounds=10), config=CLASSIC)
    classic.cohort = fleet.cohort
    with pytest.raises(ConfigurationError, match="served earlier rounds"):
        classic.round(3, keys=reused)


def test_classic_rounds_get_fresh_keys_every_round():
    fleet = Fleet(EpochPolicy(max_rounds=10), config=CLASSIC)
    for round_id in (1, 2, 3):
        run = fleet.round(round_id)
        assert_exact(run)
        assert all(n == 2 + 2 * (len(IDS) - 1) for n in run.x25519.values())
    assert [reason for _, reason in fleet.keyrings[1].rekeys] == [RekeyReason.FIRST, RekeyReason.NO_REUSE,
                                                                  RekeyReason.NO_REUSE]


def test_a_classic_round_that_reconstructs_a_mask_secret_ends_that_clients_epoch():
    fleet = Fleet(EpochPolicy(max_rounds=10), config=CLASSIC)
    assert_exact(fleet.round(1))
    dropped = fleet.round(2, drop_before={5: Stage.MASKED_INPUT_COLLECTION})
    assert_exact(dropped)
    revealed = fleet.keyrings[5].keys
    assert dropped.ended == [5] and revealed.s_pk in fleet.schedule.revealed_keys
    assert fleet.keyrings[5].exposed and not fleet.keyrings[1].exposed
    assert revealed.s_pk in fleet.keyrings[1].revealed_peer_keys
    assert_exact(fleet.round(3))
    assert fleet.keyrings[5].rekeys[-1] == (3, RekeyReason.EXPOSED)
    # Peers remember the revealed key across their own (per-round) rekeying.
    assert revealed.s_pk in fleet.keyrings[1].keys.revealed_peer_keys


def test_a_client_that_drops_before_dealing_shares_is_not_exposed():
    fleet = Fleet(EpochPolicy(max_rounds=10), config=CLASSIC)
    run = fleet.round(1, drop_before={4: Stage.SHARE_KEYS})
    assert_exact(run)
    assert run.ended == [] and not fleet.keyrings[4].exposed


def test_an_aborted_classic_round_after_share_keys_ends_the_epoch_of_those_who_dealt():
    fleet = Fleet(EpochPolicy(max_rounds=10), config=CLASSIC)
    run = fleet.round(1, drop_before={c: Stage.MASKED_INPUT_COLLECTION for c in (3, 4, 5)})
    assert run.result is None and run.ended == []
    assert all(fleet.keyrings[c].exposed for c in IDS)
    assert_exact(fleet.round(2))
    assert all(fleet.keyrings[c].rekeys[-1] == (2, RekeyReason.EXPOSED) for c in IDS)


def test_a_client_returning_with_its_revealed_key_is_refused_even_in_a_later_epoch():
    fleet = Fleet(EpochPolicy(max_rounds=10), config=CLASSIC)
    assert_exact(fleet.round(1))
    assert_exact(fleet.round(2, drop_before={5: Stage.MASKED_INPUT_COLLECTION}))
    revealed = fleet.keyrings[5].keys
    # A faulty client that ignores the rule and relabels its old keys for the next round.
    keys = {c: fleet.keyrings[c].keys_for(fleet.schedule.epoch, 3, 0.0, False) for c in IDS}
    revealed.uses = 0
    keys[5] = revealed
    with pytest.raises(ConsistencyViolation, match="revealed"):
        fleet.round(3, keys=keys)


def test_lifetime_by_rounds_and_by_seconds():
    fleet = Fleet(EpochPolicy(max_rounds=2, max_seconds=3600.0))
    for round_id, now in ((1, 0.0), (2, 10.0), (3, 20.0), (4, 30.0), (5, 4000.0)):
        assert_exact(fleet.round(round_id, now=now))
    assert fleet.keyrings[2].rekeys == [(1, RekeyReason.FIRST), (3, RekeyReason.NEW_EPOCH),
                                        (5, RekeyReason.NEW_EPOCH)]
    assert fleet.schedule.epoch == 3
    # A client's own, shorter lifetime applies even when the gateway keeps the epoch.
    ring = ClientKeyring(EpochPolicy(max_rounds=100, max_seconds=60.0))
    first = ring.keys_for(9, 1, now=0.0)
    assert ring.keys_for(9, 2, now=59.0) is first
    assert ring.keys_for(9, 3, now=60.0) is not first
    assert ring.rekeys[-1] == (3, RekeyReason.SECONDS)


def test_a_round_id_that_does_not_increase_never_reuses_keys():
    ring = ClientKeyring(EpochPolicy(max_rounds=100))
    first = ring.keys_for(1, 5, now=0.0)
    again = ring.keys_for(1, 5, now=1.0)
    assert again is not first and ring.rekeys[-1] == (5, RekeyReason.ROUND_NOT_INCREASING)
    schedule = EpochSchedule(EpochPolicy(max_rounds=100))
    schedule.epoch_for(5, 0.0)
    with pytest.raises(ValueError, match="does not increase"):
        schedule.epoch_for(5, 1.0)


@pytest.mark.parametrize("kwargs", [{"max_rounds": 0}, {"max_rounds": True}, {"max_seconds": 0},
                                    {"max_seconds": float("nan")}])
def test_bad_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        EpochPolicy(**kwargs)


def test_keyring_refuses_a_session_with_other_keys_and_bad_ids():
    fleet = Fleet(EpochPolicy(max_rounds=10))
    run = fleet.round(1)
    with pytest.raises(ValueError):
        fleet.keyrings[1].finish(run.clients[2])
    with pytest.raises(ValueError):
        fleet.keyrings[1].keys_for(-1, 2, 0.0)
    with pytest.raises(ValueError):
        fleet.keyrings[1].keys_for(1, 1 << 32, 0.0)


SPARSE = RoundConfig.for_range(dim=DIM, max_clients=12, threshold=4, clip=4.0, neighbors=4, key_reuse=True)


def sparse_epoch(rounds, drop_before=None, present=None):
    """Key-reuse rounds of 12 clients with 4 neighbours in one epoch: the first fixes the graph."""
    ids = list(range(1, 13))
    cohort = Cohort.create(ids)
    rings = {c: ClientKeyring(EpochPolicy(max_rounds=10)) for c in ids}
    schedule = EpochSchedule(EpochPolicy(max_rounds=10))
    graphs = {}
    rng = np.random.default_rng(3)
    runs = []
    for r in rounds:
        epoch = schedule.epoch_for(r, 0.0)
        here = (present or {}).get(r, ids)
        keys = {c: rings[c].keys_for(epoch, r, 0.0, True) for c in here}
        before = {c: keys[c].agreements for c in here}
        inputs = {c: rng.normal(0, 0.3, DIM) for c in here}
        config = replace(SPARSE, new_graph=epoch not in graphs)
        run = run_round(config, cohort, inputs, round_id=r, epoch_keys=keys, epoch_graphs=graphs,
                        drop_before=(drop_before or {}).get(r))
        expected, _ = expected_sums(config, inputs, {}, run.result.survivors)
        assert np.array_equal(run.result.sums, expected)
        run.x25519 = sum(keys[c].agreements - before[c] for c in here)
        run.keys = keys
        runs.append(run)
    return runs, graphs, cohort


def test_secagg_plus_neighbours_stay_the_same_within_an_epoch_so_no_agreement_is_redone():
    runs, graphs, _ = sparse_epoch((1, 2, 3), drop_before={2: {7: Stage.MASKED_INPUT_COLLECTION}})
    assert [run.server.config.reveals_graph for run in runs] == [True, False, False]
    assert runs[0].server.neighbours == runs[1].server.neighbours == runs[2].server.neighbours
    assert all(len(n) == 4 for n in runs[0].server.neighbours.values())
    assert [run.x25519 for run in runs] == [12 * (3 + 2 * 4), 0, 0]
    # The graph came from the reveals of round 1, and both sides keep it with the epoch.
    fixed = graphs[runs[0].server.epoch]
    assert fixed.members == tuple(range(1, 13))
    assert fixed.seed == graph.graph_seed(runs[0].server.roster.digest(), runs[0].server.reveals)
    assert all(runs[2].keys[c].graph == fixed for c in range(1, 13))


def test_a_member_missing_from_a_later_roster_is_a_dropout_not_a_new_graph():
    runs, _, _ = sparse_epoch((1, 2), present={2: [c for c in range(1, 13) if c != 5]})
    first, second = runs
    for c, nb in second.server.neighbours.items():
        assert nb == first.server.neighbours[c] - {5}
    assert second.server.config.reveals_graph is False and second.x25519 == 0


def test_a_later_key_reuse_round_needs_the_epochs_graph_on_both_sides():
    runs, graphs, cohort = sparse_epoch((1,))
    later = replace(SPARSE, new_graph=False)
    epoch = runs[0].server.epoch
    with pytest.raises(NoEpochGraph):                       # a server that never fixed this epoch's graph
        run_round(later, cohort, {c: np.zeros(DIM) for c in range(1, 13)}, round_id=2,
                  epoch_keys=runs[0].keys, epoch_graphs={})
    # A client whose keys hold no graph (it missed the reveal, or re-keyed) refuses the round.
    fresh = EpochKeys.generate(epoch)
    from ztfl.protocol.client import ClientSession
    from ztfl.protocol.server import ServerSession
    server = ServerSession(later, cohort.server_identity, cohort.directory, epoch, 2, epoch_graphs=graphs)
    client = ClientSession(1, cohort.identities[1], cohort.directory, fresh, 2)
    with pytest.raises(NoEpochGraph):
        client.receive(server.round_config())
    assert client.stage == Stage.ADVERTISE_KEYS
    # ... and the server refuses the advert of a client outside the epoch's graph.
    outsider = Cohort.create([13])
    directory = {**cohort.directory, 13: outsider.identities[13].verify_key}
    server = ServerSession(later, cohort.server_identity, directory, epoch, 2, epoch_graphs=graphs)
    stranger = ClientSession(13, outsider.identities[13], directory, EpochKeys.generate(epoch), 2)
    stranger.keys.graph = graphs[epoch]                       # even one claiming to know the graph
    with pytest.raises(ConsistencyViolation, match="not in epoch"):
        server.receive(stranger.receive(server.round_config()))
