"""Shared figure constants: role colours, colour scales, units, metric titles and column order."""

from __future__ import annotations

import math

from llmopt.evaluate import METRIC_KEYS

# One colour per role, the same in every figure: baseline blue, compressed orange.
PALETTE = {"baseline": "#1f77b4", "compressed": "#ff7f0e"}
EXTRA_COLOURS = ["#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
METHOD_COLOURS = ["#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf", "#e377c2"]
SEQUENTIAL = "Blues"
DIVERGING = "RdBu"  # red = fewer / less, blue = more; always centred at 0
MB = 1e6  # sizes are shown in megabytes of 10^6 bytes
TABLE_COLUMNS = [*METRIC_KEYS, "latency_ms_per_sample", "size_mb", "params_total", "params_nonzero"]
METRIC_TITLES = {
    "accuracy": "Accuracy",
    "precision_macro": "Precision (macro)",
    "recall_macro": "Recall (macro)",
    "f1_macro": "F1 (macro)",
    "roc_auc": "ROC AUC",
    "agreement": "Agreement with baseline",
    "latency_ms_per_sample": "Latency (ms/sample)",
    "size_mb": "Size (MB)",
    "params_total": "Parameters",
    "params_nonzero": "Non-zero parameters",
}


def model_colour(label: str, index: int = 0) -> str:
    """The colour of a model: by role if its label names one, else by position (0 = baseline)."""
    low = label.lower()
    if "baseline" in low or "uncompressed" in low:
        return PALETTE["baseline"]
    if "compressed" in low:
        return PALETTE["compressed"]
    if index < 2:
        return PALETTE["baseline"] if index == 0 else PALETTE["compressed"]
    return EXTRA_COLOURS[(index - 2) % len(EXTRA_COLOURS)]


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"
