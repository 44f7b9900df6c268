"""The typed configuration loader (ztfl.config) and the three files built on it: agent.yaml,
gateway.yaml, cloud.yaml. A bad file is refused when it is read, with one line naming the file,
the key path and what is wrong; every config the project writes or ships loads."""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ztfl.agent.config import AgentConfig, AgentConfigError
from ztfl.attestation.provision import Device, Fleet, provision
from ztfl.config import ConfigError
from ztfl.demo import epochs_and_privacy
from ztfl.fednet.transport import BrokerConfig
from ztfl.gateway.cloud_config import CloudConfig
from ztfl.gateway.config import GatewayConfig, PrivacySpec
from ztfl.protocol.epochs import EpochPolicy

REPO = Path(__file__).resolve().parents[1]
PRIVACY = {"epsilon": 8.0, "delta": 1.0e-5, "min_survivors": 3, "clip_norm": 1.0}


def refusal(cls, tmp_path: Path, text: str, name: str = "") -> str:
    path = tmp_path / (name or cls.FILE)
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        cls.load(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message[len(str(path)) + 2:]


# --- what a refusal says ----------------------------------------------------------------------
def test_a_misspelt_key_is_named_with_the_closest_valid_key(tmp_path):
    assert refusal(GatewayConfig, tmp_path, "roundz: 3\n") == "roundz: unknown key; did you mean 'rounds'?"
    assert refusal(AgentConfig, tmp_path, "agent_id: a\nbroker: {urll: 'mqtt://h'}\n") == \
        "broker.urll: unknown key; did you mean 'url'?"


def test_an_unknown_key_without_a_close_one_lists_the_valid_keys(tmp_path):
    said = refusal(GatewayConfig, tmp_path, "parent: {zzzz: 1}\n")
    assert said == "parent.zzzz: unknown key; valid keys: mode, wait_s"


def test_a_value_of_the_wrong_type_is_named_with_what_was_expected(tmp_path):
    text = "agent_id: pi-01\nbroker: {keepalive_s: '15x'}\n"
    assert refusal(AgentConfig, tmp_path, text) == "broker.keepalive_s: expected an integer, got '15x'"
    assert refusal(GatewayConfig, tmp_path, "require_attestation: 'yes please'\n") == \
        "require_attestation: expected true or false, got 'yes please'"
    assert refusal(GatewayConfig, tmp_path, "rounds: 2.5\n") == "rounds: expected an integer, got 2.5"
    assert refusal(GatewayConfig, tmp_path, "broker: [1, 2]\n") == "broker: expected a mapping of keys, got a list"


def test_an_exponent_yaml_reads_as_text_gets_a_hint(tmp_path):
    doc = {"privacy": {**PRIVACY, "delta": "1e-5"}}
    said = refusal(GatewayConfig, tmp_path, yaml.safe_dump(doc))
    assert said.startswith("privacy.delta: expected a number, got '1e-5'") and "write 1.0e-5" in said


def test_values_out_of_range_or_choices_are_refused_at_load_time(tmp_path):
    assert refusal(GatewayConfig, tmp_path, "rounds: 0\n") == "rounds: must be at least 1, got 0"
    assert refusal(GatewayConfig, tmp_path, "min_cohort: 1\n") == "min_cohort: must be at least 2, got 1"
    assert refusal(GatewayConfig, tmp_path, "threshold_fraction: 1.5\n") == \
        "threshold_fraction: must be at most 1, got 1.5"
    assert refusal(GatewayConfig, tmp_path, "heartbeat_s: .nan\n") == "heartbeat_s: expected a finite number, got nan"
    assert refusal(GatewayConfig, tmp_path, "model_size: smal\n") == \
        "model_size: 'smal' is not one of small, default; did you mean 'small'?"
    assert refusal(AgentConfig, tmp_path, "agent_id: pi 01\n") == \
        "agent_id: invalid agent id 'pi 01': 1-64 of [A-Za-z0-9_.-], starting alphanumeric"


def test_errors_in_nested_sections_name_the_whole_key_path(tmp_path):
    doc = {"privacy": PRIVACY, "cohorts": {"micro-32": {"privacy": {**PRIVACY, "mode": "stp"}}}}
    assert refusal(GatewayConfig, tmp_path, yaml.safe_dump(doc)) == \
        "cohorts.micro-32.privacy.mode: 'stp' is not one of stop, warn; did you mean 'stop'?"
    assert refusal(GatewayConfig, tmp_path, "privacy: {epsilon: 1.0}\n") == "privacy.delta: required key missing"
    assert refusal(GatewayConfig, tmp_path, yaml.safe_dump({"privacy": {**PRIVACY, "delta": 1}})) == \
        "privacy.delta: must be below 1, got 1"
    assert refusal(GatewayConfig, tmp_path, "deadlines_s: {masked: 0}\n") == "deadlines_s.masked: must be above 0, got 0"
    assert refusal(GatewayConfig, tmp_path, "deadlines_s: {unmaks: 3}\n") == \
        "deadlines_s.unmaks: unknown key; did you mean 'unmask'?"
    # a section's own check (EpochPolicy.__post_init__) is placed at the section's path
    assert refusal(AgentConfig, tmp_path, "agent_id: a\nkey_epoch: {max_rounds: 0}\n") == \
        "key_epoch: max_rounds must be an int >= 1, got 0"
    assert refusal(AgentConfig, tmp_path, "agent_id: a\nbroker: {url: 'mqtt://h:1883x'}\n") == \
        "broker.url: Port could not be cast to integer value as '1883x'"
    assert refusal(AgentConfig, tmp_path, "agent_id: a\ntpm: {}\n") == "tpm.tcti: required key missing"


def test_a_check_across_keys_names_the_key_to_change(tmp_path):
    text = "max_attempts: 300\ncohorts: {micro-32: {key_epoch: {max_rounds: 4}}}\n"
    said = refusal(GatewayConfig, tmp_path, text)
    assert said.startswith("max_attempts: must be at most 256 when cohorts.micro-32.key_epoch is set"), said


def test_yaml_syntax_errors_name_the_file_line_and_column(tmp_path):
    said = refusal(GatewayConfig, tmp_path, "federation: plant\nrounds: [3\n")
    assert said.startswith("line 3, column 1: YAML syntax error: "), said
    assert refusal(GatewayConfig, tmp_path, "rounds: 3\nrounds: 4\n") == \
        "line 2, column 1: YAML syntax error: key 'rounds' given twice"
    # values PyYAML cannot build used to escape as a bare ValueError or AttributeError
    assert refusal(GatewayConfig, tmp_path, "seed: 2001-02-30\n").startswith("line 1, column 7: YAML syntax error: ")
    assert refusal(GatewayConfig, tmp_path, "seed: !!timestamp 99999-01-01\n").startswith("line 1, column 7: ")
    assert refusal(GatewayConfig, tmp_path, "a: " + "[" * 5000) == "YAML nested too deeply"


def test_a_missing_file_and_a_non_mapping_document_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no-such.yaml: cannot read: No such file"):
        GatewayConfig.load(tmp_path / "no-such.yaml")
    assert refusal(AgentConfig, tmp_path, "- a\n- b\n") == "expected a mapping of keys, got a list"
    assert refusal(AgentConfig, tmp_path, "") == "agent_id: required key missing"


def test_one_error_class_under_every_role_name():
    from ztfl.gateway import config as gateway_config
    assert issubclass(ConfigError, ValueError)
    assert AgentConfigError is ConfigError and gateway_config.ConfigError is ConfigError


def test_the_cli_refuses_a_bad_file_with_one_line_and_exit_code_2(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("privacy: {epsilon: 1.0, delta: 1.0e-5, min_survivors: 3, clip_norm: 1.0, mode: stpo}\n")
    proc = subprocess.run([sys.executable, "-m", "ztfl.cli", "gateway", "--config", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == (f"ztfl gateway: {path}: privacy.mode: 'stpo' is not one of stop, warn; "
                                   f"did you mean 'stop'?")


# --- what loads, and how ----------------------------------------------------------------------
def test_the_example_configs_load_into_frozen_sections():
    agent = AgentConfig.load(REPO / "deploy" / "agent.example.yaml")
    gateway = GatewayConfig.load(REPO / "deploy" / "gateway.example.yaml")
    assert agent.agent_id == "line3-rpi4-01" and agent.broker.host_port == ("fog1.plant.local", 8883, True)
    assert agent.partition().path == "/var/lib/ztfl/agent/records.csv" and agent.epoch_policy() == EpochPolicy()
    assert gateway.key_epoch == EpochPolicy(max_rounds=4, max_seconds=3600) and gateway.privacy is None
    assert gateway.epoch_policy("micro-32") == gateway.key_epoch and gateway.http_port == 9108
    with pytest.raises(dataclasses.FrozenInstanceError):
        gateway.rounds = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        gateway.broker.url = "mqtt://elsewhere"
    assert dataclasses.replace(gateway, rounds=3).rounds == 3 and gateway.rounds == 100


def test_deadlines_fill_in_defaults_and_keep_the_numbers_as_written():
    """The announcement carries them as JSON: 600 stays 600, not 600.0, in the stages' order."""
    cfg = GatewayConfig.from_dict({"deadlines_s": {"masked": 600, "attest": 2}})
    assert json.dumps(cfg.deadlines_s.by_stage()) == \
        '{"attest": 2, "advertise": 8.0, "share": 8.0, "masked": 600, "consistency": 8.0, "unmask": 8.0}'
    assert GatewayConfig.from_dict({"broker": None}).broker == BrokerConfig()     # an empty section: defaults


def test_cohort_overrides_inherit_or_turn_settings_off():
    args = argparse.Namespace(key_epoch_rounds=4, dp_epsilon=8.0, dp_min_survivors=3, dp_clip=1.0,
                              firmware_classic=True)
    cfg = GatewayConfig.from_dict(yaml.safe_load(yaml.safe_dump(epochs_and_privacy(args))))   # as the demo writes
    assert cfg.privacy_spec() == PrivacySpec(epsilon=8.0, delta=1e-5, min_survivors=3, clip_norm=1.0)
    assert cfg.privacy_spec("micro-32") is None and cfg.epoch_policy("micro-32") is None
    assert cfg.privacy_spec("cnn-lstm-64") == cfg.privacy and cfg.epoch_policy("cnn-lstm-64").max_rounds == 4
    assert cfg.uses_privacy()
    assert not GatewayConfig.from_dict({}).uses_privacy()
    assert GatewayConfig.from_dict({"cohorts": {"micro-32": {"privacy": None}}}).uses_privacy()   # as before


def test_provisioned_configs_load_and_still_lack_only_their_data(tmp_path):
    provision(Fleet("plant", "fog1", [Device("pi-01", "raspberry-pi-4")]), tmp_path)
    agent = AgentConfig.load(tmp_path / "devices" / "pi-01" / "agent.yaml")
    gateway = GatewayConfig.load(tmp_path / "gateway" / "gateway.yaml")
    assert agent.broker.client_id == "agent-pi-01" and agent.broker.host_port[2] is True
    assert gateway.require_attestation and gateway.broker.cert_file.endswith("fog1.pem")
    for cfg in (agent, gateway):
        with pytest.raises(ConfigError, match=r"^data: missing key 'path'$"):
            cfg.partition()


def test_cloud_config_lists_its_gateways():
    cfg = CloudConfig.from_dict({"gateways": ["fog1", "fog2"], "broker": {"url": "mqtt://127.0.0.1:1884"}})
    assert cfg.gateways == ("fog1", "fog2") and cfg.wait_s == 60.0
    for doc, said in [({}, "gateways: required key missing"), ({"gateways": []}, "gateways: must list at least 1"),
                      ({"gateways": ["fog1", 2]}, "gateways[1]: expected a string, got 2")]:
        with pytest.raises(ConfigError, match=r"^cloud\.yaml: " + said.replace("[", r"\[").replace("]", r"\]")):
            CloudConfig.from_dict(doc)


def test_model_sizes_match_the_models():
    from ztfl.agent import config as agent_config
    from ztfl.gateway import config as gateway_config
    from ztfl.models.spec import SIZES
    assert agent_config.MODEL_SIZES == gateway_config.MODEL_SIZES == SIZES


def test_loading_configs_imports_no_torch():
    script = f"""
import sys
from ztfl.agent.config import AgentConfig
from ztfl.gateway.config import GatewayConfig
from ztfl.gateway.cloud_config import CloudConfig
AgentConfig.load({str(REPO / "deploy" / "agent.example.yaml")!r})
GatewayConfig.load({str(REPO / "deploy" / "gateway.example.yaml")!r})
CloudConfig.from_dict({{"gateways": ["fog1"]}})
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
