"""Round configuration: its 28-byte wire body (48 with the signed DP record, `DpConfig`), and the
rules an agent applies before it takes part.

`RoundConfig` is a wire value: it refuses only what cannot be expressed or would wrap the modulus
2^B (max_clients x max_weight x clip_q). Whether a configuration is safe enough to take part in is
the agents' decision, made with their own provisioned `SecurityFloor` (docs/protocol.md 2.4): active
security only, a threshold above 2g/3 of the sharing group actually announced, minimum group and
neighbour counts, and never the threshold-override flag. Nothing in the round can lower the floor.
"""
from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

from ztfl.protocol.errors import (ConfigurationError, GroupBelowFloor, MalformedMessage, NeighborsBelowFloor,
                                  SemiHonestRefused, ThresholdBelowFloor, ThresholdOverrideRefused)

SEMI_HONEST = 0                # on the wire for completeness: every agent refuses it (2.4)
ACTIVE = 1
FLAG_THRESHOLD_OVERRIDE = 0x01  # decoded so that the refusal is typed: every agent refuses it
FLAG_KEY_REUSE = 0x02          # docs/protocol.md 2.7: epoch secrets are never shared
FLAG_NEW_GRAPH = 0x04          # key-reuse rounds: this round fixes the key epoch's neighbour graph (1.7)
FLAG_DP = 0x08                 # a DP record follows the 28 bytes (docs/protocol.md 1.6, docs/privacy.md)
KNOWN_FLAGS = FLAG_THRESHOLD_OVERRIDE | FLAG_KEY_REUSE | FLAG_NEW_GRAPH | FLAG_DP

CONFIG_STRUCT = struct.Struct("<IBBBBHHHHQI")  # 28 bytes
DP_STRUCT = struct.Struct("<BBHQQ")            # 20 more bytes with FLAG_DP
DP_SKELLAM = 1                 # the DP record's mechanism: Poisson(mean) - Poisson(mean) per coordinate
MAX_POISSON_MEAN = 1 << 52     # the agents' exact sampler works in doubles (privacy.sampling)
MAX_DIM = 1 << 27   # 128 Mi words: a bound the decoders use before allocating


def _int(name: str, value, lo: int, hi: int) -> int:
    # bool is an int in Python: refuse it explicitly (True would silently mean 1).
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigurationError(f"{name} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ConfigurationError(f"{name} must be in {lo}..{hi}, got {value}")
    return value


def group_size(n: int, neighbors: int) -> int:
    """Members of one sharing group (a client and its neighbours) in a roster of n."""
    if neighbors == 0 or neighbors >= n - 1:
        return n
    return neighbors + 1


@dataclass(frozen=True)
class DpConfig:
    """Distributed DP of a round, signed with its configuration (docs/privacy.md): each client clips
    its update to L2 norm `l2_clip_q` (fixed-point units at the round's frac_bits), weighs it 1 and
    adds Poisson(poisson_mean) - Poisson(poisson_mean) to every coordinate; the noise is sized for
    `min_survivors` honest survivors, and the threshold must be at least that."""
    min_survivors: int
    l2_clip_q: int
    poisson_mean: int
    mechanism: int = DP_SKELLAM

    def __post_init__(self):
        if self.mechanism != DP_SKELLAM or isinstance(self.mechanism, bool):
            raise ConfigurationError(f"DP mechanism {self.mechanism!r} is unknown (1: Skellam)")
        _int("min_survivors", self.min_survivors, 1, 0xFFFF)
        _int("l2_clip_q", self.l2_clip_q, 1, (1 << 63) - 1)
        _int("poisson_mean", self.poisson_mean, 1, MAX_POISSON_MEAN)

    def encode(self) -> bytes:
        return DP_STRUCT.pack(self.mechanism, 0, self.min_survivors, self.l2_clip_q, self.poisson_mean)

    @classmethod
    def decode(cls, record: bytes) -> "DpConfig":
        mechanism, reserved, min_survivors, l2_clip_q, poisson_mean = DP_STRUCT.unpack(record)
        if reserved:
            raise MalformedMessage("reserved byte set in the ROUND_CONFIG DP record")
        return cls(min_survivors, l2_clip_q, poisson_mean, mechanism)


@dataclass(frozen=True)
class RoundConfig:
    dim: int
    threshold: int
    max_clients: int
    mask_bits: int = 32
    frac_bits: int = 16
    clip_q: int = 8 << 16          # |q| <= 8.0 at 16 fractional bits
    max_weight: int = 1
    neighbors: int = 0             # 0: complete graph; else even degree (SecAgg+)
    security: int = ACTIVE
    threshold_override: bool = False   # expressible on the wire, refused by every agent
    key_reuse: bool = False
    new_graph: bool = False            # key-reuse rounds with a sparse graph: fix the epoch's graph
    dp: DpConfig | None = None         # distributed DP (FLAG_DP); None: a round without DP

    def __post_init__(self):
        _int("dim", self.dim, 1, MAX_DIM)
        _int("max_clients", self.max_clients, 2, 0xFFFF)
        if self.mask_bits not in (32, 64) or isinstance(self.mask_bits, bool):
            raise ConfigurationError(f"mask_bits must be 32 or 64, got {self.mask_bits!r}")
        _int("frac_bits", self.frac_bits, 0, self.mask_bits - 2)
        _int("clip_q", self.clip_q, 1, (1 << 63) - 1)
        _int("max_weight", self.max_weight, 1, 0xFFFFFFFF)
        _int("neighbors", self.neighbors, 0, 0xFFFF)
        if self.neighbors and self.neighbors % 2:
            raise ConfigurationError(f"neighbors must be even (Harary graph), got {self.neighbors}")
        if self.security not in (SEMI_HONEST, ACTIVE) or isinstance(self.security, bool):
            raise ConfigurationError(f"security must be 0 (semi-honest) or 1 (active), got {self.security!r}")
        if not isinstance(self.threshold_override, bool):
            raise ConfigurationError("threshold_override must be a bool")
        for name in ("key_reuse", "new_graph"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be a bool")
        if self.new_graph and not (self.key_reuse and self.neighbors):
            raise ConfigurationError("new_graph belongs to key-reuse rounds with a sparse graph (neighbors > 0)")
        group = group_size(self.max_clients, self.neighbors)
        _int("threshold", self.threshold, 1, group)
        half = (1 << (self.mask_bits - 1)) - 1
        if self.max_clients * self.max_weight * self.clip_q > half:
            raise ConfigurationError(
                f"{self.max_clients} clients x weight {self.max_weight} x clip_q {self.clip_q} "
                f"can wrap a {self.mask_bits}-bit modulus: lower clip, frac_bits or weight, or use 64-bit masks")
        if self.max_clients * self.max_weight > half:
            raise ConfigurationError("the sum of weights can wrap the modulus")
        if self.dp is not None:
            if not isinstance(self.dp, DpConfig):
                raise ConfigurationError("dp must be a DpConfig")
            if self.threshold < self.dp.min_survivors:
                raise ConfigurationError(f"threshold {self.threshold} is below the {self.dp.min_survivors} survivors "
                                         "the DP noise counts on: a round with fewer would still be unmasked")

    @classmethod
    def for_range(cls, dim: int, max_clients: int, threshold: int, clip: float = 8.0,
                  frac_bits: int = 16, **kw) -> "RoundConfig":
        """A configuration clipping updates to [-clip, clip] at `frac_bits` fractional bits."""
        return cls(dim=dim, max_clients=max_clients, threshold=threshold, frac_bits=frac_bits,
                   clip_q=int(round(clip * 2**frac_bits)), **kw)

    @property
    def reveals_graph(self) -> bool:
        """Whether the round fixes its neighbour graph by commit and reveal (docs/protocol.md 1.7):
        every sparse classic round, and the key-reuse round that starts an epoch's graph. A
        complete graph needs no randomness; later key-reuse rounds keep the epoch's graph."""
        return bool(self.neighbors) and (not self.key_reuse or self.new_graph)

    @property
    def words(self) -> int:
        """Words on the wire: the update plus the weight."""
        return self.dim + 1

    @property
    def word_bytes(self) -> int:
        return self.mask_bits // 8

    def encode(self) -> bytes:
        flags = (FLAG_THRESHOLD_OVERRIDE if self.threshold_override else 0) | \
            (FLAG_KEY_REUSE if self.key_reuse else 0) | (FLAG_NEW_GRAPH if self.new_graph else 0) | \
            (FLAG_DP if self.dp is not None else 0)
        body = CONFIG_STRUCT.pack(self.dim, self.mask_bits, self.frac_bits, self.security, flags,
                                  self.threshold, self.neighbors, self.max_clients, 0,
                                  self.clip_q, self.max_weight)
        return body if self.dp is None else body + self.dp.encode()

    @classmethod
    def decode(cls, body: bytes) -> "RoundConfig":
        if len(body) not in (CONFIG_STRUCT.size, CONFIG_STRUCT.size + DP_STRUCT.size):
            raise MalformedMessage(f"ROUND_CONFIG body is {CONFIG_STRUCT.size} bytes "
                                   f"({CONFIG_STRUCT.size + DP_STRUCT.size} with DP), got {len(body)}")
        (dim, mask_bits, frac_bits, security, flags, threshold, neighbors, max_clients, reserved,
         clip_q, max_weight) = CONFIG_STRUCT.unpack(body[:CONFIG_STRUCT.size])
        if reserved or flags & ~KNOWN_FLAGS:
            raise MalformedMessage("reserved bits set in ROUND_CONFIG")
        if bool(flags & FLAG_DP) != (len(body) > CONFIG_STRUCT.size):
            raise MalformedMessage("ROUND_CONFIG: the DP flag and the DP record come together")
        dp = DpConfig.decode(body[CONFIG_STRUCT.size:]) if flags & FLAG_DP else None
        return cls(dim=dim, threshold=threshold, max_clients=max_clients, mask_bits=mask_bits,
                   frac_bits=frac_bits, clip_q=clip_q, max_weight=max_weight, neighbors=neighbors,
                   security=security, threshold_override=bool(flags & FLAG_THRESHOLD_OVERRIDE),
                   key_reuse=bool(flags & FLAG_KEY_REUSE), new_graph=bool(flags & FLAG_NEW_GRAPH), dp=dp)

    def digest(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()


def minimum_threshold(group: int, security: int = ACTIVE) -> int:
    """The smallest threshold t > 2g/3 (active security) for a sharing group of `group`; with
    SEMI_HONEST the old t > g/2 bound, which agents refuse (kept to show what they refuse)."""
    if security == ACTIVE:
        return 2 * group // 3 + 1
    return max(2, group // 2 + 1)


def check_rules(config: RoundConfig) -> None:
    """What every agent refuses whatever its floor, and so what a server refuses to announce:
    semi-honest security, the threshold-override flag, and t <= 2g/3 of the largest group the
    configuration allows (g from max_clients and the neighbour count)."""
    if config.security != ACTIVE:
        raise SemiHonestRefused(f"security {config.security} (semi-honest): agents take part with active "
                                "security only")
    if config.threshold_override:
        raise ThresholdOverrideRefused("the threshold-override flag is set: agents never lower the threshold rule")
    group = group_size(config.max_clients, config.neighbors)
    if config.threshold < minimum_threshold(group):
        raise ThresholdBelowFloor(f"threshold {config.threshold} for groups of up to {group}: active security "
                                  f"needs t > 2g/3 (at least {minimum_threshold(group)})")


@dataclass(frozen=True)
class SecurityFloor:
    """The least protection an agent takes part with, fixed when it is provisioned and never taken
    from the round (docs/protocol.md 2.2, 2.4): sharing groups of at least `min_group` members
    (thresholds above 2g/3 of the group it actually sees), and SecAgg+ graphs of at least
    `min_neighbors` neighbours. An agent given no floor gets these defaults."""
    min_group: int = 5
    min_neighbors: int = 4

    def __post_init__(self):
        _int("min_group", self.min_group, 3, 0xFFFF)
        _int("min_neighbors", self.min_neighbors, 2, 0xFFFF)

    def check_config(self, config: RoundConfig) -> None:
        """ROUND_CONFIG: the protocol rules, the neighbour count, and the largest group possible."""
        check_rules(config)
        if config.neighbors and config.neighbors < self.min_neighbors:
            raise NeighborsBelowFloor(f"{config.neighbors} neighbours, this agent takes part with at least "
                                      f"{self.min_neighbors}")
        self.check_group(config.threshold, group_size(config.max_clients, config.neighbors))

    def check_group(self, threshold: int, group: int) -> None:
        """The sharing group actually announced (from the roster, or the key epoch's graph)."""
        if group < self.min_group:
            raise GroupBelowFloor(f"sharing group of {group}, this agent takes part in groups of at least "
                                  f"{self.min_group}")
        if threshold < minimum_threshold(group):
            raise ThresholdBelowFloor(f"threshold {threshold} for a group of {group}: active security needs "
                                      f"t > 2g/3 (at least {minimum_threshold(group)})")


def log2_ceil(n: int) -> int:
    return max(1, math.ceil(math.log2(n)))
