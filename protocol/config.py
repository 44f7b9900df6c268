"""Round configuration: validation at configuration time and its 28-byte wire body.

Refused here, before any key is generated: thresholds outside the safe range for the security
model (t > g/2 semi-honest, t > 2g/3 active, unless overridden), and any setting where
max_clients x max_weight x clip_q could wrap the modulus 2^B.
"""
from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

from ztfl.protocol.errors import ConfigurationError, MalformedMessage

SEMI_HONEST = 0
ACTIVE = 1
FLAG_THRESHOLD_OVERRIDE = 0x01
FLAG_KEY_REUSE = 0x02          # docs/protocol.md 2.7: epoch secrets are never shared

CONFIG_STRUCT = struct.Struct("<IBBBBHHHHQI")  # 28 bytes
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


def check_threshold(threshold: int, group: int, security: int) -> None:
    if threshold < 2 or threshold > group:
        raise ConfigurationError(f"threshold {threshold} must be in 2..{group} (group size)")
    if security == ACTIVE and not 3 * threshold > 2 * group:
        raise ConfigurationError(
            f"active security needs t > 2g/3: t={threshold}, g={group} (minimum {2 * group // 3 + 1})")
    if security == SEMI_HONEST and not 2 * threshold > group:
        raise ConfigurationError(
            f"semi-honest security needs t > g/2: t={threshold}, g={group} (minimum {group // 2 + 1})")


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
    threshold_override: bool = False
    key_reuse: bool = False

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
        if not isinstance(self.key_reuse, bool):
            raise ConfigurationError("key_reuse must be a bool")
        _int("threshold", self.threshold, 1, 0xFFFF)
        group = group_size(self.max_clients, self.neighbors)
        if self.threshold_override:
            if not 1 <= self.threshold <= group:
                raise ConfigurationError(f"threshold {self.threshold} must be in 1..{group}")
        else:
            check_threshold(self.threshold, group, self.security)
        half = (1 << (self.mask_bits - 1)) - 1
        if self.max_clients * self.max_weight * self.clip_q > half:
            raise ConfigurationError(
                f"{self.max_clients} clients x weight {self.max_weight} x clip_q {self.clip_q} "
                f"can wrap a {self.mask_bits}-bit modulus: lower clip, frac_bits or weight, or use 64-bit masks")
        if self.max_clients * self.max_weight > half:
            raise ConfigurationError("the sum of weights can wrap the modulus")

    @classmethod
    def for_range(cls, dim: int, max_clients: int, threshold: int, clip: float = 8.0,
                  frac_bits: int = 16, **kw) -> "RoundConfig":
        """A configuration clipping updates to [-clip, clip] at `frac_bits` fractional bits."""
        return cls(dim=dim, max_clients=max_clients, threshold=threshold, frac_bits=frac_bits,
                   clip_q=int(round(clip * 2**frac_bits)), **kw)

    @property
    def words(self) -> int:
        """Words on the wire: the update plus the weight."""
        return self.dim + 1

    @property
    def word_bytes(self) -> int:
        return self.mask_bits // 8

    def encode(self) -> bytes:
        flags = (FLAG_THRESHOLD_OVERRIDE if self.threshold_override else 0) | \
            (FLAG_KEY_REUSE if self.key_reuse else 0)
        return CONFIG_STRUCT.pack(self.dim, self.mask_bits, self.frac_bits, self.security, flags,
                                  self.threshold, self.neighbors, self.max_clients, 0,
                                  self.clip_q, self.max_weight)

    @classmethod
    def decode(cls, body: bytes) -> "RoundConfig":
        if len(body) != CONFIG_STRUCT.size:
            raise MalformedMessage(f"ROUND_CONFIG body is {CONFIG_STRUCT.size} bytes, got {len(body)}")
        (dim, mask_bits, frac_bits, security, flags, threshold, neighbors, max_clients, reserved,
         clip_q, max_weight) = CONFIG_STRUCT.unpack(body)
        if reserved or flags & ~(FLAG_THRESHOLD_OVERRIDE | FLAG_KEY_REUSE):
            raise MalformedMessage("reserved bits set in ROUND_CONFIG")
        return cls(dim=dim, threshold=threshold, max_clients=max_clients, mask_bits=mask_bits,
                   frac_bits=frac_bits, clip_q=clip_q, max_weight=max_weight, neighbors=neighbors,
                   security=security, threshold_override=bool(flags & FLAG_THRESHOLD_OVERRIDE),
                   key_reuse=bool(flags & FLAG_KEY_REUSE))

    def digest(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()


def minimum_threshold(group: int, security: int = ACTIVE) -> int:
    """The smallest threshold the configuration check accepts for a group of `group`."""
    if security == ACTIVE:
        return 2 * group // 3 + 1
    return max(2, group // 2 + 1)


def log2_ceil(n: int) -> int:
    return max(1, math.ceil(math.log2(n)))
