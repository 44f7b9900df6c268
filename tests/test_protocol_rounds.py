"""Whole rounds through real frames: exact aggregates, dropouts at every stage, 32/64-bit, SecAgg+
(with the commit-and-reveal graph stage)."""
from __future__ import annotations

import numpy as np
import pytest

from ztfl.protocol.config import RoundConfig
from ztfl.protocol.errors import RoundAborted
from ztfl.protocol.simulate import Cohort, run_round
from ztfl.protocol.stages import Stage
from protocol_testkit import Round


def assert_exact(rnd: Round, result):
    expected, weight = rnd.expected(result.survivors)
    assert np.array_equal(result.sums, expected)
    assert result.total_weight == weight
    mean = expected / (2.0**rnd.config.frac_bits * weight)
    assert np.allclose(result.mean(), mean, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mask_bits", [32, 64])
@pytest.mark.parametrize("n,threshold", [(5, 4), (10, 7)])
def test_round_without_dropouts_is_exact(n, threshold, mask_bits):
    rnd = Round(n=n, threshold=threshold, dim=50, mask_bits=mask_bits)
    result = rnd.run()
    assert rnd.server.stage == Stage.DONE
    assert result.survivors == tuple(rnd.ids) and result.dropped == ()
    assert_exact(rnd, result)
    assert all(c.stage == Stage.DONE for c in rnd.clients.values())


def test_hundred_clients_complete_graph_with_dropouts_is_exact():
    ids = list(range(1, 101))
    config = RoundConfig(dim=20, threshold=67, max_clients=100, max_weight=5)
    cohort = Cohort.create(ids)
    rng = np.random.default_rng(1)
    inputs = {c: rng.normal(size=20) for c in ids}
    weights = {c: int(rng.integers(1, 6)) for c in ids}
    drops = {c: Stage.MASKED_INPUT_COLLECTION for c in ids[::10]}          # 10 drop after sharing
    drops.update({c: Stage.SHARE_KEYS for c in ids[1::25]})                # 4 drop before sharing
    run = run_round(config, cohort, inputs, weights, drop_before=drops)
    assert run.result is not None and len(run.result.survivors) == 86
    from ztfl.protocol.simulate import expected_sums
    expected, weight = expected_sums(config, inputs, weights, run.result.survivors)
    assert np.array_equal(run.result.sums, expected) and run.result.total_weight == weight


@pytest.mark.parametrize("mask_bits", [64])
def test_hundred_clients_secagg_plus_with_dropouts_is_exact(mask_bits):
    ids = list(range(1, 101))
    # Groups of 15; t = 11 (active) tolerates 4 failures per group: 3 clients leave after sharing
    # and 1 before unmasking, so no group can fall short whatever graph the reveals give.
    config = RoundConfig(dim=30, threshold=11, max_clients=100, neighbors=14, mask_bits=mask_bits)
    cohort = Cohort.create(ids)
    rng = np.random.default_rng(2)
    inputs = {c: rng.normal(size=30) for c in ids}
    drops = {c: Stage.MASKED_INPUT_COLLECTION for c in ids[3::40]}
    drops.update({c: Stage.UNMASKING for c in ids[5::100]})
    run = run_round(config, cohort, inputs, drop_before=drops)
    from ztfl.protocol.simulate import expected_sums
    expected, weight = expected_sums(config, inputs, {}, run.result.survivors)
    assert np.array_equal(run.result.sums, expected) and weight == 97
    # Only neighbours hold shares: each client dealt to 14 peers, not 99.
    assert all(len(run.server.neighbours[c]) == 14 for c in ids)


@pytest.mark.parametrize("mask_bits", [32, 64])
@pytest.mark.parametrize("stage", [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT_COLLECTION,
                                   Stage.CONSISTENCY_CHECK, Stage.UNMASKING])
def test_dropouts_at_each_stage_keep_the_sum_exact(stage, mask_bits):
    rnd = Round(n=10, threshold=7, dim=40, mask_bits=mask_bits)
    result = rnd.run({stage: {2, 9}})
    assert rnd.server.stage == Stage.DONE
    assert_exact(rnd, result)
    if stage in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT_COLLECTION):
        assert 2 not in result.survivors and 9 not in result.survivors
    else:  # their masked inputs arrived: they count even though they left afterwards
        assert {2, 9} <= set(result.survivors)
    if stage == Stage.MASKED_INPUT_COLLECTION:
        assert result.dropped == (2, 9)


def test_dropouts_spread_over_all_stages():
    # One client lost per stage: 18 clients keep t = 13 (> 2n/3) within reach to the end.
    rnd = Round(n=18, threshold=13, dim=25)
    result = rnd.run({Stage.ADVERTISE_KEYS: {1}, Stage.SHARE_KEYS: {2}, Stage.MASKED_INPUT_COLLECTION: {3},
                      Stage.CONSISTENCY_CHECK: {4}, Stage.UNMASKING: {5}})
    assert result.survivors == tuple(range(4, 19)) and result.dropped == (3,)
    assert_exact(rnd, result)


@pytest.mark.parametrize("stage", [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT_COLLECTION,
                                   Stage.CONSISTENCY_CHECK, Stage.UNMASKING])
def test_below_threshold_the_round_aborts_cleanly(stage):
    rnd = Round(n=6, threshold=5, dim=8)
    rnd.run({stage: {1, 2}})
    assert rnd.server.stage == Stage.ABORTED and rnd.server.result is None
    for c in range(3, 7):
        client = rnd.clients[c]
        if stage == Stage.UNMASKING:
            # Shares were released (t signatures), but too few arrived: the server cannot finish.
            assert client.stage == Stage.DONE
        else:
            # Below t before Unmasking: every client still listening aborts and releases nothing.
            assert client.stage == Stage.ABORTED
            assert client.released == {"self_mask": frozenset(), "secret_key": frozenset()}


def test_a_new_round_in_the_same_epoch_reuses_keys_and_stays_exact():
    first = Round(n=5, threshold=4, dim=10, round_id=1)
    assert_exact(first, first.run())
    second = Round(n=5, threshold=4, dim=10, round_id=2, cohort=first.cohort)
    assert_exact(second, second.run())


def test_weighted_mean_is_the_weighted_average_of_quantised_inputs():
    rnd = Round(n=5, threshold=4, dim=5)
    result = rnd.run()
    from ztfl.protocol.fixedpoint import quantize
    num = sum(rnd.weights[c] * quantize(rnd.inputs[c], 16, rnd.config.clip_q) for c in rnd.ids)
    assert np.allclose(result.mean(), num / 2**16 / sum(rnd.weights.values()))
    assert np.max(np.abs(result.mean() - sum(rnd.weights[c] * rnd.inputs[c] for c in rnd.ids)
                         / sum(rnd.weights.values()))) <= 2**-17 + 1e-12


def test_round_abort_exception_is_raised_to_a_client_seeing_too_few_survivors():
    rnd = Round(n=5, threshold=4, dim=4)
    rnd.step(); rnd.step(); rnd.step()
    from ztfl.protocol import wire
    forged = wire.ConsistencyRequest(0, 1, 7, (1, 2)).encode(rnd.cohort.server_identity)
    with pytest.raises(RoundAborted):
        rnd.clients[1].receive(forged)
    assert rnd.clients[1].stage == Stage.ABORTED


@pytest.mark.parametrize("stage", [Stage.ADVERTISE_KEYS, Stage.GRAPH_REVEAL, Stage.SHARE_KEYS,
                                   Stage.MASKED_INPUT_COLLECTION, Stage.UNMASKING])
def test_sparse_round_reveals_the_graph_before_any_share_and_survives_later_dropouts(stage):
    # 12 clients, 6 neighbours: groups of 7, t = 5 tolerates 2 failures per group.
    rnd = Round(n=12, threshold=5, dim=9, neighbors=6)
    result = rnd.run({stage: {3}})
    if stage == Stage.GRAPH_REVEAL:
        # A member that advertised and then did not reveal: the graph cannot be fixed without its
        # reveal, so the attempt ends before anything secret is dealt.
        assert rnd.server.stage == Stage.ABORTED and result is None
        assert rnd.server.shares == {} and all(not c.dealt_shares for c in rnd.clients.values())
        return
    assert rnd.server.stage == Stage.DONE
    assert_exact(rnd, result)
    # Everyone derived the server's graph from the same reveals.
    for c, session in rnd.clients.items():
        if session.stage == Stage.DONE:
            assert session._state.neighbours == rnd.server.neighbours[c]
    assert all(len(n) == 6 for n in rnd.server.neighbours.values())
