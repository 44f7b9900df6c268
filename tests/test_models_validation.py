"""Validation that predicts held-out behaviour (models.validation) and the reference baseline
(ztfl bench baseline), on small slices of the real training files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ztfl.bench.baseline import OrdinalColumns, tree_fitter
from ztfl.cli import main as ztfl_main
from ztfl.models.datasets import NORMAL, NSL_KDD_CATEGORY, read_nsl_kdd
from ztfl.models.validation import (SPLIT_KINDS, Predictions, Split, TypedTable, ValidationError,
                                    difficulty_split, leave_families_out, leave_types_out, load_typed,
                                    make_splits, nsl_kdd_labels, parse_kinds, score_split, summarise,
                                    supported_kinds, type_folds)


@pytest.fixture(scope="module")
def kdd_file(tmp_path_factory):
    from tests.conftest import DATASETS
    from tests.test_models_data import spread_rows
    return spread_rows(DATASETS / "nsl_kdd/KDDTrain+_20Percent.txt", tmp_path_factory.mktemp("kdd") / "kdd.txt",
                       3000, header=False)


@pytest.fixture(scope="module")
def kdd(kdd_file) -> TypedTable:
    return load_typed(kdd_file, "nsl-kdd")


@pytest.fixture(scope="module")
def unsw(tmp_path_factory) -> TypedTable:
    from tests.conftest import DATASETS
    from tests.test_models_data import spread_rows
    f = spread_rows(DATASETS / "unsw_nb15/UNSW_NB15_dev.csv", tmp_path_factory.mktemp("unsw") / "u.csv", 2000,
                    header=True)
    return load_typed(f, "unsw-nb15")


def test_nsl_kdd_attack_names_and_difficulty_line_up_with_the_reader(kdd_file):
    names, level = nsl_kdd_labels(kdd_file)
    table = read_nsl_kdd(kdd_file)
    assert len(names) == len(level) == len(table)
    mapped = [NORMAL if n == NORMAL else NSL_KDD_CATEGORY[n] for n in names]
    assert mapped == list(table.category)
    assert level.min() >= 0 and level.max() <= 21


def test_typed_table_is_deduplicated_on_features_and_type(kdd_file, tmp_path):
    doubled = tmp_path / "doubled.txt"
    raw = kdd_file.read_bytes()
    doubled.write_bytes(raw + raw)
    assert len(load_typed(doubled, "nsl-kdd")) == len(load_typed(kdd_file, "nsl-kdd"))
    assert len(load_typed(doubled, "nsl-kdd", deduplicate=False)) == 2 * len(read_nsl_kdd(kdd_file))


def test_type_folds_deal_every_attack_type_once_and_keep_families_in_training(kdd):
    folds = type_folds(kdd, 3)
    attack_types = set(kdd.types) - {NORMAL}
    dealt = [t for fold in folds for t in fold]
    assert sorted(dealt) == sorted(attack_types)
    family_of = dict(zip(kdd.types, kdd.families))
    for family in set(kdd.families) - {NORMAL}:
        members = {t for t in attack_types if family_of[t] == family}
        if len(members) > len(folds):
            for fold in folds:
                assert members - set(fold), f"{family} lost every type in fold {fold}"
    with pytest.raises(ValidationError):
        type_folds(kdd, 1)


def test_leave_types_out_hides_the_held_types_from_training_and_validation(kdd):
    splits = leave_types_out(kdd, 3)
    assert len(splits) == 3
    normal_val = None
    for s in splits:
        held = set(s.held_out)
        assert not held & set(kdd.types[s.train]) and not held & set(kdd.types[s.val])
        assert set(kdd.types[s.unseen]) == held and len(s.unseen) == int(np.isin(kdd.types, list(held)).sum())
        assert not set(s.train) & set(s.val) and not set(s.unseen) & (set(s.train) | set(s.val))
        nv = set(s.val[kdd.types[s.val] == NORMAL])
        assert normal_val is None or nv == normal_val   # every fold shares the normal rows
        normal_val = nv


def test_leave_family_out_and_difficulty_splits(kdd, unsw):
    for s in leave_families_out(kdd):
        family = s.name.split("-", 1)[1]
        assert family not in set(kdd.families[s.train]) | set(kdd.families[s.val])
        assert set(kdd.families[s.unseen]) == {family}
    d = difficulty_split(kdd, 19)
    assert kdd.difficulty[d.train].min() >= 19 and kdd.difficulty[d.val].max() < 19
    assert len(d.train) + len(d.val) == len(kdd)
    # UNSW-NB15 has one label level and no difficulty column
    assert supported_kinds(unsw) == ("random", "types")
    assert supported_kinds(kdd) == SPLIT_KINDS
    with pytest.raises(ValidationError):
        leave_families_out(unsw)
    with pytest.raises(ValidationError):
        difficulty_split(unsw)
    assert [s.kind for s in make_splits(unsw, SPLIT_KINDS)] == ["random", "types", "types", "types"]


def test_split_kinds_parse_and_refuse_unknown_names():
    assert parse_kinds("random, types") == ("random", "types")
    assert parse_kinds("all") == SPLIT_KINDS
    for bad in ("random,typos", "", "all,types"):
        with pytest.raises(ValidationError):
            parse_kinds(bad)


def _rule_fitter(table_of_rows):
    """A fixed 'model': attack iff src_bytes == 0 (column), novelty = the row's count column."""
    def fit(train):
        def predict(rows):
            attack = (rows.features["src_bytes"].to_numpy() == 0).astype(float)
            proba = np.stack([1 - attack, attack], 1) * 0.98 + 0.01
            return Predictions([NORMAL, "attack"], proba, rows.features["count"].to_numpy(dtype=float))
        return predict
    return fit


def test_scores_count_unseen_rows_false_alarms_and_the_open_set_rule(kdd):
    split = leave_types_out(kdd, 3)[0]
    r = score_split(kdd, split, _rule_fitter(kdd), far=0.05, seed=0)
    feats = kdd.table.features
    head = feats["src_bytes"].to_numpy() == 0
    unseen_types = kdd.types[split.unseen]
    assert r["unseen"]["head"]["rows"] == pytest.approx(np.mean(head[split.unseen]), abs=1e-6)
    for t, rate in r["unseen"]["head"]["per_type"].items():
        assert rate == pytest.approx(np.mean(head[split.unseen][unseen_types == t]), abs=1e-6)
    # the open-set detector flags at least what the head flags, and its false alarms on the
    # measurement half stay near head + the chosen rate
    assert r["unseen"]["open_set"]["rows"] >= r["unseen"]["head"]["rows"]
    assert r["false_alarm"]["open_set"] <= r["false_alarm"]["head"] + 0.05 + 0.04
    assert r["unseen_counts"] == {t: int(np.sum(unseen_types == t)) for t in sorted(set(unseen_types))}
    summary = summarise([r])["types"]
    assert summary["unseen"]["head"]["rows"] == pytest.approx(r["unseen"]["head"]["rows"], abs=1e-6)
    # binary model: any attack type counts as "attack"
    assert r["known"]["binary_accuracy"] == pytest.approx(r["known"]["accuracy"])


def test_reference_trees_encode_unseen_categories_as_missing(kdd):
    train = kdd.table.take(np.flatnonzero(kdd.table.features["service"] != "http")[::4])
    columns = OrdinalColumns.fit(train)
    x = columns.transform(kdd.table)
    j = columns.columns.index("service")
    service = kdd.table.features["service"].to_numpy()
    seen = set(train.features["service"])
    assert "http" not in seen and "http" in set(service)
    assert np.array_equal(np.isnan(x[:, j]), ~np.isin(service, list(seen)))
    assert sorted(set(x[~np.isnan(x[:, j]), j])) == list(range(len(seen)))   # ordinal codes 0..n-1
    rows = kdd.table.take(np.arange(200))
    for target, n_classes in (("binary", 2), ("multiclass", len(set(train.category)))):
        pred = tree_fitter(target)(train)(rows)
        assert pred.proba.shape == (200, n_classes) and NORMAL in pred.classes
        # the logits are the trees' raw scores: their softmax is the probabilities
        soft = np.exp(pred.logits - pred.logits.max(1, keepdims=True))
        assert np.allclose(soft / soft.sum(1, keepdims=True), pred.proba, atol=1e-9)


def test_attack_score_ranks_rows_whose_probability_saturates():
    logits = np.array([[0.0, 40.0, 0.0], [0.0, 45.0, 0.0], [0.0, 50.0, 1.0]])
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = Predictions([NORMAL, "dos", "probe"], proba, logits=logits)
    assert len(set(1 - proba[:, 0])) == 1                 # all exactly 1.0 as probabilities
    assert np.all(np.diff(pred.attack_score) > 0)        # still ordered by their logits
    assert np.allclose(Predictions([NORMAL, "a"], proba[:, :2]).attack_score, 1 - proba[:, 0])


def test_bench_baseline_reports_trees_and_network_side_by_side(tmp_path, capsys):
    from tests.conftest import DATASETS
    from tests.test_models_data import spread_rows
    small = spread_rows(DATASETS / "nsl_kdd/KDDTrain+_20Percent.txt", tmp_path / "kdd.txt", 1200, header=False)
    assert ztfl_main(["bench", "baseline", "--data", str(small), "--format", "nsl-kdd", "--validation",
                      "random,types", "--folds", "2", "--target", "binary", "--model", "micro", "--epochs", "2",
                      "--prototypes", "16", "--far", "0.05", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["splits"] == ["random", "types-0", "types-1"]
    figures = report["side_by_side"]["binary"]
    assert figures["random"]["known_accuracy"]["baseline"] > 0.9     # trees on a random split of NSL-KDD
    for who in ("baseline", "model"):
        assert 0.0 <= figures["types"]["unseen_head_rows"][who] <= 1.0
        assert 0.0 <= figures["types"]["unseen_classifier_types"][who] <= 1.0
    assert "model" not in figures["types"]["unseen_head_rows"] or "unseen_open_set_rows" in figures["types"]
    assert "baseline" not in figures["types"]["unseen_open_set_rows"]   # trees have no novelty score


def test_train_reports_generalisation_beside_the_random_split(kdd_file, tmp_path, capsys):
    out = tmp_path / "m"
    assert ztfl_main(["train", "--data", str(kdd_file), "--format", "nsl-kdd", "--out", str(out), "--model", "micro",
                      "--epochs", "2", "--validation", "random,types,difficulty", "--folds", "2",
                      "--prototypes", "16", "--far", "0.05", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"validation", "split", "classes", "train_rows"} <= set(report)      # existing keys stay
    assert set(report["generalisation"]["summary"]) == {"types", "difficulty"}
    assert report["open_set"]["prototypes"] == 16 and report["open_set"]["calibration_rows"] > 0
    # the unknown-attack decisions add about the chosen rate of false alarms to the head's
    added = report["open_set"]["false_alarm"] - report["open_set"]["false_alarm_head"]
    assert 0.0 <= added <= 0.05 + 0.05
    assert "neptune" in report["attack_types"]
    assert (out / "openset.json").is_file()
    assert ztfl_main(["train", "--data", str(kdd_file), "--format", "nsl-kdd", "--out", str(out),
                      "--validation", "typos"]) == 2
    # evaluate: the open-set decision and the per-type breakdown of the same model
    assert ztfl_main(["evaluate", "--model", str(out), "--data", str(kdd_file), "--format", "nsl-kdd",
                      "--by-type", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["open_set"]["unknown_rows"] >= 0 and ev["by_type"]["neptune"]["seen_in_training"] is True
    assert set(ev["by_difficulty"]) <= {"0-10", "11-15", "16-18", "19-20", "21-21"}
    assert sum(v["rows"] for v in ev["by_difficulty"].values()) == ev["n"]
