"""Host side of the firmware's data: the device's feature records (ZTRC files) and its
per-device directory (config.json + records.bin + key) for the board or the unix port.

A board cannot run the preprocessing pipeline (pandas); its records are encoded here with
the federation's pipeline and quantised to the int8 input of the micro model.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

MAGIC = b"ZTRC"
VERSION = 1


class RecordsError(ValueError):
    """Rows that cannot be written as device records."""


def quantise_rows(x: np.ndarray) -> np.ndarray:
    """docs/models.md input quantisation: clamp(floor(x * 127 + 0.5), 0, 127)."""
    return np.clip(np.floor(np.asarray(x, dtype=np.float64) * 127 + 0.5), 0, 127).astype(np.uint8)


def encode_records(x: np.ndarray, y: np.ndarray) -> bytes:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2 or x.shape[1] == 0 or x.shape[1] > 0xFFFF:
        raise RecordsError(f"rows must be a 2-D array with 1..65535 features, got shape {x.shape}")
    if y.shape != (x.shape[0],) or (y.size and (y.min() < 0 or y.max() > 255)):
        raise RecordsError("one label in 0..255 per row")
    body = np.concatenate([y.astype(np.uint8)[:, None], quantise_rows(x)], axis=1)
    return struct.pack("<4sBHI", MAGIC, VERSION, x.shape[1], x.shape[0]) + body.tobytes()


def partition_records(data: dict) -> tuple[bytes, list[str]]:
    """ZTRC bytes and class names of one agent's partition (models.partition PartitionSpec dict),
    encoded with the pipeline the gateway fits from the same spec."""
    records, classes = partitions_records(data, [data.get("index", 0)])
    return records[0], classes


def partitions_records(data: dict, indices: list[int]) -> tuple[list[bytes], list[str]]:
    """Like partition_records for several partition indices, loading the dataset once."""
    from ztfl.models.partition import PartitionSpec, agent_partitions, train_validation
    from ztfl.models.preprocess import Pipeline
    spec = PartitionSpec.from_dict(data)
    train, _ = train_validation(spec)
    pipeline = Pipeline.fit(train)
    parts = agent_partitions(spec, train.category)
    out = []
    for index in indices:
        if not 0 <= index < spec.count:
            raise RecordsError(f"partition index {index} outside 0..{spec.count - 1}")
        encoded = pipeline.encode(train.take(parts[index]))
        x = np.asarray(encoded.x).reshape(len(encoded.y), -1)
        out.append(encode_records(x, np.asarray(encoded.y)))
    return out, list(pipeline.classes)


def write_device_dir(out: Path, config: dict, records: bytes) -> Path:
    """config.json + records.bin, as the firmware expects them next to main.py."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "records.bin").write_bytes(records)
    path = out / "config.json"
    path.write_text(json.dumps(config, indent=1))
    path.chmod(0o600)   # holds the device key
    return out
