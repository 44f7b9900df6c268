"""Readers on slices of the real files in ../shared/datasets and on hand-written
Edge-IIoTset rows; the preprocessing pipeline; partitioning."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ztfl.models.datasets import (EDGE_IIOT_COLUMNS, MissingColumnError, deduplicate, load,
                             read_edge_iiotset, read_nsl_kdd, read_ton_iot, read_unsw_nb15,
                             stratified_split)
from ztfl.models.partition import by_device, dirichlet_partition
from ztfl.models.preprocess import Pipeline


def head_bytes(src, dst, n_lines: int):
    """The first n_lines lines of a real file, bytes untouched (BOM and CRLF kept)."""
    with open(src, "rb") as f:
        lines = [f.readline() for _ in range(n_lines)]
    dst.write_bytes(b"".join(lines))
    return dst


def spread_rows(src, dst, n_rows: int, header: bool):
    """A header (if any) plus rows taken evenly across the whole file, so every class appears."""
    raw = open(src, "rb").read().splitlines(keepends=True)
    head, body = (raw[:1], raw[1:]) if header else ([], raw)
    step = max(1, len(body) // n_rows)
    picked = body[::step][:n_rows]
    picked = [line if line.endswith(b"\n") else line + b"\r\n" for line in picked]
    dst.write_bytes(b"".join(head + picked))
    return dst


def test_nsl_kdd_drops_difficulty_and_maps_attack_names(datasets_dir, tmp_path):
    f = spread_rows(datasets_dir / "nsl_kdd/KDDTrain+_20Percent.txt", tmp_path / "kdd.txt", 400, header=False)
    t = read_nsl_kdd(f)
    assert len(t) == 400
    assert t.features.shape[1] == 41 and list(t.features.columns)[:4] == ["duration", "protocol_type", "service", "flag"]
    assert set(t.category) <= {"normal", "dos", "probe", "r2l", "u2r"}
    assert {"normal", "dos", "probe"} <= set(t.category)
    assert t.features["src_bytes"].dtype.kind in "if"
    assert set(t.features["protocol_type"]) <= {"tcp", "udp", "icmp"}


def test_unsw_reads_bom_file_and_drops_id_and_labels(datasets_dir, tmp_path):
    f = spread_rows(datasets_dir / "unsw_nb15/UNSW_NB15_dev.csv", tmp_path / "unsw.csv", 300, header=True)
    assert f.read_bytes()[:3] == b"\xef\xbb\xbf"
    t = read_unsw_nb15(f)
    cols = set(t.features.columns)
    assert not cols & {"id", "\ufeffid", "label", "attack_cat"}
    assert {"dur", "proto", "service", "state"} <= cols and len(cols) == 42
    assert "normal" in set(t.category) and len(set(t.category)) >= 5


def test_ton_iot_sorted_by_ts_and_time_columns_never_features(datasets_dir, tmp_path):
    f = spread_rows(datasets_dir / "ton_iot/Train_Test_IoT_Garage_Door.csv", tmp_path / "door.csv", 300, header=True)
    t = read_ton_iot(f)
    assert t.device == "garage_door"
    assert list(t.features.columns) == ["door_state", "sphone_signal"]
    assert np.all(np.diff(t.order) >= 0)
    # sphone_signal mixes "true  "/"false  " with 1/0: all normalised to numbers.
    assert set(t.features["sphone_signal"].dropna().unique()) <= {0.0, 1.0}
    assert set(t.features["door_state"].unique()) <= {0.0, 1.0}
    w = read_ton_iot(f, window=3)
    assert w.features.shape[1] == 6 and "door_state@t-2" in w.features.columns


def test_ton_iot_weather_file_without_ts(datasets_dir, tmp_path):
    f = head_bytes(datasets_dir / "ton_iot/weather_reduced/Train_Test_IoT_Weather.csv", tmp_path / "w.csv", 50)
    t = read_ton_iot(f)
    assert t.device == "weather" and t.order is None and len(t) == 49


EDGE_ROWS = [
    # Hand-written rows in the published Edge-IIoTset schema (61 features, Attack_label, Attack_type).
    {"frame.time": "2021 11:44:10.081753000", "ip.src_host": "192.168.0.128", "ip.dst_host": "192.168.0.101",
     "tcp.dstport": "1883", "tcp.len": "0", "mqtt.protoname": "MQTT", "mqtt.topic": "Temperature_and_Humidity",
     "http.request.method": "0", "mqtt.len": "39", "Attack_label": "0", "Attack_type": "Normal"},
    {"frame.time": "2021 11:44:10.081753100", "ip.src_host": "192.168.0.170", "ip.dst_host": "192.168.0.128",
     "tcp.dstport": "80", "tcp.len": "0", "tcp.flags": "2", "http.request.method": "GET",
     "mqtt.protoname": "0", "mqtt.topic": "0", "Attack_label": "1", "Attack_type": "DDoS_TCP"},
    {"frame.time": "2021 11:44:11.000000000", "ip.src_host": "192.168.0.170", "ip.dst_host": "192.168.0.128",
     "tcp.dstport": "80", "tcp.len": "120", "http.request.method": "POST", "http.request.uri.query": "id=1' OR '1'='1",
     "mqtt.protoname": "0", "mqtt.topic": "0", "Attack_label": "1", "Attack_type": "SQL_injection"},
]


def write_edge(path, rows, drop=()):
    cols = [c for c in (*EDGE_IIOT_COLUMNS, "Attack_label", "Attack_type") if c not in drop]
    df = pd.DataFrame([{c: r.get(c, "0") for c in cols} for r in rows], columns=cols)
    df.to_csv(path, index=False)
    return path


def test_edge_iiotset_schema_and_loader(tmp_path):
    assert len(EDGE_IIOT_COLUMNS) == 61
    t = read_edge_iiotset(write_edge(tmp_path / "edge.csv", EDGE_ROWS))
    assert list(t.category) == ["normal", "ddos_tcp", "sql_injection"]
    assert list(t.binary) == [0, 1, 1]
    # identifiers, timestamps and payloads are not features
    assert not set(t.features.columns) & {"frame.time", "ip.src_host", "tcp.dstport", "http.request.uri.query"}
    assert t.features["http.request.method"].tolist() == ["0", "GET", "POST"]
    assert t.features["tcp.len"].tolist() == [0.0, 0.0, 120.0]


def test_missing_label_column_is_named(tmp_path):
    with pytest.raises(MissingColumnError, match="Attack_type"):
        read_edge_iiotset(write_edge(tmp_path / "e.csv", EDGE_ROWS, drop=("Attack_type",)))


def test_pipeline_missing_feature_column_is_named(tmp_path):
    t = read_edge_iiotset(write_edge(tmp_path / "edge.csv", EDGE_ROWS))
    p = Pipeline.fit(t)
    other = read_edge_iiotset(write_edge(tmp_path / "e2.csv", EDGE_ROWS, drop=("mqtt.len",)))
    with pytest.raises(MissingColumnError) as e:
        p.transform(other)
    assert e.value.column == "mqtt.len" and "mqtt.len" in str(e.value)


def test_pipeline_unseen_category_goes_to_unseen_slot_and_values_stay_in_unit_range(tmp_path):
    t = read_edge_iiotset(write_edge(tmp_path / "edge.csv", EDGE_ROWS))
    p = Pipeline.fit(t)
    rows = [dict(EDGE_ROWS[1], **{"http.request.method": "PROPFIND", "tcp.len": "99999"})]
    x = p.transform(read_edge_iiotset(write_edge(tmp_path / "new.csv", rows)))
    names = p.feature_names
    assert x[0, names.index("http.request.method=<unseen>")] == 1.0
    assert x[0, names.index("http.request.method=GET")] == 0.0
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x[0, names.index("tcp.len")] == 1.0  # beyond the training max: clipped


def test_pipeline_json_round_trip_encodes_identically(datasets_dir, tmp_path):
    f = spread_rows(datasets_dir / "unsw_nb15/UNSW_NB15_dev.csv", tmp_path / "unsw.csv", 300, header=True)
    t = read_unsw_nb15(f)
    p = Pipeline.fit(t)
    p.save(tmp_path / "pipeline.json")
    text = (tmp_path / "pipeline.json").read_text()
    json.loads(text)  # plain JSON
    q = Pipeline.load(tmp_path / "pipeline.json")
    assert np.array_equal(p.transform(t), q.transform(t))
    assert np.array_equal(p.continuous_mask, q.continuous_mask)
    # one-hot blocks and 0/1 flags are not continuous; heavy-tailed columns are log-scaled
    names = p.feature_names
    assert not p.continuous_mask[names.index("proto=tcp")] if "proto=tcp" in names else True
    assert next(c for c in p.numeric if c.name == "sbytes").log


def test_deduplicate_before_split_leaves_no_overlap(datasets_dir, tmp_path):
    f = head_bytes(datasets_dir / "ton_iot/Train_Test_IoT_Modbus.csv", tmp_path / "modbus.csv", 400)
    t = read_ton_iot(f)
    d = deduplicate(t)
    assert len(d) < len(t)
    keys = d.features.astype(str).agg(",".join, axis=1) + "|" + pd.Series(d.category)
    assert keys.is_unique
    tr, te = stratified_split(d.category, 0.3, seed=1)
    assert not set(keys.iloc[tr]) & set(keys.iloc[te])
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(d)))


def test_stratified_split_keeps_every_class_on_both_sides():
    labels = np.array(["a"] * 50 + ["b"] * 5 + ["c"] * 2)
    tr, te = stratified_split(labels, 0.2, seed=0)
    for c in "abc":
        assert (labels[tr] == c).any() and (labels[te] == c).any()


def test_dirichlet_partition_is_a_partition_and_alpha_controls_skew():
    labels = np.repeat(np.arange(5), 200)
    parts = dirichlet_partition(labels, 10, alpha=0.1, seed=3)
    allrows = np.concatenate(parts)
    assert len(allrows) == len(labels) and len(np.unique(allrows)) == len(labels)
    assert min(len(p) for p in parts) >= 1
    again = dirichlet_partition(labels, 10, alpha=0.1, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))

    def mean_classes(ps):
        return np.mean([len(np.unique(labels[p])) for p in ps])
    skewed = mean_classes(parts)
    even = mean_classes(dirichlet_partition(labels, 10, alpha=100.0, seed=3))
    assert even == 5 and skewed < 4


def test_ton_iot_one_client_per_device(datasets_dir, tmp_path):
    tables = [read_ton_iot(head_bytes(datasets_dir / f"ton_iot/Train_Test_IoT_{d}.csv", tmp_path / f"{d}.csv", 30))
              for d in ("Fridge", "Modbus", "Thermostat")]
    clients = by_device(tables)
    assert sorted(clients) == ["fridge", "modbus", "thermostat"]
    with pytest.raises(ValueError):
        by_device(tables + tables[:1])


def test_load_rejects_unknown_format_and_missing_file(tmp_path):
    from ztfl.models.datasets import DataFormatError
    with pytest.raises(DataFormatError):
        load(tmp_path / "x.csv", "kdd99")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.csv", "unsw-nb15")
