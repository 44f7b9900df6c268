"""Privacy modes: impossible combinations are refused with the reason; each mode aggregates
what its gateway may see."""
import numpy as np
import pytest

from ztfl.robustness.modes import AggregatorConfig, PrivacyConfigError, make_aggregator, split_groups, validate


@pytest.mark.parametrize("defense", ["krum", "multi-krum", "median", "trimmed-mean", "geomed", "flame"])
def test_per_agent_rules_are_refused_under_secagg(defense):
    with pytest.raises(PrivacyConfigError, match="secagg hides"):
        make_aggregator(privacy="secagg", defense=defense)


def test_shap_under_secagg_is_refused():
    with pytest.raises(PrivacyConfigError, match="secagg hides"):
        make_aggregator(privacy="secagg", defense="shap", attributions_of=lambda v: v)


def test_drift_tracking_needs_per_agent_updates():
    with pytest.raises(PrivacyConfigError, match="drift"):
        make_aggregator(privacy="grouped", defense="median", drift=True)


def test_grouped_krum_with_too_few_groups_is_refused():
    # 20 agents in groups of 5 make 4 groups; Krum with f = floor(0.3 * 4) = 1 needs 5.
    with pytest.raises(PrivacyConfigError, match="needs at least 5 inputs.*4 groups"):
        make_aggregator(privacy="grouped", defense="krum", cohort_size=20, group_size=5)
    make_aggregator(privacy="grouped", defense="krum", cohort_size=20, group_size=4)


@pytest.mark.parametrize("bad", [dict(group_size=1), dict(group_size=True), dict(cohort_size=9),
                                 dict(privacy="open"), dict(defense="bulyan"),
                                 dict(expected_byzantine=0.5), dict(clip_norm=0.0)])
def test_bad_grouped_configs_are_refused(bad):
    with pytest.raises(PrivacyConfigError):
        validate(AggregatorConfig(**{"privacy": "grouped", "defense": "median", **bad}))


def test_shap_without_a_model_is_refused():
    with pytest.raises(PrivacyConfigError, match="SHAP"):
        make_aggregator(privacy="none", defense="shap")


def test_unknown_option_is_refused():
    with pytest.raises(PrivacyConfigError, match="unknown aggregator options: krum_f"):
        make_aggregator(privacy="none", defense="krum", krum_f=3)


def test_split_groups_is_a_random_partition_with_groups_of_at_least_g():
    ids = [f"a{i}" for i in range(23)]
    groups = split_groups(ids, 5, np.random.default_rng(0))
    assert len(groups) == 4 and all(len(g) >= 5 for g in groups)
    assert sorted(a for g in groups for a in g) == sorted(ids)
    assert groups != split_groups(ids, 5, np.random.default_rng(1))


def test_grouped_median_over_group_means_and_excluded_agents_by_group():
    agg = make_aggregator(privacy="grouped", defense="multi-krum", cohort_size=25, group_size=5,
                          expected_byzantine=0.2, multi_krum_m=4)
    groups = agg.split(list(range(25)))
    means = np.array([[1.0, 1.0], [1.1, 1.0], [0.9, 1.0], [1.0, 1.1], [50.0, -50.0]])
    weights = np.array([5.0, 5.0, 5.0, 5.0, 5.0])
    res = agg.aggregate_groups(means * weights[:, None], weights, groups)
    assert set(res.excluded) == {4}
    assert res.info["excluded_agents"] == sorted(groups[4])
    assert np.allclose(res.aggregate, [1.0, 1.025])


def test_secagg_returns_the_weighted_mean_of_the_cohort_sum():
    agg = make_aggregator(privacy="secagg", defense="fedavg", cohort_size=3)
    res = agg.aggregate_sum(np.array([6.0, 3.0]), 3.0)
    assert np.allclose(res.aggregate, [2.0, 1.0]) and res.excluded == {}
    with pytest.raises(PrivacyConfigError):
        agg.aggregate(np.ones((3, 2)))


def test_validation_guard_refuses_an_aggregate_that_degrades_the_metric():
    good = np.array([1.0, 0.0])
    # Metric: closeness of (global + delta) to a good model, global at the origin.
    evaluate = lambda delta: -float(np.linalg.norm(delta - good))
    agg = make_aggregator(privacy="secagg", defense="fedavg", cohort_size=2, guard_margin=0.1,
                          evaluate=evaluate)
    ok = agg.aggregate_sum(np.array([1.8, 0.0]), 2.0)
    assert ok.info["guard"]["accepted"] and np.allclose(ok.aggregate, [0.9, 0.0])
    bad = agg.aggregate_sum(np.array([-4.0, 6.0]), 2.0)
    assert not bad.info["guard"]["accepted"] and np.array_equal(bad.aggregate, [0.0, 0.0])


def test_guard_without_an_evaluator_is_refused():
    with pytest.raises(PrivacyConfigError, match="evaluate"):
        make_aggregator(privacy="secagg", defense="fedavg", guard_margin=0.1)


def test_none_mode_reports_excluded_agents_by_position():
    agg = make_aggregator(privacy="none", defense="krum", cohort_size=7, expected_byzantine=0.3)
    ups = np.array([[1.0, 1.0], [1.1, 1.0], [0.9, 1.0], [1.0, 1.1], [1.0, 0.9], [80, 80], [-80, 80]])
    res = agg.aggregate(ups, agent_ids=list("abcdefg"))
    assert np.allclose(res.aggregate, [1.0, 1.0]) and {5, 6} <= set(res.excluded)
