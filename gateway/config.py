"""`gateway.yaml`: what one fog gateway runs. Every key has a default so a demo needs few."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ztfl.fednet.transport import BrokerConfig
from ztfl.protocol.epochs import EpochPolicy

DEFAULT_DEADLINES = {"attest": 5.0, "advertise": 8.0, "share": 8.0, "masked": 60.0,
                     "consistency": 8.0, "unmask": 8.0}


class ConfigError(ValueError):
    """A configuration file has a bad or unknown key; the message names it."""


PRIVACY_MODES = ("stop", "warn")


@dataclass(frozen=True)
class PrivacySpec:
    """Distributed DP of one cohort (docs/privacy.md). `epsilon`, `delta`: the budget of the whole
    run, at which the gateway stops (mode stop) or warns (mode warn). The noise is sized for
    `round_epsilon` per round if given, else so that the configured number of rounds spends the
    budget, counting on `min_survivors` honest survivors per round."""
    epsilon: float
    delta: float
    min_survivors: int
    clip_norm: float
    mode: str = "stop"
    round_epsilon: float | None = None

    @classmethod
    def from_dict(cls, doc, where: str) -> "PrivacySpec":
        if not isinstance(doc, dict):
            raise ConfigError(f"gateway config: key '{where}' must be a mapping")
        names = {f.name for f in fields(cls)}
        unknown = set(doc) - names
        if unknown:
            raise ConfigError(f"gateway config: unknown key '{where}.{sorted(map(str, unknown))[0]}'")
        missing = {"epsilon", "delta", "min_survivors", "clip_norm"} - set(doc)
        if missing:
            raise ConfigError(f"gateway config: missing key '{where}.{sorted(missing)[0]}'")
        spec = cls(**doc)
        for key in ("epsilon", "clip_norm", "round_epsilon"):
            value = getattr(spec, key)
            if key == "round_epsilon" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ConfigError(f"gateway config: key '{where}.{key}' must be a positive number")
        if isinstance(spec.delta, bool) or not isinstance(spec.delta, (int, float)) or not 0 < spec.delta < 1:
            raise ConfigError(f"gateway config: key '{where}.delta' must be in (0, 1)")
        if isinstance(spec.min_survivors, bool) or not isinstance(spec.min_survivors, int) or spec.min_survivors < 2:
            raise ConfigError(f"gateway config: key '{where}.min_survivors' must be an integer >= 2")
        if spec.mode not in PRIVACY_MODES:
            raise ConfigError(f"gateway config: key '{where}.mode' must be one of {', '.join(PRIVACY_MODES)}")
        return spec


def epoch_policy(doc, where: str) -> EpochPolicy:
    if not isinstance(doc, dict) or set(doc) - {"max_rounds", "max_seconds"}:
        raise ConfigError(f"gateway config: key '{where}' takes max_rounds and max_seconds")
    try:
        return EpochPolicy(**doc)
    except ValueError as exc:
        raise ConfigError(f"gateway config: key '{where}': {exc}") from exc


COHORT_KEYS = ("key_epoch", "privacy")
MAX_ATTEMPTS_WITH_EPOCHS = 256      # protocol round id = round * 256 + attempt (gateway/epochs.py)


@dataclass
class GatewayConfig:
    federation: str = "plant"
    gateway: str = "fog1"
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    state_dir: str = "/var/lib/ztfl/gateway"
    data: dict = field(default_factory=dict)            # PartitionSpec of the validation split
    model_size: str = "small"
    rounds: int = 5
    min_agents: int = 4                                 # wait for this many before round 1
    min_cohort: int = 3                                 # smallest cohort that may aggregate
    threshold_fraction: float = 0.6                     # t = ceil(fraction * cohort), at least 2
    deadlines_s: dict = field(default_factory=lambda: dict(DEFAULT_DEADLINES))
    retry_delay_s: float = 2.0
    linger_s: float = 0.0                               # keep serving status this long after the last round
    round_interval_s: float = 0.5                       # pause between rounds (agents detect meanwhile)
    max_attempts: int = 3
    heartbeat_s: float = 2.0
    require_attestation: bool = False
    software_devices: str = ""                          # devices.yaml from `ztfl provision` (device keys)
    allow_software_rooted: bool = False                 # seat device-key boards (ESP32) that attest
    http_host: str = "127.0.0.1"
    http_port: int = 0                                  # 0: any free port (written to state_dir/http.port)
    max_payload: int = 16 * 1024 * 1024
    parent: dict = field(default_factory=dict)          # {"mode": "cloud", "wait_s": ..} reports upward
    seed: int = 0
    # Key epochs {max_rounds, max_seconds}: key-reuse rounds (max_rounds 1: a key agreement per
    # round); absent: classic rounds announced as agents without key epochs expect them.
    key_epoch: dict | None = None
    # Distributed DP {epsilon, delta, min_survivors, clip_norm, mode, round_epsilon}; absent: none.
    privacy: dict | None = None
    # Per cohort (e.g. micro-32) overrides of key_epoch and privacy; null turns one off there.
    cohorts: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: dict) -> "GatewayConfig":
        if not isinstance(doc, dict):
            raise ConfigError("gateway config must be a mapping")
        names = {f.name for f in fields(cls)}
        unknown = set(doc) - names
        if unknown:
            raise ConfigError(f"gateway config: unknown key '{sorted(map(str, unknown))[0]}'")
        doc = dict(doc)
        broker = doc.pop("broker", {}) or {}
        if not isinstance(broker, dict):
            raise ConfigError("gateway config: key 'broker' must be a mapping")
        try:
            broker_cfg = BrokerConfig(**broker)
        except TypeError as exc:
            raise ConfigError(f"gateway config: key 'broker': {exc}") from exc
        deadlines = dict(DEFAULT_DEADLINES)
        given = doc.pop("deadlines_s", {}) or {}
        if not isinstance(given, dict):
            raise ConfigError("gateway config: key 'deadlines_s' must map stages to seconds")
        deadlines.update(given)
        bad = set(deadlines) - set(DEFAULT_DEADLINES)
        if bad:
            raise ConfigError(f"gateway config: unknown stage 'deadlines_s.{sorted(map(str, bad))[0]}'")
        cfg = cls(broker=broker_cfg, deadlines_s=deadlines, **doc)
        for key in ("rounds", "min_agents", "min_cohort", "max_attempts", "max_payload"):
            value = getattr(cfg, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"gateway config: key '{key}' must be a positive integer")
        for key in ("require_attestation", "allow_software_rooted"):
            if not isinstance(getattr(cfg, key), bool):
                raise ConfigError(f"gateway config: key '{key}' must be true or false")
        if not isinstance(cfg.software_devices, str):
            raise ConfigError("gateway config: key 'software_devices' must be a path")
        if cfg.min_cohort < 2:
            raise ConfigError("gateway config: key 'min_cohort' must be at least 2")
        if not isinstance(cfg.cohorts, dict):
            raise ConfigError("gateway config: key 'cohorts' must map cohort names to settings")
        for name, over in cfg.cohorts.items():
            if not isinstance(over, dict) or set(over) - set(COHORT_KEYS):
                raise ConfigError(f"gateway config: key 'cohorts.{name}' takes {' and '.join(COHORT_KEYS)}")
        for name in [None, *cfg.cohorts]:
            where = "" if name is None else f"cohorts.{name}."
            policy = cfg.epoch_policy(name)
            cfg.privacy_spec(name)
            if policy is not None and cfg.max_attempts > MAX_ATTEMPTS_WITH_EPOCHS:
                raise ConfigError(f"gateway config: key '{where}key_epoch' numbers protocol rounds "
                                  f"round * {MAX_ATTEMPTS_WITH_EPOCHS} + attempt: max_attempts must be at most "
                                  f"{MAX_ATTEMPTS_WITH_EPOCHS}")
        return cfg

    def _cohort_setting(self, cohort: str | None, key: str):
        over = self.cohorts.get(cohort, {}) if cohort is not None else {}
        if key in over:
            return over[key], f"cohorts.{cohort}.{key}"
        return getattr(self, key), key

    def epoch_policy(self, cohort: str | None = None) -> EpochPolicy | None:
        """The key epoch policy of a cohort, or None for classic rounds with legacy announcements."""
        doc, where = self._cohort_setting(cohort, "key_epoch")
        return None if doc is None else epoch_policy(doc, where)

    def privacy_spec(self, cohort: str | None = None) -> PrivacySpec | None:
        doc, where = self._cohort_setting(cohort, "privacy")
        return None if doc is None else PrivacySpec.from_dict(doc, where)

    @classmethod
    def load(cls, path: str | Path) -> "GatewayConfig":
        try:
            doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except RecursionError:
            raise ConfigError(f"{path}: YAML nested too deeply") from None
        return cls.from_dict(doc or {})
