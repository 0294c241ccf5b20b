"""The Compare scatter's fraction axes stay within [0, 1]."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _frame(accuracy: list[float]) -> pd.DataFrame:
    n = len(accuracy)
    return pd.DataFrame(
        {"id": range(1, n + 1), "label": [f"#{i}" for i in range(n)], "method": ["m"] * n,
         "model": ["a"] * n, "model_short": ["a"] * n, "dataset": ["d"] * n, "n": [10] * n,
         "kind": ["base"] + ["variant"] * (n - 1), "latency_simulated": [False] * n,
         "rows_fingerprint": ["r"] * n, "size_mb": np.linspace(10, 90, n),
         "accuracy": accuracy, "agreement": accuracy, "latency_ms": np.linspace(1, 9, n)}
    )  # fmt: skip


def test_a_fraction_axis_is_padded_and_never_passes_one():
    """Runs all at accuracy 1.0 drew an accuracy axis from 0.5 to 2 (plotly's own range for one
    value). A fraction axis now spans its data with a little padding, within [0, 1], and its
    points are not clipped at 1.0; other axes keep plotly's range. On the old code the
    accuracy axis had no range of its own, so the first assertion fails there."""
    from llmopt import figures

    fig = figures.runs_scatter_figure(_frame([1.0, 1.0, 1.0]), "size_mb", "accuracy")
    low, high = fig.layout.yaxis.range
    assert high == 1.0 and 0.9 <= low < 1.0
    assert fig.layout.xaxis.range is None  # sizes: not a fraction
    assert all(t.cliponaxis is False for t in fig.data)

    fig = figures.runs_scatter_figure(_frame([0.2, 0.6, 0.99]), "agreement", "accuracy")
    for axis in (fig.layout.xaxis, fig.layout.yaxis):
        low, high = axis.range
        assert 0.1 < low < 0.2 and 0.99 < high <= 1.0
    fig = figures.runs_scatter_figure(_frame([0.0, 0.01, np.nan]), "latency_ms", "accuracy")
    assert fig.layout.yaxis.range[0] == 0.0 and fig.layout.yaxis.range[1] <= 0.05
