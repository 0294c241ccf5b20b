"""The control <-> config mapping lives once, in dashboard/controls.py, both directions."""

from __future__ import annotations

import pytest
import streamlit as st

from dashboard import compare, controls
from llmopt.compression import CompressionConfig

CONFIGS = [
    CompressionConfig(sparsity=0.5),
    CompressionConfig(sparsity=0.3, sparsity_method="wanda", calibration_samples=64),
    CompressionConfig(bits=4, group_size=64, quant_method="gptq", act_order=True),
    CompressionConfig(bits=3, asymmetric=True),
    CompressionConfig(rank=8),
    CompressionConfig(int8_dynamic=True, smooth_alpha=0.7),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.describe())
def test_controls_set_from_a_config_make_that_config(config):
    for key, value in controls.values_from_config(config.to_dict()).items():
        st.session_state[key] = value
    assert controls.config_from_state() == config


def test_the_compare_page_reads_the_same_mapping():
    """Compare's ``control_values`` carried its own copy of the mapping; it is now a call."""
    config = CONFIGS[2].to_dict()
    assert compare.control_values(config) == controls.values_from_config(config)
