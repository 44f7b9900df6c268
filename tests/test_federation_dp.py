"""Distributed DP end to end: the real gateway process, a real mosquitto and simulated agents
(agent.sim: the real client protocol; each agent clips its known update, encodes it and adds the
announced Skellam noise before masking).

The gateway sizes the noise with privacy.accountant, signs it into the round configuration
(rounded as the configuration carries it), accounts each release with the actual survivors, reports epsilon in /status and /metrics exactly as dp-accounting computes it for the
same parameters, stops at the budget, and remembers what was spent across a restart. The
committed models carry noise of the announced size around the mean of the clipped updates.
"""
from __future__ import annotations

import json
import logging
import re
import urllib.request

import numpy as np
import pytest

from ztfl.agent.sim import sim_update
from faults.conftest import federation  # noqa: F401  (the fault suite's fixture: gateway + fleets on a real broker)
from ztfl.gateway.config import PrivacySpec
from ztfl.gateway.dp import PrivacyBook
from ztfl.gateway.registry import Registry
from ztfl.privacy import clip_l2
from ztfl.privacy.accountant import calibrate, epsilon_for
from ztfl.privacy.params import PrivacyBudget

COHORT = "cnn-lstm-32"
DELTA = 1e-5
ROUND_EPSILON = 2.0
BUDGET = 3.3        # two rounds at 2.0 per round compose to about 2.95, three to about 3.71


def _epsilon_metric(federation) -> float:
    port = (federation.state / "http.port").read_text().strip()
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return float(re.search(r'^ztfl_privacy_epsilon_spent\{cohort="cnn-lstm-32"\} (\S+)$', text, re.M).group(1))


def test_gateway_accounts_dp_rounds_and_stops_at_the_budget(federation):
    privacy = {"epsilon": BUDGET, "delta": DELTA, "min_survivors": 4, "clip_norm": 1.0, "mode": "stop",
               "round_epsilon": ROUND_EPSILON}
    federation.configure(agents=5, rounds=4, privacy=privacy, key_epoch={"max_rounds": 4}, linger_s=4.0)
    federation.start_fleet(5)
    federation.start_gateway()
    status = federation.wait_for(lambda s: s["done"], "the budget", timeout=240)
    spent_metric = _epsilon_metric(federation)
    assert federation.gateway.wait(timeout=60) == 0, federation.log_tail()

    # The same parameters, computed here with privacy.accountant, give the reported figures.
    report = status["privacy"][COHORT]
    params = calibrate(PrivacyBudget(ROUND_EPSILON, DELTA), 1, 1.0, 16, report["dim"], 4).signed()
    assert report["frac_bits"] == 16
    assert report["noise_variance"] == params.noise_variance == 2 * params.poisson_mean
    expected = epsilon_for(params, 2, DELTA)
    assert report["epsilon_spent"] == pytest.approx(expected, rel=1e-9)
    assert spent_metric == pytest.approx(expected, rel=1e-9)
    assert report["epsilon_spent"] <= BUDGET < epsilon_for(params, 3, DELTA)
    assert (report["rounds"], report["epsilon_budget"], report["exhausted"]) == (2, BUDGET, False)
    assert [(r["survivors"], r["honest_assumed"]) for r in report["per_round"]] == [(5, 4), (5, 4)]
    # Stopped: round 3 would pass the budget, so it was refused before anything was announced.
    assert "privacy budget exhausted" in status["stopped"] and "privacy budget exhausted" in report["stopped"]
    reg = Registry(federation.state)
    try:
        rounds = reg.rounds()
        assert [(r["round"], r["attempt"], r["status"]) for r in rounds] == \
            [(1, 0, "committed"), (2, 0, "committed"), (3, 0, "aborted")]
        assert rounds[2]["reason"].startswith("stopped: ")
        assert [r["cohorts"][COHORT]["privacy"]["survivors"] for r in rounds[:2]] == [5, 5]
        versions = reg.model_versions("cnn-lstm")
        # Each commit is the mean of the clipped updates plus the noise of 5 agents: std sqrt(5 v) / (2^16 * 5).
        sigma = np.sqrt(5 * params.noise_variance) / (2 ** 16 * 5)
        for prev, cur in zip(versions, versions[1:]):
            old, new = reg.load_model(prev).astype(np.float64), reg.load_model(cur).astype(np.float64)
            clipped = np.mean([clip_l2(sim_update(0, i, old.size), 1.0) for i in range(1, 6)], axis=0)
            noise = new - old - clipped
            assert abs(noise.std() / sigma - 1) < 0.1
            assert abs(noise.mean()) < 5 * sigma / np.sqrt(noise.size)
    finally:
        reg.close()
    assert len(json.loads((federation.state / "privacy.json").read_text())[COHORT]) == 2

    # A restart replays what was spent: the gateway stops again at once, with the same epsilon.
    federation.configure(agents=5, rounds=4, privacy=privacy, key_epoch={"max_rounds": 4}, linger_s=2.0)
    federation.start_gateway()
    again = federation.wait_for(lambda s: s["done"], "the restarted gateway", timeout=120)
    assert federation.gateway.wait(timeout=60) == 0, federation.log_tail()
    assert again["privacy"][COHORT]["epsilon_spent"] == pytest.approx(expected, rel=1e-12)
    assert "privacy budget exhausted" in again["stopped"]


def _book(tmp_path, mode: str, epsilon: float) -> PrivacyBook:
    spec = PrivacySpec(epsilon=epsilon, delta=DELTA, min_survivors=3, clip_norm=1.0, mode=mode,
                       round_epsilon=ROUND_EPSILON)
    book = PrivacyBook(tmp_path, lambda cohort: spec if cohort == COHORT else None, planned_rounds=5)
    book.cohort(COHORT).params_for(dim=1000, frac_bits=16)
    return book


def test_stop_mode_refuses_before_the_release_and_records_only_releases(tmp_path):
    book = _book(tmp_path, "stop", BUDGET)
    cohort = book.cohort(COHORT)
    assert book.cohort("micro-32") is None
    assert cohort.refusal_before_round(5, 8 << 16, 32) == ""
    assert cohort.refusal_before_round(2, 8 << 16, 32).startswith("2 agents")
    assert "2 survivors" in book.spend(COHORT, 2, 1, 0)
    assert not (tmp_path / "privacy.json").exists()             # nothing released, nothing recorded
    assert book.spend(COHORT, 4, 1, 1) == "" and book.spend(COHORT, 3, 2, 0) == ""
    assert "privacy budget exhausted" in cohort.refusal_before_round(5, 8 << 16, 32)
    assert "would spend epsilon" in book.spend(COHORT, 3, 3, 0)     # refused at the release as well
    expected = epsilon_for(cohort.params, 2, DELTA)
    assert cohort.status()["epsilon_spent"] == pytest.approx(expected, rel=1e-12)
    # Replayed from privacy.json by a new book (a restarted gateway).
    assert _book(tmp_path, "stop", BUDGET).cohort(COHORT).ledger.epsilon_spent == pytest.approx(expected, rel=1e-12)


def test_warn_mode_releases_past_the_budget_and_says_so(tmp_path, caplog):
    book = _book(tmp_path, "warn", 1.0)        # a single round at 2.0 already passes it
    cohort = book.cohort(COHORT)
    with caplog.at_level(logging.WARNING, logger="ztfl.gateway.privacy"):
        assert cohort.refusal_before_round(5, 8 << 16, 32) == ""
        assert book.spend(COHORT, 5, 1, 0) == ""
    assert "mode warn" in caplog.text and "budget 1" in caplog.text
    status = cohort.status()
    assert status["exhausted"] and not status["stopped"] and status["rounds"] == 1
    assert status["epsilon_spent"] == pytest.approx(epsilon_for(cohort.params, 1, DELTA), rel=1e-12)
    assert len(json.loads((tmp_path / "privacy.json").read_text())[COHORT]) == 1
