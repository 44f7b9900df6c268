"""`cloud.yaml`: what the cloud tier above the fog gateways runs (docs/deployment.md,
Edge-fog-cloud). Loaded by ztfl.config like gateway.yaml; loading imports no torch."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from ztfl.config import ConfigFile, setting
from ztfl.fednet.topics import check_id
from ztfl.fednet.transport import BrokerConfig
from ztfl.gateway.config import MODEL_SIZES, NeedsData
from ztfl.models.partition import PartitionSpec


def _gateway_ids(ids: tuple[str, ...]) -> None:
    for gateway in ids:
        check_id(gateway, "gateway")


@dataclass(frozen=True)
class CloudConfig(ConfigFile, NeedsData):
    FILE = "cloud.yaml"

    gateways: tuple[str, ...] = setting(min_items=1, check=_gateway_ids)     # ids expected each round
    federation: str = setting("plant", check=partial(check_id, what="federation"))
    broker: BrokerConfig = setting(default_factory=BrokerConfig)
    state_dir: str = "/var/lib/ztfl/cloud"
    data: PartitionSpec | None = None
    model_size: str = setting("small", choices=MODEL_SIZES)
    wait_s: float = setting(60.0, at_least=0)
    rounds: int = setting(5, at_least=1)
    max_payload: int = setting(64 * 1024 * 1024, at_least=1)
    seed: int = setting(0, at_least=0)
