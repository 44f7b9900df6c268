"""Readers for the IDS data formats the project accepts.

Each reader returns a `LabeledTable`: raw feature columns (strings and numbers as found in
the file, cleaned only of what the format is known to carry: BOMs, stray spaces, id and
time columns) plus the binary and multi-class targets. Encoding into numbers is the job of
`models.preprocess`, fitted on training rows only.

Formats: NSL-KDD (no header), UNSW-NB15 (CSV), ToN_IoT telemetry (one device per file) and
Edge-IIoTset (CSV, by its published schema).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

FORMATS = ("nsl-kdd", "unsw-nb15", "ton-iot", "edge-iiotset")
NORMAL = "normal"


class DataFormatError(ValueError):
    """A data file does not follow the format it was read as."""


class MissingColumnError(DataFormatError):
    """A column the format (or a fitted pipeline) needs is absent."""

    def __init__(self, column: str, where: str):
        super().__init__(f"column {column!r} is missing from {where}")
        self.column = column


@dataclass
class LabeledTable:
    """Raw features and targets of one file (or a slice of one)."""
    features: pd.DataFrame
    category: np.ndarray          # str per row: "normal" or the attack class
    fmt: str
    device: str | None = None     # ToN_IoT device type
    order: np.ndarray | None = None  # ToN_IoT: timestamps, used only to order rows
    categorical: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def binary(self) -> np.ndarray:
        """1 = attack, 0 = normal."""
        return (self.category != NORMAL).astype(np.int64)

    def take(self, index) -> "LabeledTable":
        index = np.asarray(index)
        return LabeledTable(self.features.iloc[index].reset_index(drop=True), self.category[index],
                            self.fmt, self.device,
                            None if self.order is None else self.order[index], self.categorical)


def datasets_dir() -> Path:
    """`$ZTFL_DATASETS`, else `<repo root>/../shared/datasets`."""
    env = os.environ.get("ZTFL_DATASETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


# The file each experiment reads for a dataset, by format, under datasets_dir().
DATASET_FILES = {"nsl-kdd": "nsl_kdd/KDDTrain+_20Percent.txt", "unsw-nb15": "unsw_nb15/UNSW_NB15_dev.csv"}


def dataset_file(fmt: str) -> Path:
    if fmt not in DATASET_FILES:
        raise DataFormatError(f"no dataset file for format {fmt!r}; known: {', '.join(DATASET_FILES)}")
    return datasets_dir() / DATASET_FILES[fmt]


# --- NSL-KDD ---------------------------------------------------------------------------

NSL_KDD_FEATURES = (
    "duration protocol_type service flag src_bytes dst_bytes land wrong_fragment urgent hot "
    "num_failed_logins logged_in num_compromised root_shell su_attempted num_root "
    "num_file_creations num_shells num_access_files num_outbound_cmds is_host_login "
    "is_guest_login count srv_count serror_rate srv_serror_rate rerror_rate srv_rerror_rate "
    "same_srv_rate diff_srv_rate srv_diff_host_rate dst_host_count dst_host_srv_count "
    "dst_host_same_srv_rate dst_host_diff_srv_rate dst_host_same_src_port_rate "
    "dst_host_srv_diff_host_rate dst_host_serror_rate dst_host_srv_serror_rate "
    "dst_host_rerror_rate dst_host_srv_rerror_rate").split()
NSL_KDD_CATEGORICAL = ("protocol_type", "service", "flag")

# Attack name -> the usual five-way category (Tavallaee et al.; httptunnel counted as R2L).
NSL_KDD_CATEGORY = {
    **{n: "dos" for n in "back land neptune pod smurf teardrop apache2 mailbomb processtable udpstorm".split()},
    **{n: "probe" for n in "ipsweep nmap portsweep satan mscan saint".split()},
    **{n: "r2l" for n in ("ftp_write guess_passwd imap multihop phf spy warezclient warezmaster named "
                          "sendmail snmpgetattack snmpguess xlock xsnoop worm httptunnel").split()},
    **{n: "u2r" for n in "buffer_overflow loadmodule perl rootkit ps sqlattack xterm".split()},
}


def read_nsl_kdd(path: str | Path) -> LabeledTable:
    """41 features, the attack name, the difficulty level (dropped). No header."""
    df = pd.read_csv(path, header=None, skipinitialspace=True, dtype=str, keep_default_na=False)
    if df.shape[1] not in (42, 43):
        raise DataFormatError(f"{path}: NSL-KDD rows have 42 or 43 fields, found {df.shape[1]}")
    features = df.iloc[:, :41].copy()
    features.columns = NSL_KDD_FEATURES
    names = df.iloc[:, 41].str.strip().str.lower().str.rstrip(".")
    # Unknown attack names (the test file has some) still count as attacks.
    category = np.array([NORMAL if n == NORMAL else NSL_KDD_CATEGORY.get(n, "unknown_attack")
                         for n in names], dtype=object)
    return LabeledTable(_numeric_except(features, NSL_KDD_CATEGORICAL), category, "nsl-kdd",
                        categorical=NSL_KDD_CATEGORICAL)


# --- UNSW-NB15 -------------------------------------------------------------------------

UNSW_CATEGORICAL = ("proto", "service", "state")
UNSW_DROP = ("id", "srcip", "dstip", "sport", "dsport", "stime", "ltime")


def read_unsw_nb15(path: str | Path) -> LabeledTable:
    """The Kaggle-style partition CSV: features, `attack_cat`, `label` (the target is attack_cat)."""
    df = _read_csv(path)
    if "attack_cat" not in df.columns:
        raise MissingColumnError("attack_cat", str(path))
    cat = df["attack_cat"].fillna("").astype(str).str.strip().str.lower()
    cat = cat.where(cat != "", NORMAL)
    # The full release spells one class "backdoors".
    cat = cat.replace({"backdoors": "backdoor"})
    features = df.drop(columns=[c for c in (*UNSW_DROP, "attack_cat", "label") if c in df.columns])
    return LabeledTable(_numeric_except(features, UNSW_CATEGORICAL), cat.to_numpy(dtype=object),
                        "unsw-nb15", categorical=UNSW_CATEGORICAL)


# --- ToN_IoT telemetry -----------------------------------------------------------------

TON_TIME_COLUMNS = ("ts", "date", "time")
# Text states mapped to 0/1; anything else numeric stays as is.
_TON_BOOLEAN = {"true": "1", "false": "0", "on": "1", "off": "0", "open": "1", "closed": "0",
                "high": "1", "low": "0"}
TON_DEVICES = {
    "fridge": ("fridge_temperature", "temp_condition"),
    "gps_tracker": ("latitude", "longitude"),
    "garage_door": ("door_state", "sphone_signal"),
    "modbus": ("FC1_Read_Input_Register", "FC2_Read_Discrete_Value", "FC3_Read_Holding_Register",
               "FC4_Read_Coil"),
    "motion_light": ("motion_status", "light_status"),
    "thermostat": ("current_temperature", "thermostat_status"),
    "weather": ("temperature", "pressure", "humidity"),
}


def ton_device_of(columns) -> str:
    cols = set(columns)
    for device, needed in TON_DEVICES.items():
        if set(needed) <= cols:
            return device
    raise DataFormatError(f"no ToN_IoT device has the columns {sorted(cols)}")


def read_ton_iot(path: str | Path, window: int = 1) -> LabeledTable:
    """One device file. Rows are sorted by `ts` (when present); `ts`/`date`/`time` are never
    features (attacks ran in separate time windows, so they leak the label). With `window` > 1
    each row also carries the previous `window - 1` readings of the same file, oldest first."""
    df = _read_csv(path)
    for col in ("type",):
        if col not in df.columns:
            raise MissingColumnError(col, str(path))
    device = ton_device_of(df.columns)
    if "ts" in df.columns:
        ts = pd.to_numeric(df["ts"], errors="coerce")
        df = df.assign(ts=ts).sort_values("ts", kind="stable").reset_index(drop=True)
        order = df["ts"].to_numpy(dtype=np.float64)
    else:
        order = None
    cat = df["type"].astype(str).str.strip().str.lower().to_numpy(dtype=object)
    features = df[list(TON_DEVICES[device])].copy()
    for col in features.columns:
        s = features[col].astype(str).str.strip().str.lower()
        features[col] = pd.to_numeric(s.replace(_TON_BOOLEAN), errors="coerce")
    if window > 1:
        features = _stack_window(features, window)
    return LabeledTable(features, cat, "ton-iot", device=device, order=order)


def _stack_window(features: pd.DataFrame, window: int) -> pd.DataFrame:
    parts = []
    for lag in range(window - 1, -1, -1):
        shifted = features.shift(lag).bfill() if lag else features
        parts.append(shifted.add_suffix(f"@t-{lag}" if lag else ""))
    return pd.concat(parts, axis=1)


# --- Edge-IIoTset ----------------------------------------------------------------------

# Published schema (Ferrag et al. 2022, DNN-EdgeIIoT-dataset.csv): 61 feature columns.
EDGE_IIOT_COLUMNS = (
    "frame.time ip.src_host ip.dst_host arp.dst.proto_ipv4 arp.opcode arp.hw.size "
    "arp.src.proto_ipv4 icmp.checksum icmp.seq_le icmp.transmit_timestamp icmp.unused "
    "http.file_data http.content_length http.request.uri.query http.request.method http.referer "
    "http.request.full_uri http.request.version http.response http.tls_port tcp.ack tcp.ack_raw "
    "tcp.checksum tcp.connection.fin tcp.connection.rst tcp.connection.syn tcp.connection.synack "
    "tcp.dstport tcp.flags tcp.flags.ack tcp.len tcp.options tcp.payload tcp.seq tcp.srcport "
    "udp.port udp.stream udp.time_delta dns.qry.name dns.qry.name.len dns.qry.qu dns.qry.type "
    "dns.retransmission dns.retransmit_request dns.retransmit_request_in mqtt.conack.flags "
    "mqtt.conflag.cleansess mqtt.conflags mqtt.hdrflags mqtt.len mqtt.msg_decoded_as mqtt.msg "
    "mqtt.msgtype mqtt.proto_len mqtt.protoname mqtt.topic mqtt.topic_len mqtt.ver mbtcp.len "
    "mbtcp.trans_id mbtcp.unit_id").split()
# Identifiers, timestamps and free-text payloads: dropped as the dataset authors do.
EDGE_IIOT_DROP = ("frame.time", "ip.src_host", "ip.dst_host", "arp.src.proto_ipv4", "arp.dst.proto_ipv4",
                  "http.file_data", "http.request.full_uri", "icmp.transmit_timestamp",
                  "http.request.uri.query", "tcp.options", "tcp.payload", "tcp.srcport", "tcp.dstport",
                  "udp.port", "mqtt.msg")
EDGE_IIOT_CATEGORICAL = ("http.request.method", "http.referer", "http.request.version",
                         "dns.qry.name.len", "mqtt.conack.flags", "mqtt.protoname", "mqtt.topic")


def read_edge_iiotset(path: str | Path) -> LabeledTable:
    df = _read_csv(path)
    if "Attack_type" not in df.columns:
        raise MissingColumnError("Attack_type", str(path))
    cat = df["Attack_type"].astype(str).str.strip().str.lower()
    features = df.drop(columns=[c for c in (*EDGE_IIOT_DROP, "Attack_type", "Attack_label")
                                if c in df.columns])
    categorical = tuple(c for c in EDGE_IIOT_CATEGORICAL if c in features.columns)
    return LabeledTable(_numeric_except(features, categorical), cat.to_numpy(dtype=object),
                        "edge-iiotset", categorical=categorical)


# --- common ----------------------------------------------------------------------------

READERS = {"nsl-kdd": read_nsl_kdd, "unsw-nb15": read_unsw_nb15, "ton-iot": read_ton_iot,
           "edge-iiotset": read_edge_iiotset}


def load(path: str | Path, fmt: str, **kwargs) -> LabeledTable:
    if fmt not in READERS:
        raise DataFormatError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return READERS[fmt](path, **kwargs)


def _read_csv(path) -> pd.DataFrame:
    # utf-8-sig strips the BOM the UNSW and ToN_IoT files start with.
    df = pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False, low_memory=False)
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _numeric_except(features: pd.DataFrame, categorical) -> pd.DataFrame:
    """Categorical columns stay stripped strings, every other column becomes a float
    (unparseable cells become NaN, imputed later by the fitted pipeline)."""
    out = {}
    for col in features.columns:
        s = features[col]
        if col in categorical:
            out[col] = s.astype(str).str.strip()
        else:
            out[col] = pd.to_numeric(s.astype(str).str.strip(), errors="coerce")
    return pd.DataFrame(out)


def deduplicate(table: LabeledTable) -> LabeledTable:
    """Keep the first of rows repeating (features, class). Done before any split so the same
    record never lands on both sides."""
    keyed = table.features.reset_index(drop=True).assign(__class__=pd.Series(table.category, dtype=object))
    keep = ~keyed.duplicated().to_numpy()
    return table.take(np.flatnonzero(keep))


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test); every class with at least two rows appears on both sides."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
