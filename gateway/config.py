"""`gateway.yaml`: what one fog gateway runs. Every key has a default so a demo needs few."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from agent.transport import BrokerConfig

DEFAULT_DEADLINES = {"attest": 5.0, "advertise": 8.0, "share": 8.0, "masked": 60.0,
                     "consistency": 8.0, "unmask": 8.0}


class ConfigError(ValueError):
    """A configuration file has a bad or unknown key; the message names it."""


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
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "GatewayConfig":
        try:
            doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except RecursionError:
            raise ConfigError(f"{path}: YAML nested too deeply") from None
        return cls.from_dict(doc or {})
