"""`agent.yaml`: what one agent daemon runs (deploy/agent.example.yaml).

Loaded by ztfl.config: types and limits are checked when the file is read, and a misspelt key is
refused with the closest valid one. Loading imports no torch, so a bad file is refused before
anything heavy starts (and the fuzzer parses it cheaply).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from ztfl.config import ConfigError, ConfigFile, setting
from ztfl.fednet.topics import check_id
from ztfl.fednet.transport import BrokerConfig
from ztfl.fednet.trust import TrustFiles
from ztfl.models.partition import PartitionSpec
from ztfl.privacy.floor import PrivacyFloor
from ztfl.protocol.epochs import EpochPolicy

AgentConfigError = ConfigError          # the agent's name for a bad agent.yaml
MODEL_SIZES = ("small", "default")      # models.spec.SIZES (which imports torch)


@dataclass(frozen=True)
class TpmSpec:
    """`tpm:` quote with this TPM; `tcti` as tpm2-tools take it (e.g. swtpm:host=...,port=...)."""
    tcti: str


@dataclass(frozen=True)
class AgentConfig(ConfigFile):
    FILE = "agent.yaml"

    agent_id: str = setting(check=partial(check_id, what="agent id"))
    federation: str = setting("plant", check=partial(check_id, what="federation"))
    gateway: str = setting("fog1", check=partial(check_id, what="gateway"))
    broker: BrokerConfig = setting(default_factory=BrokerConfig)
    profile: str | None = None             # hardware profile name or file; None: detected
    state_dir: str = "/var/lib/ztfl/agent"
    data: PartitionSpec | None = None      # this agent's records: partition `index` of `count`
    model_size: str = setting("small", choices=MODEL_SIZES)
    stream_rate_hz: float = setting(20.0, above=0)
    heartbeat_s: float = setting(2.0, above=0)
    train_epochs: int | None = setting(None, at_least=1)   # overrides the profile's budget (tests, demos)
    max_batches: int | None = setting(None, at_least=1)
    lr: float = setting(3e-3, above=0)     # local Adam step; a fresh optimiser each round
    seed: int = setting(0, at_least=0)
    record_updates_dir: str | None = None  # keep each plaintext update locally (audits, tests)
    tpm: TpmSpec | None = None
    threads: int = setting(1, at_least=1)  # torch threads for local training (cores to give it)
    key_epoch: EpochPolicy | None = None   # {max_rounds, max_seconds}: this agent's ceiling on key reuse
    # The least DP this agent's update joins, and its own privacy budget (docs/privacy.md); the
    # round's parameters never lower it.
    privacy_floor: PrivacyFloor = setting(default_factory=PrivacyFloor)
    # {anchor, certificate, identity_key, revocations}: the certified identity `ztfl provision`
    # wrote; absent: the agent runs, but refuses every round (it cannot check anyone's key).
    trust: TrustFiles | None = None

    def epoch_policy(self) -> EpochPolicy:
        """The longest this agent reuses one key setup (the gateway may end epochs sooner)."""
        return self.key_epoch or EpochPolicy()

    def partition(self) -> PartitionSpec:
        """`data:` may be left out of the file (provisioned ones leave it to the operator); the
        daemon needs it when it starts."""
        if self.data is None:
            raise AgentConfigError("missing key 'path'", "data")
        return self.data
