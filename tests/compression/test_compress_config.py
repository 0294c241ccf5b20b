"""CompressionConfig: validation messages, JSON round trip, derived properties."""

from __future__ import annotations

import json

import pytest

from llmopt.compression import CompressionConfig
from llmopt.errors import LlmoptError


@pytest.mark.parametrize(
    ("kwargs", "value", "allowed"),
    [
        ({"sparsity": 1.0}, "1.0", "[0, 1)"),
        ({"sparsity": -0.1}, "-0.1", "[0, 1)"),
        ({"bits": 1}, "1", "2..8"),
        ({"bits": 9}, "9", "2..8"),
        ({"rank": 0}, "0", ">= 1"),
        ({"sparsity_pattern": "4:2"}, "4:2", "0 < N < M"),
        ({"sparsity_pattern": "2-4"}, "2-4", "N:M"),
        ({"group_size": 0}, "0", "positive"),
        ({"calibration_samples": 0}, "0", ">= 1"),
        ({"sparsity_method": "random"}, "random", "magnitude, wanda"),
        ({"sparsity_scope": "model"}, "model", "layer, global"),
        ({"bits": 8, "int8_dynamic": True}, "bits=8", "pick one"),
        ({"sparsity_method": "wanda", "sparsity_scope": "global"}, "global", "magnitude"),
    ],
)
def test_bad_values_name_the_value_and_the_allowed_range(kwargs, value, allowed):
    with pytest.raises(LlmoptError) as info:
        CompressionConfig(**kwargs)
    assert isinstance(info.value, ValueError)
    assert value in str(info.value) and allowed in str(info.value)


def test_json_round_trip_and_unknown_keys():
    config = CompressionConfig(sparsity=0.5, sparsity_method="wanda", bits=4, group_size=64)
    data = json.loads(json.dumps(config.to_dict()))
    assert CompressionConfig.from_dict(data) == config
    with pytest.raises(LlmoptError, match="unknown compression settings"):
        CompressionConfig.from_dict({**data, "bitz": 3})


def test_pattern_fixes_the_effective_sparsity():
    assert CompressionConfig(sparsity_pattern="2:4", sparsity=0.9).effective_sparsity == 0.5
    assert CompressionConfig(sparsity_pattern="4:8").effective_sparsity == 0.5
    assert CompressionConfig(sparsity_pattern="1:4").effective_sparsity == 0.75
    assert CompressionConfig(sparsity=0.3).effective_sparsity == 0.3


def test_is_identity_only_when_nothing_changes():
    assert CompressionConfig().is_identity
    assert CompressionConfig(sparsity_method="wanda", group_size=32).is_identity
    for kwargs in [{"sparsity": 0.1}, {"sparsity_pattern": "2:4"}, {"bits": 8}, {"rank": 4}]:
        assert not CompressionConfig(**kwargs).is_identity
    assert not CompressionConfig(int8_dynamic=True).is_identity


def test_config_is_frozen_and_sparsity_a_float():
    config = CompressionConfig(sparsity=0)
    assert isinstance(config.sparsity, float)
    with pytest.raises(AttributeError):
        config.bits = 4


def test_describe_names_every_active_knob():
    assert CompressionConfig().describe() == "no compression"
    text = CompressionConfig(sparsity=0.5, bits=4, group_size=64, rank=8).describe()
    assert text == "50% magnitude pruning · 4-bit weights (group 64) · rank 8"
    assert CompressionConfig(sparsity_pattern="2:4").describe() == "50% 2:4 magnitude pruning"
    assert CompressionConfig(int8_dynamic=True).describe() == "int8 kernels"
