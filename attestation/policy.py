"""The gateway's attestation policy: which PCRs, which hash, which values per hardware
profile, whether identities without a TPM are admitted, and on boards with measured boot and
IMA the boot policy (attestation.boot_policy) and the signed runtime policy
(attestation.runtime_policy) the logs are judged by."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ztfl.attestation.boot_policy import BootPolicy
from ztfl.attestation.errors import PolicyError
from ztfl.attestation.ima import IMA_PCR
from ztfl.attestation.runtime_policy import RuntimePolicy, load_signed_policy
from ztfl.attestation.tpm_wire import DIGEST_SIZES, HASH_ALGS


@dataclass(frozen=True)
class AttestationPolicy:
    """hash_alg: PCR bank and signature hash every quote must use.
    pcrs: PCR indices every quote must cover (it may cover more).
    allowlist: profile -> PCR index -> allowed digests; every selected PCR must be listed, except
    those the logs are replayed into (boot.pcrs, and PCR 10 with a runtime policy).
    boot: judge the TCG boot event log; its PCRs must be selected and its replay must match them.
    runtime: judge the IMA list (PCR 10, which must be selected) entry by entry.
    allow_software_rooted: admit devices with an Ed25519 device key instead of a TPM, and only
    for the profiles in software_rooted_profiles when that is not empty.
    nonce_ttl_s: how long an issued nonce stays valid."""

    hash_alg: str = "sha256"
    pcrs: tuple[int, ...] = (23,)
    allowlist: Mapping[str, Mapping[int, frozenset[bytes]]] = field(default_factory=dict)
    allow_software_rooted: bool = False
    software_rooted_profiles: frozenset[str] = frozenset()
    nonce_ttl_s: float = 120.0
    boot: BootPolicy | None = None
    runtime: RuntimePolicy | None = None

    def __post_init__(self):
        if self.hash_alg not in HASH_ALGS:
            raise PolicyError(f"hash_alg: {self.hash_alg!r} is not one of {sorted(HASH_ALGS)}")
        if not self.pcrs or any(not isinstance(p, int) or isinstance(p, bool) or not 0 <= p < 24
                                for p in self.pcrs):
            raise PolicyError(f"pcrs: {self.pcrs!r} must be a non-empty list of indices 0..23")
        object.__setattr__(self, "pcrs", tuple(sorted(set(self.pcrs))))
        if not isinstance(self.allow_software_rooted, bool):
            raise PolicyError("allow_software_rooted: must be true or false")
        if isinstance(self.nonce_ttl_s, bool) or not isinstance(self.nonce_ttl_s, (int, float)) \
                or self.nonce_ttl_s <= 0:
            raise PolicyError(f"nonce_ttl_s: {self.nonce_ttl_s!r} must be a positive number")
        if self.boot is not None and not set(self.boot.pcrs) <= set(self.pcrs):
            raise PolicyError(f"measured_boot.pcrs: {list(self.boot.pcrs)} must all be in pcrs {list(self.pcrs)}")
        if self.runtime is not None and IMA_PCR not in self.pcrs:
            raise PolicyError(f"pcrs: a runtime policy needs PCR {IMA_PCR} in the quote")
        size = DIGEST_SIZES[HASH_ALGS[self.hash_alg]]
        for profile, values in self.allowlist.items():
            missing = set(self.value_checked_pcrs) - set(values)
            if missing:
                raise PolicyError(f"allowlist.{profile}: no allowed values for PCR {sorted(missing)}")
            for pcr, digests in values.items():
                for d in digests:
                    if len(d) != size:
                        raise PolicyError(f"allowlist.{profile}.{pcr}: a {len(d)}-byte value where "
                                          f"{self.hash_alg} gives {size}")

    @property
    def replayed_pcrs(self) -> frozenset[int]:
        """PCRs judged through a log rather than by value."""
        return frozenset((self.boot.pcrs if self.boot else ()) + ((IMA_PCR,) if self.runtime else ()))

    @property
    def value_checked_pcrs(self) -> tuple[int, ...]:
        return tuple(p for p in self.pcrs if p not in self.replayed_pcrs)

    @property
    def hash_alg_id(self) -> int:
        return HASH_ALGS[self.hash_alg]

    def software_rooted_allowed(self, profile: str) -> bool:
        return self.allow_software_rooted and (not self.software_rooted_profiles
                                               or profile in self.software_rooted_profiles)

    @classmethod
    def from_mapping(cls, data: Mapping) -> "AttestationPolicy":
        """From a parsed YAML/JSON mapping (yaml.safe_load), with hex strings for digests:

            hash_alg: sha256
            pcrs: [23]
            allow_software_rooted: true
            software_rooted_profiles: [esp32, esp32-s3]
            nonce_ttl_s: 120
            allowlist:
              raspberry-pi-4: {23: ["9f86d0..."]}
            measured_boot: {...}        # optional: attestation.boot_policy.BootPolicy.from_mapping
            runtime_policy: {file: /etc/ztfl/runtime-policy.json, key: /etc/ztfl/release-key.pem}
                                        # optional: read and its signature checked here
        """
        if not isinstance(data, Mapping):
            raise PolicyError("policy: expected a mapping")
        known = {"hash_alg", "pcrs", "allowlist", "allow_software_rooted", "software_rooted_profiles",
                 "nonce_ttl_s", "measured_boot", "runtime_policy"}
        unknown = set(data) - known
        if unknown:
            raise PolicyError(f"{sorted(unknown)[0]}: unknown policy key")
        allowlist: dict[str, dict[int, frozenset[bytes]]] = {}
        raw_allow = data.get("allowlist", {}) or {}
        if not isinstance(raw_allow, Mapping):
            raise PolicyError("allowlist: expected a mapping of profile -> PCR -> values")
        for profile, per_pcr in raw_allow.items():
            if not isinstance(per_pcr, Mapping):
                raise PolicyError(f"allowlist.{profile}: expected a mapping of PCR -> values")
            allowlist[str(profile)] = {}
            for pcr, values in per_pcr.items():
                try:
                    index = int(pcr)
                    digests = frozenset(bytes.fromhex(v) for v in values)
                except (TypeError, ValueError):
                    raise PolicyError(f"allowlist.{profile}.{pcr}: expected a list of hex digests") from None
                allowlist[str(profile)][index] = digests
        pcrs = data.get("pcrs", [23])
        if not isinstance(pcrs, (list, tuple)):
            raise PolicyError("pcrs: expected a list of PCR indices")
        profiles = data.get("software_rooted_profiles", []) or []
        if not isinstance(profiles, (list, tuple)):
            raise PolicyError("software_rooted_profiles: expected a list of profile names")
        return cls(hash_alg=data.get("hash_alg", "sha256"), pcrs=tuple(pcrs), allowlist=allowlist,
                   allow_software_rooted=data.get("allow_software_rooted", False),
                   software_rooted_profiles=frozenset(map(str, profiles)),
                   nonce_ttl_s=data.get("nonce_ttl_s", 120.0),
                   boot=BootPolicy.from_mapping(data["measured_boot"]) if data.get("measured_boot") else None,
                   runtime=_runtime_policy(data["runtime_policy"]) if data.get("runtime_policy") else None)


def _runtime_policy(section) -> RuntimePolicy:
    if not isinstance(section, Mapping) or set(section) != {"file", "key"} \
            or not all(isinstance(v, str) and v for v in section.values()):
        raise PolicyError("runtime_policy: expected {file: signed policy path, key: public key path}")
    return load_signed_policy(section["file"], section["key"])
