"""The Sweep page's figures: few series, intervals as error bars, axes fitted to the data;
lineage nodes say what each run is."""

from __future__ import annotations

import numpy as np
import pandas as pd

from llmopt import figures
from llmopt.sweep import COLUMNS


def sweep_frame() -> pd.DataFrame:
    rows = []
    for i, method in enumerate(("magnitude", "wanda")):
        for value in (0.0, 0.3, 0.6, 0.9):
            accuracy = 0.8 - 0.2 * value**2 + 0.01 * i
            size = 90.0 * (1 - 0.5 * value)
            rows.append(
                {"knob": "sparsity", "method": method, "value": value, "accuracy": accuracy,
                 "accuracy_low": accuracy - 0.03, "accuracy_high": accuracy + 0.02,
                 "roc_auc": 0.85, "f1_macro": 0.8, "agreement": 1 - 0.4 * value,
                 "size_mb": size, "size_bytes": int(size * 1e6)}
            )  # fmt: skip
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame.attrs["baseline"] = {
        "accuracy": 0.8, "accuracy_interval": [0.77, 0.82], "size_mb": 90.0, "size_bytes": 9e7
    }  # fmt: skip
    return frame


def test_the_sweep_chart_has_one_quality_line_per_method_with_its_interval():
    """Before: 8 series for 2 methods (accuracy, ROC AUC, agreement and size each), size on a
    right axis with ticks unrelated to the left's, and no intervals."""
    frame = sweep_frame()
    fig = figures.sweep_figure(frame)
    assert len(fig.data) == 4  # per method: accuracy (with its interval) and size
    assert [t.showlegend for t in fig.data] == [None, False, None, False]  # one legend entry
    accuracy = fig.data[0]
    part = frame[frame["method"] == "magnitude"]
    np.testing.assert_allclose(accuracy.error_y.array, part["accuracy_high"] - part["accuracy"])
    np.testing.assert_allclose(accuracy.error_y.arrayminus, part["accuracy"] - part["accuracy_low"])
    layout = fig.layout
    assert not layout.yaxis2.overlaying  # size has its own panel, not a second right axis
    low, high = layout.yaxis.range
    assert 0.5 < low < frame["accuracy_low"].min() and frame["accuracy_high"].max() < high <= 1
    assert layout.yaxis2.range[0] >= 0 and layout.yaxis2.range[1] > frame["size_mb"].max()


def test_the_pareto_axes_fit_the_points_with_their_intervals():
    """The size axis started at 0, squeezing every point against the right edge."""
    frame = sweep_frame()
    fig = figures.pareto_figure(frame)
    x_low, x_high = fig.layout.xaxis.range
    assert fig.layout.xaxis.rangemode != "tozero"
    assert 0 < x_low < frame["size_mb"].min() and x_high > frame["size_mb"].max()
    magnitude = next(t for t in fig.data if t.name == "magnitude")
    part = frame[frame["method"] == "magnitude"]
    np.testing.assert_allclose(
        magnitude.error_y.arrayminus, part["accuracy"] - part["accuracy_low"]
    )


def test_lineage_nodes_say_what_each_run_is():
    """Nodes showed only '#N'; now the id and a short description of what the run added."""
    layout = pd.DataFrame(
        {"id": [1, 2, 3], "depth": [0, 1, 2], "y": [0.0, 0.0, 0.0], "parent": [None, 1, 2],
         "step": ["tiny-bert", "50% wanda pruning", "+ 4-bit weights (group 64), act-order x"]}
    )  # fmt: skip
    frame = pd.DataFrame(
        {"id": [1, 2, 3], "accuracy": [0.8, 0.7, 0.6], "label": ["a", "b", "<b>c</b>"],
         "model": ["m"] * 3, "dataset": ["d"] * 3, "n": [10] * 3,
         "kind": ["base", "variant", "variant"]}
    )  # fmt: skip
    fig = figures.lineage_figure(layout, frame, "accuracy")
    text = list(fig.data[1].text)
    assert text[0] == "#1 tiny-bert" and text[1] == "#2 50% wanda pruning"
    assert text[2].startswith("#3 + 4-bit weights") and text[2].endswith("…")
    assert len(text[2]) <= len("#3 ") + 26
