"""`gateway.yaml`: what one fog gateway runs. Every key has a default so a demo needs few.

Loaded by ztfl.config: every key's type and limits are checked when the file is read, and a
misspelt key is refused with the closest valid one. Loading imports no torch.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial
from types import MappingProxyType

from ztfl.config import ConfigError, ConfigFile, setting
from ztfl.fednet.topics import check_id
from ztfl.fednet.transport import LARGEST_MESSAGE_BYTES, BrokerConfig
from ztfl.fednet.trust import TrustFiles
from ztfl.models.partition import PartitionSpec
from ztfl.protocol.epochs import EpochPolicy

PRIVACY_MODES = ("stop", "warn")
MODEL_SIZES = ("small", "default")      # models.spec.SIZES (which imports torch)
MAX_ATTEMPTS_WITH_EPOCHS = 256          # protocol round id = round * 256 + attempt (gateway/epochs.py)


@dataclass(frozen=True)
class PrivacySpec:
    """Distributed DP of one cohort (docs/privacy.md). `epsilon`, `delta`: the budget of the whole
    run, at which the gateway stops (mode stop) or warns (mode warn). The noise is sized for
    `round_epsilon` per round if given, else so that the configured number of rounds spends the
    budget, counting on `min_survivors` honest survivors per round."""
    epsilon: float = setting(above=0)
    delta: float = setting(above=0, below=1)
    min_survivors: int = setting(at_least=2)
    clip_norm: float = setting(above=0)
    mode: str = setting("stop", choices=PRIVACY_MODES)
    round_epsilon: float | None = setting(None, above=0)


@dataclass(frozen=True)
class Deadlines:
    """Seconds each stage of a cohort's round may take (announced to the agents)."""
    attest: float = setting(5.0, above=0)
    advertise: float = setting(8.0, above=0)
    share: float = setting(8.0, above=0)
    masked: float = setting(60.0, above=0)
    consistency: float = setting(8.0, above=0)
    unmask: float = setting(8.0, above=0)

    def by_stage(self) -> dict:
        """Stage -> seconds, as written (the round announcement carries it)."""
        return asdict(self)


class _Inherit:
    def __repr__(self) -> str:
        return "INHERIT"


INHERIT = _Inherit()        # a cohort setting left out: the gateway-wide one applies


@dataclass(frozen=True)
class CohortSettings:
    """One cohort's overrides (e.g. `cohorts: {micro-32: {privacy: null}}`); null turns one off."""
    key_epoch: EpochPolicy | None = INHERIT
    privacy: PrivacySpec | None = INHERIT


@dataclass(frozen=True)
class ParentSpec:
    """`parent:` the gateway reports its aggregates to the cloud tier and adopts its models."""
    mode: str = setting("cloud", choices=("cloud",))
    wait_s: float = setting(120.0, at_least=0)  # for the cloud's model of a round


@dataclass(frozen=True)
class AttestationSettings:
    """`attestation:` the device registry the gateway enforces (docs/attestation.md). `devices`:
    the devices.yaml of `ztfl provision`, every id the gateway admits with its EK pin or device
    key; `ek_cas`: PEM files of the EK manufacturer CAs an EK certificate must chain to; `policy`:
    the attestation-policy.yaml (empty: PCR 23 must hold this release's measurement);
    `trust_on_first_use`: a TPM device without a pinned EK is pinned to the first EK it enrols with
    (without `devices`, any id may enrol so)."""
    devices: str = ""
    ek_cas: tuple[str, ...] = ()
    policy: str = ""
    trust_on_first_use: bool = False


@dataclass(frozen=True)
class GatewayTrustFiles(TrustFiles):
    """`trust:` the gateway's certified identity (fednet.trust.TrustFiles) and `intermediate_key`:
    the online key that signs revocation lists, to renew them before they expire."""
    intermediate_key: str | None = None


class NeedsData:
    """`data:` may be left out of a file (provisioned ones leave it to the operator); the role
    needs it when it starts."""
    data: PartitionSpec | None

    def partition(self) -> PartitionSpec:
        if self.data is None:
            raise ConfigError("missing key 'path'", "data")
        return self.data


@dataclass(frozen=True)
class GatewayConfig(ConfigFile, NeedsData):
    FILE = "gateway.yaml"

    federation: str = setting("plant", check=partial(check_id, what="federation"))
    gateway: str = setting("fog1", check=partial(check_id, what="gateway"))
    broker: BrokerConfig = setting(default_factory=BrokerConfig)
    state_dir: str = "/var/lib/ztfl/gateway"
    data: PartitionSpec | None = None                   # the labelled records: pipeline and validation split
    model_size: str = setting("small", choices=MODEL_SIZES)
    rounds: int = setting(5, at_least=1)
    min_agents: int = setting(4, at_least=1)            # wait for this many before round 1
    min_cohort: int = setting(3, at_least=2)            # smallest cohort that may aggregate
    threshold_fraction: float = setting(0.6, above=0, at_most=1)    # t = ceil(fraction * cohort), at least 2
    deadlines_s: Deadlines = setting(default_factory=Deadlines)
    retry_delay_s: float = setting(2.0, at_least=0)
    linger_s: float = setting(0.0, at_least=0)          # keep serving status this long after the last round
    round_interval_s: float = setting(0.5, at_least=0)  # pause between rounds (agents detect meanwhile)
    max_attempts: int = setting(3, at_least=1)
    heartbeat_s: float = setting(2.0, above=0)
    require_attestation: bool = False
    software_devices: str = ""                          # devices.yaml from `ztfl provision` (device keys)
    allow_software_rooted: bool = False                 # seat device-key boards (ESP32) that attest
    # Certified identity (`ztfl provision` writes it): without it the gateway announces bare keys,
    # which agents that check certificates refuse.
    trust: GatewayTrustFiles | None = None
    attestation: AttestationSettings = setting(default_factory=AttestationSettings)
    http_host: str = "127.0.0.1"
    http_port: int = setting(0, at_least=0, at_most=65535)   # 0: any free port (written to state_dir/http.port)
    # Larger payloads from agents are dropped undecoded; the default is the largest legitimate
    # message of the largest model (fednet.transport.LARGEST_MESSAGE_BYTES).
    max_payload: int = setting(LARGEST_MESSAGE_BYTES, at_least=1)
    parent: ParentSpec | None = None                    # report upward to the cloud tier
    seed: int = setting(0, at_least=0)
    # Key epochs {max_rounds, max_seconds}: key-reuse rounds (max_rounds 1: a key agreement per
    # round); absent: classic rounds announced as agents without key epochs expect them.
    key_epoch: EpochPolicy | None = None
    # Distributed DP {epsilon, delta, min_survivors, clip_norm, mode, round_epsilon}; absent: none.
    privacy: PrivacySpec | None = None
    # Per cohort (e.g. micro-32) overrides of key_epoch and privacy.
    cohorts: Mapping[str, CohortSettings] = setting(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self):
        if self.software_devices and self.attestation.devices:
            raise ConfigError("give the device list once: attestation.devices replaces it", "software_devices")
        for name in [None, *self.cohorts]:
            if self.epoch_policy(name) is not None and self.max_attempts > MAX_ATTEMPTS_WITH_EPOCHS:
                where = "key_epoch" if name is None else f"cohorts.{name}.key_epoch"
                raise ConfigError(f"must be at most {MAX_ATTEMPTS_WITH_EPOCHS} when {where} is set (protocol "
                                  f"rounds are numbered round * {MAX_ATTEMPTS_WITH_EPOCHS} + attempt)", "max_attempts")

    def _cohort_setting(self, cohort: str | None, key: str):
        override = self.cohorts.get(cohort) if cohort is not None else None
        value = INHERIT if override is None else getattr(override, key)
        return getattr(self, key) if value is INHERIT else value

    def epoch_policy(self, cohort: str | None = None) -> EpochPolicy | None:
        """The key epoch policy of a cohort, or None for classic rounds with legacy announcements."""
        return self._cohort_setting(cohort, "key_epoch")

    def privacy_spec(self, cohort: str | None = None) -> PrivacySpec | None:
        return self._cohort_setting(cohort, "privacy")

    def uses_privacy(self) -> bool:
        """Whether DP is configured anywhere: the gateway-wide spec or any cohort's own word on it."""
        return self.privacy is not None or any(c.privacy is not INHERIT for c in self.cohorts.values())
