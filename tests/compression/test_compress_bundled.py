"""The real bundled MiniLM model: Wanda 50% + 4-bit groups of 64 on a few test reviews."""

from __future__ import annotations

import pytest

import llmopt
from llmopt.compression import CompressionConfig, compress
from llmopt.models import dense_size_bytes


@pytest.mark.integration
def test_wanda_and_4_bit_groups_on_the_bundled_model(state_bytes):
    loaded = llmopt.load_model("bundled")
    test = llmopt.load_dataset("bundled", "test", limit=40)
    train = llmopt.load_dataset("bundled", "train")
    before = state_bytes(loaded.model)
    config = CompressionConfig(sparsity=0.5, sparsity_method="wanda", bits=4, group_size=64)
    compressed, report = compress(loaded, config, calibration=train)
    assert state_bytes(loaded.model) == before
    assert len(report.rows) == 36  # 6 layers x (q, k, v, attention out, FFN in, FFN out)
    assert all(r["sparsity"] == pytest.approx(0.5, abs=0.01) for r in report.rows)
    assert compressed.size_bytes < dense_size_bytes(loaded.model) / 1.5
    base = llmopt.evaluate(loaded, test)
    other = llmopt.evaluate(compressed, test)
    assert other.size_bytes == compressed.size_bytes < base.size_bytes
    assert llmopt.compare(base, other)["agreement"] >= 0.75
