"""A stored run read back as config, report and latency (what the Compress page redraws)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llmopt.compression.config import CompressionConfig
from llmopt.latency import LatencyStats
from llmopt.restore import run_config, run_latency, run_report

pytestmark = pytest.mark.smoke


def test_paired_latency_round_trips_through_its_stored_form():
    stats = {
        side: LatencyStats(median_ms=m, spread=0.1, samples_ms=(m, m + 1.0), texts=8)
        for side, m in (("baseline", 2.0), ("compressed", 1.5))
    }
    stored = {"method": "paired", **{side: s.to_dict() for side, s in stats.items()}}
    assert run_latency(SimpleNamespace(latency=stored)) == stats


@pytest.mark.parametrize("latency", [None, {}, {"method": "simulated"}])
def test_unpaired_latency_is_none(latency):
    assert run_latency(SimpleNamespace(latency=latency)) is None


def test_config_and_an_absent_report():
    config = CompressionConfig(sparsity=0.5, bits=4)
    run = SimpleNamespace(config=config.to_dict(), report=None)
    assert run_config(run) == config
    assert run_report(run).rows == []
