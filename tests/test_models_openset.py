"""The open-set detector (models.openset): prototypes of normal traffic, calibration to a chosen
false-alarm rate, the "unknown attack" rule, persistence and the ESP32 integer form, on slices of
real data. The exported forms are checked in tests/test_export_models.py."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ztfl.models.datasets import NORMAL, read_nsl_kdd
from ztfl.models.export.novelty_graph import GRID
from ztfl.models.micro import quantise_input
from ztfl.models.openset import (UNKNOWN, NoveltyDetector, OpenSetError, calibrate_threshold, int8_distances,
                                 kmeans, load_detector, open_set_decision, split_normal, unknown_mask)
from ztfl.models.preprocess import Pipeline


@pytest.fixture(scope="module")
def kdd_rows(tmp_path_factory):
    """Encoded rows of a 4,000-row slice of NSL-KDD: normal rows split three ways (prototypes,
    calibration, measurement) and the attack rows."""
    from tests.conftest import DATASETS
    from tests.test_models_data import spread_rows
    d = tmp_path_factory.mktemp("openset")
    table = read_nsl_kdd(spread_rows(DATASETS / "nsl_kdd/KDDTrain+_20Percent.txt", d / "kdd.txt", 4000, header=False))
    x = Pipeline.fit(table).transform(table)
    normal = x[table.category == NORMAL]
    order = np.random.default_rng(0).permutation(len(normal))
    third = len(normal) // 3
    return (normal[order[:third]], normal[order[third:2 * third]], normal[order[2 * third:]],
            x[table.category != NORMAL])


def test_threshold_lets_at_most_the_chosen_share_of_calibration_rows_through():
    scores = np.arange(1000, dtype=float)
    t = calibrate_threshold(scores, 0.05)
    assert np.sum(scores > t) == 50
    assert np.sum(scores > calibrate_threshold(scores, 0.0)) == 0
    tied = np.zeros(100)
    assert np.sum(tied > calibrate_threshold(tied, 0.1)) == 0   # ties never push it over
    for bad in (-0.1, 1.0):
        with pytest.raises(OpenSetError):
            calibrate_threshold(scores, bad)
    with pytest.raises(OpenSetError):
        calibrate_threshold(np.zeros(0), 0.01)


@pytest.mark.parametrize("far", [0.02, 0.05, 0.1])
def test_false_alarms_on_held_back_normal_rows_are_near_the_chosen_rate(kdd_rows, far):
    fit_rows, calibration, measured, attacks = kdd_rows
    detector = NoveltyDetector.fit(fit_rows, 64).calibrated(calibration, far)
    assert detector.far == far and detector.calibration_rows == len(calibration)
    observed = float(np.mean(detector.score(measured) > detector.threshold))
    assert abs(observed - far) <= max(0.02, far / 2), observed
    # and it is a detector: attacks lie further from normal traffic than normal rows do
    assert np.mean(detector.score(attacks) > detector.threshold) > 3 * far


def test_a_gateway_fits_and_calibrates_from_its_normal_validation_rows_alone(kdd_rows):
    fit_rows, calibration, measured, _ = kdd_rows
    detector = NoveltyDetector.from_validation(np.concatenate([fit_rows, calibration]), far=0.05, n_prototypes=32)
    assert detector.calibration_rows == (len(fit_rows) + len(calibration)) - (len(fit_rows) + len(calibration)) // 2
    assert abs(float(np.mean(detector.score(measured) > detector.threshold)) - 0.05) <= 0.025


def test_prototypes_sit_on_the_8bit_grid_and_score_is_the_nearest_squared_distance(kdd_rows):
    fit_rows, calibration, _, _ = kdd_rows
    detector = NoveltyDetector.fit(fit_rows, 32, seed=1)
    q = np.asarray(detector.prototypes)
    assert q.shape == (32, fit_rows.shape[1]) and q.min() >= 0 and q.max() <= GRID
    brute = np.array([min(float(np.sum((row - c) ** 2)) for c in q / GRID) for row in calibration[:50]])
    assert np.allclose(detector.score(calibration[:50]), np.log1p(brute), atol=1e-9)
    # fitting is deterministic for a seed
    assert NoveltyDetector.fit(fit_rows, 32, seed=1).prototypes == detector.prototypes


def test_kmeans_finds_separated_clusters_and_refills_empty_ones():
    rng = np.random.default_rng(0)
    centres = np.array([[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]])
    x = np.concatenate([c + 0.01 * rng.standard_normal((50, 2)) for c in centres])
    found = kmeans(x, 3, seed=0)
    assert np.allclose(np.sort(found, axis=0), np.sort(centres, axis=0), atol=0.02)
    assert kmeans(np.zeros((5, 2)), 3).shape == (3, 2)   # duplicates: no crash, no NaN
    assert np.isfinite(kmeans(np.zeros((5, 2)), 3)).all()


def test_unknown_rule_takes_the_heads_likeliest_attack_class():
    classes = [NORMAL, "dos", "probe"]
    proba = np.array([[0.7, 0.1, 0.2],    # normal, novel -> unknown -> probe
                      [0.7, 0.2, 0.1],    # normal, not novel -> normal
                      [0.2, 0.7, 0.1],    # dos stays dos, novel or not
                      [0.6, 0.3, 0.1]])   # normal, novel -> unknown -> dos
    novelty = np.array([2.0, 0.1, 2.0, 3.0])
    assert open_set_decision(proba, novelty, 1.0, classes).tolist() == [2, 0, 1, 1]
    assert unknown_mask(proba, novelty, 1.0, classes).tolist() == [True, False, False, True]
    binary = open_set_decision(proba[:, :2], novelty, 1.0, [NORMAL, "attack"])
    assert binary.tolist() == [1, 0, 1, 1]
    assert UNKNOWN not in classes


def test_detector_saves_loads_and_refuses_malformed_files(kdd_rows, tmp_path):
    fit_rows, calibration, _, _ = kdd_rows
    detector = NoveltyDetector.fit(fit_rows, 16).calibrated(calibration, 0.05)
    assert load_detector(tmp_path) is None
    detector.save(tmp_path)
    again = load_detector(tmp_path)
    assert again == detector
    assert np.array_equal(again.score(calibration), detector.score(calibration))
    good = json.loads((tmp_path / "openset.json").read_text())
    for broken in ({**good, "version": 9}, {**good, "prototypes": []}, {**good, "prototypes": [[1, 2], [3]]},
                   {**good, "prototypes": [[300]]}, {k: v for k, v in good.items() if k != "prototypes"}):
        (tmp_path / "openset.json").write_text(json.dumps(broken))
        with pytest.raises(OpenSetError):
            load_detector(tmp_path)
    with pytest.raises(OpenSetError):
        NoveltyDetector.fit(fit_rows[:1], 4)
    with pytest.raises(OpenSetError):
        NoveltyDetector.fit(fit_rows, 16).unknown(np.zeros((1, 2)), fit_rows[:1], [NORMAL, "attack"])


def test_integer_form_for_the_esp32_agrees_with_the_float_decisions(kdd_rows):
    fit_rows, calibration, measured, attacks = kdd_rows
    detector = NoveltyDetector.fit(fit_rows, 64).calibrated(calibration, 0.05)
    form = detector.int8_form()
    assert form["levels"] == 127 and isinstance(form["threshold"], int)
    q = np.asarray(form["prototypes"])
    assert q.min() >= 0 and q.max() <= 127
    rows = np.concatenate([measured, attacks])
    integer = int8_distances(q, quantise_input(rows)) > form["threshold"]
    assert integer.dtype == bool
    assert np.mean(integer == (detector.score(rows) > detector.threshold)) >= 0.99
    json.dumps(form)   # plain JSON the firmware can read


def test_normal_rows_are_halved_the_same_way_for_a_seed():
    cal, test = split_normal(11, seed=3)
    assert len(cal) == 5 and len(test) == 6 and not set(cal) & set(test)
    assert np.array_equal(cal, split_normal(11, seed=3)[0])
