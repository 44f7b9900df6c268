"""Hardware profiles: every shipped board loads, detection reads the right files, bad keys are named."""
from __future__ import annotations

import pytest
import yaml

from ztfl.hw_profiles import (PROFILE_DIR, ProfileError, available_profiles, detect_profile, load_profile,
                         parse_profile, resolve_profile)

BOARDS = ["raspberry-pi-3", "raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-orin-nano",
          "esp32", "esp32-s3", "x86-64-gateway"]


def test_every_board_has_a_valid_profile():
    assert available_profiles() == sorted(BOARDS)
    for name in BOARDS:
        profile = load_profile(name)
        assert profile.name == name
        assert profile.mask_bits in (32, 64)


def test_microcontrollers_run_the_micro_model_with_32_bit_masks_and_device_keys():
    for name in ("esp32", "esp32-s3"):
        p = load_profile(name)
        assert (p.runtime, p.model_variant, p.mask_bits, p.attestation) == \
            ("micropython", "micro", 32, "device-key")
    assert load_profile("raspberry-pi-3").cohort == ("cnn-lstm", 32)
    assert load_profile("raspberry-pi-4").cohort == ("cnn-lstm", 64)


def _fake_root(tmp_path, model=None, tegra=None):
    if model is not None:
        (tmp_path / "proc/device-tree").mkdir(parents=True)
        (tmp_path / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
    if tegra is not None:
        (tmp_path / "etc").mkdir(parents=True)
        (tmp_path / "etc/nv_tegra_release").write_text(tegra)
    return tmp_path


@pytest.mark.parametrize("model,expected", [
    ("Raspberry Pi 4 Model B Rev 1.4", "raspberry-pi-4"),
    ("Raspberry Pi 5 Model B Rev 1.0", "raspberry-pi-5"),
    ("Raspberry Pi 3 Model B Plus Rev 1.3", "raspberry-pi-3"),
    ("NVIDIA Jetson Orin Nano Developer Kit", "jetson-orin-nano"),
    ("NVIDIA Jetson Nano Developer Kit", "jetson-nano"),
])
def test_detection_from_device_tree(tmp_path, model, expected):
    assert detect_profile(_fake_root(tmp_path, model=model), machine="aarch64").name == expected


def test_detection_from_tegra_release_when_device_tree_is_silent(tmp_path):
    root = _fake_root(tmp_path, tegra="# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic")
    assert detect_profile(root, machine="aarch64").name == "jetson-orin-nano"


def test_detection_falls_back_to_uname_and_fails_with_a_hint(tmp_path):
    assert detect_profile(tmp_path, machine="x86_64").name == "x86-64-gateway"
    with pytest.raises(ProfileError, match="--profile"):
        detect_profile(tmp_path, machine="riscv64")


def test_flag_overrides_detection(tmp_path):
    assert resolve_profile("esp32", root=_fake_root(tmp_path, model="Raspberry Pi 4 Model B")).name == "esp32"


@pytest.mark.parametrize("mutate,key", [
    (lambda d: d.update(mask_bits=48), "mask_bits"),
    (lambda d: d.update(mask_bits=True), "mask_bits"),
    (lambda d: d.update(runtime="tensorrt"), "runtime"),
    (lambda d: d["training"].update(epochs=0), "epochs"),
    (lambda d: d["training"].update(batch_size="64"), "batch_size"),
    (lambda d: d["training"].pop("time_cap_s"), "training.time_cap_s"),
    (lambda d: d.update(colour="red"), "colour"),
    (lambda d: d.pop("attestation"), "attestation"),
    (lambda d: d.update(adversarial_training="yes"), "adversarial_training"),
    (lambda d: d.update(payload_limit_bytes=-5), "payload_limit_bytes"),
])
def test_bad_key_is_named_in_the_error(tmp_path, mutate, key):
    doc = yaml.safe_load((PROFILE_DIR / "raspberry-pi-4.yaml").read_text())
    mutate(doc)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ProfileError, match=f"'{key}'"):
        load_profile(path)


def test_unknown_profile_name_lists_the_shipped_ones():
    with pytest.raises(ProfileError, match="raspberry-pi-4"):
        load_profile("commodore-64")
    with pytest.raises(ProfileError):
        parse_profile(["not", "a", "mapping"])
