"""A stored run read back as the objects an evaluation made: its config, report and latency.

Beside ``recording.run_result`` (a run's predictions as an ``EvalResult``), which this module
leaves where it is; the dashboard redraws a run after a reload from these parts, without running
a model.
"""

from __future__ import annotations

from llmopt.compression.config import CompressionConfig
from llmopt.compression.report import CompressionReport
from llmopt.experiments import Run
from llmopt.latency import LatencyStats


def run_config(run: Run) -> CompressionConfig:
    """The config a run was made with (``LlmoptError`` when this llmopt cannot read it)."""
    return CompressionConfig.from_dict(run.config or {})


def run_report(run: Run) -> CompressionReport:
    """The compression report stored with a run (empty for a run without one)."""
    return CompressionReport(**(run.report or {"rows": [], "totals": {}}))


def run_latency(run: Run) -> dict[str, LatencyStats] | None:
    """``{"baseline": LatencyStats, "compressed": LatencyStats}`` of a run whose latency was
    measured paired; None when it was not (same kernels: simulated)."""
    if (run.latency or {}).get("method") != "paired":
        return None
    latency = {}
    for side in ("baseline", "compressed"):
        stored = run.latency[side]
        latency[side] = LatencyStats(**{**stored, "samples_ms": tuple(stored["samples_ms"])})
    return latency
