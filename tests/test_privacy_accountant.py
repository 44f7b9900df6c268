"""The epsilon the project reports is dp-accounting's figure for the Skellam mechanism's RDP bound;
noise sizing meets the budget; the ledger stops (or warns) at the budget."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.rdp import RdpAccountant, compute_epsilon

from ztfl.privacy.accountant import (ORDERS, BudgetExceeded, PrivacyLedger, TooFewSurvivors, calibrate,
                                epsilon_for, gaussian_equivalent_epsilon, round_event)
from ztfl.privacy.params import DpParams, PrivacyBudget

BUDGET = PrivacyBudget(epsilon=8.0, delta=1e-5)


def skellam_rdp(order: int, d2: float, d1: float, mu: float) -> float:
    """Agarwal, Kairouz, Liu 2021: RDP of the Skellam mechanism at an integer order (both branches)."""
    return order * d2 ** 2 / (2 * mu) + min(((2 * order - 1) * d2 ** 2 + 6 * d1) / (4 * mu ** 2),
                                            3 * d1 / (2 * mu))


def library_epsilon(params: DpParams, honest_per_round, delta: float) -> float:
    """The same mechanism fed to dp-accounting directly, the event written out here."""
    accountant = RdpAccountant(orders=ORDERS)
    d2, d1 = params.l2_sensitivity, params.l1_sensitivity
    for honest in honest_per_round:
        mu = honest * params.noise_variance
        rho = d2 ** 2 / (2 * mu) + d2 ** 2 / (2 * mu ** 2)
        xi = max(0.0, (6 * d1 - d2 ** 2) / (4 * mu ** 2))
        accountant.compose(dp_event.ZCDpEvent(rho=rho, xi=xi))
    return accountant.get_epsilon(delta)


@pytest.fixture(scope="module")
def params():
    return calibrate(BUDGET, rounds=15, clip_norm=1.0, frac_bits=16, dim=2000, min_survivors=20)


def test_calibrated_noise_meets_the_budget_tightly(params):
    eps = epsilon_for(params, 15, BUDGET.delta)
    assert eps <= BUDGET.epsilon
    assert eps > BUDGET.epsilon - 0.01
    # A little less noise would overspend.
    weaker = DpParams(params.clip_norm, params.frac_bits, params.dim, params.noise_variance * 0.97,
                      params.min_survivors)
    assert epsilon_for(weaker, 15, BUDGET.delta) > BUDGET.epsilon


def test_reported_epsilon_equals_the_accountant_library_figure(params):
    ledger = PrivacyLedger(BUDGET)
    survivors = [25, 20, 31, 22, 20, 40, 20, 23, 20, 20]
    for r, n in enumerate(survivors, start=1):
        ledger.spend(params, n, round_id=r)
    honest = [min(n, params.min_survivors) for n in survivors]
    assert ledger.epsilon_spent == pytest.approx(library_epsilon(params, honest, BUDGET.delta), rel=1e-12)
    assert ledger.summary()["epsilon_spent"] == ledger.epsilon_spent
    assert [r["epsilon_after"] for r in ledger.summary()["per_round"]] == sorted(
        r["epsilon_after"] for r in ledger.summary()["per_round"])


def test_the_linear_bound_equals_the_paper_bound_at_training_noise_and_never_undercounts(params):
    # Per-order exact bound (min of both branches), converted by the library's own conversion.
    d2, d1 = params.l2_sensitivity, params.l1_sensitivity
    mu = params.aggregate_variance(params.min_survivors)
    rdp = [15 * skellam_rdp(a, d2, d1, mu) for a in ORDERS]
    exact, _ = compute_epsilon(ORDERS, rdp, BUDGET.delta)
    assert epsilon_for(params, 15, BUDGET.delta) == pytest.approx(exact, rel=1e-9)
    # With little noise the second branch can be smaller: ours is then larger (conservative).
    small = DpParams(clip_norm=2.0, frac_bits=0, dim=4, noise_variance=3.0, min_survivors=2)
    rdp = [skellam_rdp(a, small.l2_sensitivity, small.l1_sensitivity, 6.0) for a in ORDERS]
    exact, _ = compute_epsilon(ORDERS, rdp, 1e-5)
    assert epsilon_for(small, 1, 1e-5) >= exact - 1e-12


def test_skellam_costs_about_what_the_gaussian_of_the_same_variance_costs(params):
    gauss = gaussian_equivalent_epsilon(params.noise_multiplier(), 15, BUDGET.delta)
    assert epsilon_for(params, 15, BUDGET.delta) == pytest.approx(gauss, rel=1e-3)


def test_more_rounds_need_more_noise_and_more_survivors_spread_it():
    a = calibrate(BUDGET, 5, 1.0, 16, 500, 20)
    b = calibrate(BUDGET, 50, 1.0, 16, 500, 20)
    c = calibrate(BUDGET, 5, 1.0, 16, 500, 40)
    assert b.noise_variance > 5 * a.noise_variance
    assert c.noise_variance == pytest.approx(a.noise_variance / 2, rel=1e-4)
    assert c.aggregate_variance(40) == pytest.approx(a.aggregate_variance(20), rel=1e-4)


def test_ledger_stops_at_the_budget_and_records_nothing_for_the_refused_round(params):
    ledger = PrivacyLedger(BUDGET)
    for r in range(1, 16):
        ledger.spend(params, 20, round_id=r)
    assert ledger.epsilon_spent <= BUDGET.epsilon
    before = ledger.epsilon_spent
    with pytest.raises(BudgetExceeded, match="round 16"):
        ledger.spend(params, 20, round_id=16)
    assert ledger.epsilon_spent == before and len(ledger.rounds) == 15
    assert not ledger.exhausted


def test_ledger_refuses_a_round_with_fewer_survivors_than_the_noise_assumes(params):
    ledger = PrivacyLedger(BUDGET)
    with pytest.raises(TooFewSurvivors):
        ledger.spend(params, params.min_survivors - 1)
    with pytest.raises(TooFewSurvivors):
        ledger.spend(params, 0)
    assert ledger.rounds == [] and ledger.epsilon_spent == 0.0


def test_ledger_in_warn_mode_records_and_warns(params):
    ledger = PrivacyLedger(BUDGET, on_exhausted="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for r in range(1, 16):
            ledger.spend(params, 20, round_id=r)
    with pytest.warns(RuntimeWarning, match="budget"):
        ledger.spend(params, 20, round_id=16)
    with pytest.warns(RuntimeWarning) as record:
        ledger.spend(params, 10, round_id=17)
    messages = " | ".join(str(w.message) for w in record)
    assert "10 survivors" in messages and "budget" in messages
    assert ledger.exhausted and len(ledger.rounds) == 17
    # Fewer honest clients means less noise: the accounted cost of round 17 is higher.
    assert ledger.epsilon_spent == pytest.approx(
        library_epsilon(params, [20] * 16 + [10], BUDGET.delta), rel=1e-12)


def test_round_event_counts_only_min_survivors_as_honest(params):
    assert round_event(params, 20) == round_event(params)
    assert round_event(params, 10).rho == pytest.approx(2 * round_event(params).rho, rel=1e-6)


@pytest.mark.parametrize("bad", [dict(epsilon=0, delta=1e-5), dict(epsilon=8, delta=0),
                                 dict(epsilon=8, delta=1.0), dict(epsilon=math.inf, delta=1e-5)])
def test_bad_budgets_are_refused(bad):
    with pytest.raises(ValueError):
        PrivacyBudget(**bad)


def test_bad_ledger_inputs_are_refused(params):
    with pytest.raises(ValueError):
        PrivacyLedger(BUDGET, on_exhausted="ignore")
    with pytest.raises(ValueError):
        PrivacyLedger(BUDGET).spend(params, -1)
    with pytest.raises(ValueError):
        calibrate(BUDGET, 0, 1.0, 16, 10, 2)
    assert np.isfinite(params.noise_variance)
