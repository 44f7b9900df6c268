"""Hardware profiles: one YAML file per board, validated on load, detected from the running system.

A profile decides what an agent does on its board: which inference runtime and model variant it
runs, how wide its secure-aggregation masks are (the gateway groups agents into cohorts by
(model variant, mask bits) because masks only cancel inside one modulus), how long it may train,
and how it attests.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import yaml

PROFILE_DIR = Path(__file__).resolve().parent

RUNTIMES = ("onnxruntime", "tflite", "micropython")
MODEL_VARIANTS = ("cnn-lstm", "micro")
MASK_BITS = (32, 64)
ATTESTATION = ("tpm-required", "device-key")

_TOP_KEYS = {"name", "match", "architecture", "ram_mb", "runtime", "model_variant", "mask_bits",
             "training", "adversarial_training", "attestation", "payload_limit_bytes"}
_TRAINING_KEYS = {"epochs", "batch_size", "time_cap_s"}
_MATCH_KEYS = {"device_tree", "tegra_release", "machine"}


class ProfileError(ValueError):
    """A profile file is missing, unreadable or has a bad key; the message names the key."""


@dataclass(frozen=True)
class TrainingBudget:
    epochs: int
    batch_size: int
    time_cap_s: float


@dataclass(frozen=True)
class Profile:
    name: str
    architecture: str
    ram_mb: float
    runtime: str
    model_variant: str
    mask_bits: int
    training: TrainingBudget
    adversarial_training: bool
    attestation: str
    payload_limit_bytes: int
    match_device_tree: tuple[str, ...] = ()
    match_tegra_release: tuple[str, ...] = ()
    match_machine: tuple[str, ...] = ()

    @property
    def cohort(self) -> tuple[str, int]:
        """Agents aggregate together only inside one (model variant, mask bits) cohort."""
        return (self.model_variant, self.mask_bits)


def _int(doc: dict, key: str, where: str, minimum: int = 1) -> int:
    value = doc.get(key)
    # bool is an int in Python: reject it explicitly so `epochs: yes` is an error.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ProfileError(f"{where}: key '{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def _number(doc: dict, key: str, where: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ProfileError(f"{where}: key '{key}' must be a positive number, got {value!r}")
    return float(value)


def _choice(doc: dict, key: str, where: str, allowed: tuple) -> object:
    value = doc.get(key)
    if isinstance(value, bool) or value not in allowed:
        raise ProfileError(f"{where}: key '{key}' must be one of {list(allowed)}, got {value!r}")
    return value


def _strings(doc: dict, key: str, where: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProfileError(f"{where}: key '{key}' must be a list of strings, got {value!r}")
    return tuple(value)


def parse_profile(doc: object, where: str = "profile") -> Profile:
    """Validate a decoded YAML document and build a Profile; every error names the bad key."""
    if not isinstance(doc, dict):
        raise ProfileError(f"{where}: a profile is a mapping, got {type(doc).__name__}")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise ProfileError(f"{where}: unknown key '{sorted(map(str, unknown))[0]}'")
    missing = _TOP_KEYS - set(doc) - {"match"}
    if missing:
        raise ProfileError(f"{where}: missing key '{sorted(missing)[0]}'")
    for key in ("name", "architecture"):
        if not isinstance(doc[key], str) or not doc[key]:
            raise ProfileError(f"{where}: key '{key}' must be a non-empty string, got {doc[key]!r}")
    training = doc["training"]
    if not isinstance(training, dict):
        raise ProfileError(f"{where}: key 'training' must be a mapping")
    bad = (set(training) - _TRAINING_KEYS) or (_TRAINING_KEYS - set(training))
    if bad:
        raise ProfileError(f"{where}: key 'training.{sorted(map(str, bad))[0]}' is unknown or missing")
    match = doc.get("match", {}) or {}
    if not isinstance(match, dict) or set(match) - _MATCH_KEYS:
        raise ProfileError(f"{where}: key 'match' must map some of {sorted(_MATCH_KEYS)} to lists")
    if not isinstance(doc["adversarial_training"], bool):
        raise ProfileError(f"{where}: key 'adversarial_training' must be true or false")
    return Profile(
        name=doc["name"],
        architecture=doc["architecture"],
        ram_mb=_number(doc, "ram_mb", where),
        runtime=_choice(doc, "runtime", where, RUNTIMES),
        model_variant=_choice(doc, "model_variant", where, MODEL_VARIANTS),
        mask_bits=_choice(doc, "mask_bits", where, MASK_BITS),
        training=TrainingBudget(
            epochs=_int(training, "epochs", f"{where}: training"),
            batch_size=_int(training, "batch_size", f"{where}: training"),
            time_cap_s=_number(training, "time_cap_s", f"{where}: training"),
        ),
        adversarial_training=doc["adversarial_training"],
        attestation=_choice(doc, "attestation", where, ATTESTATION),
        payload_limit_bytes=_int(doc, "payload_limit_bytes", where, minimum=1024),
        match_device_tree=_strings(match, "device_tree", f"{where}: match"),
        match_tegra_release=_strings(match, "tegra_release", f"{where}: match"),
        match_machine=_strings(match, "machine", f"{where}: match"),
    )


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """Load a shipped profile by name (`raspberry-pi-4`) or any profile file by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ProfileError(f"no profile '{name_or_path}'; shipped profiles: {', '.join(available_profiles())}")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, RecursionError) as exc:
        raise ProfileError(f"{path.name}: not valid YAML: {exc}") from exc
    return parse_profile(doc, where=path.name)


def _read_text(path: Path) -> str:
    try:
        # The device-tree model string ends with a NUL byte.
        return path.read_bytes().decode("utf-8", "replace").strip("\x00\n ")
    except OSError:
        return ""


def detect_profile(root: str | os.PathLike = "/", machine: str | None = None) -> Profile:
    """Pick the shipped profile that matches this system.

    Order: the device-tree model string (Raspberry Pi, Jetson), then /etc/nv_tegra_release
    (Jetsons whose device tree is unhelpful), then the machine from uname. `root` lets tests
    point at a fake filesystem.
    """
    root = Path(root)
    model = _read_text(root / "proc/device-tree/model")
    tegra = _read_text(root / "etc/nv_tegra_release")
    machine = (machine if machine is not None else platform.machine()).lower()
    profiles = [load_profile(name) for name in available_profiles()]
    if model:
        # Longest pattern first so "Raspberry Pi Compute Module 4" beats a shorter prefix.
        candidates = sorted(((pat, p) for p in profiles for pat in p.match_device_tree),
                            key=lambda item: -len(item[0]))
        for pattern, profile in candidates:
            if pattern in model:
                return profile
    if tegra:
        for profile in profiles:
            if any(tegra.startswith(f"# {rel}") or rel in tegra.split(",")[0] for rel in profile.match_tegra_release):
                return profile
    for profile in profiles:
        if machine in profile.match_machine:
            return profile
    raise ProfileError(f"no profile matches this system (model={model!r}, tegra={tegra[:40]!r}, "
                       f"machine={machine!r}); pass --profile with one of: {', '.join(available_profiles())}")


def resolve_profile(override: str | None = None, root: str | os.PathLike = "/") -> Profile:
    """The profile named by a flag or config if given, else the detected one."""
    return load_profile(override) if override else detect_profile(root)
