"""Property-based fuzzing of the configuration files: gateway.yaml, agent.yaml and hardware
profiles. Any document, valid YAML or not, loads or raises the loader's typed error."""
from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzkit import decode_typed, inputs_for
from ztfl.bench.fuzz_targets import by_name

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TARGETS = by_name(["config"])
KEYS = ["federation", "gateway", "broker", "rounds", "min_agents", "deadlines_s", "agent_id", "profile", "data",
        "name", "architecture", "ram_mb", "runtime", "training", "match", "mask_bits", 1, 2.5, True, None]
values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 2**40) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=10)


@FAST
@given(st.data())
def test_config_bytes_load_or_raise_typed(data):
    target = data.draw(st.sampled_from(TARGETS), label="target")
    decode_typed(target, data.draw(inputs_for(target), label="input"))


@FAST
@given(st.sampled_from(TARGETS), st.dictionaries(st.sampled_from(KEYS), values, max_size=8))
def test_config_documents_with_any_keys_and_values_load_or_raise_typed(target, doc):
    decode_typed(target, yaml.safe_dump(doc).encode())


@settings(max_examples=3, deadline=None)
@given(st.sampled_from(TARGETS), st.integers(1_000, 1_500))
def test_deeply_nested_config_is_refused_typed(target, depth):
    out = decode_typed(target, b"a: " + b"[" * depth)
    assert isinstance(out, target.errors)
