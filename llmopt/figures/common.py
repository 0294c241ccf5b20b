"""Shared figure constants: role colours, colour scales, units, metric titles and column order."""

from __future__ import annotations

import math

from plotly.colors import qualitative

from llmopt import metrics

# One colour per role, the same in every figure: baseline blue, compressed orange.
PALETTE = {"baseline": "#1f77b4", "compressed": "#ff7f0e"}
EXTRA_COLOURS = ["#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
METHOD_COLOURS = ["#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf", "#e377c2"]
SEQUENTIAL = "Blues"
DIVERGING = "RdBu"  # red = fewer / less, blue = more; always centred at 0
BETTER_WORSE = "RdBu_r"  # for changes judged good or bad: blue = better, red = worse
MB = 1e6  # sizes are shown in megabytes of 10^6 bytes
# One colour per class where curves are coloured by class (more than two classes): the
# categorical palette for up to ten classes, 24 dark colours beyond (repeating after 24).
CLASS_COLOURS = [PALETTE["baseline"], PALETTE["compressed"], *EXTRA_COLOURS, "#7f7f7f"]
MANY_CLASS_COLOURS = list(qualitative.Dark24)
LABEL_CHARS = 20  # tick labels longer than this are shortened (the hover keeps the full name)
# Every registered metric (llmopt.metrics), then the measurements; read at each use.
TABLE_COLUMNS = metrics.LiveList(
    lambda: [*metrics.keys(), "latency_ms_per_sample", "size_mb", "params_total", "params_nonzero"]
)
_MEASURED_TITLES = {
    "agreement": "Agreement with baseline",
    "latency_ms_per_sample": "Latency (ms/sample)",
    "size_mb": "Size (MB)",
    "params_total": "Parameters",
    "params_nonzero": "Non-zero parameters",
}
METRIC_TITLES = metrics.LiveDict(
    lambda: {**{k: m.title for k, m in metrics.all_metrics(None).items()}, **_MEASURED_TITLES}
)


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


def class_colours(n_classes: int) -> list[str]:
    """One distinct colour per class (repeating only beyond 24 classes)."""
    palette = CLASS_COLOURS if n_classes <= len(CLASS_COLOURS) else MANY_CLASS_COLOURS
    return [palette[i % len(palette)] for i in range(n_classes)]


def short_label(name: str, limit: int = LABEL_CHARS, *, keep_end: bool = True) -> str:
    """``name`` cut to ``limit`` characters in the middle ("a_really_lo…umber_17"), so that
    numbered names keep the part that tells them apart; with ``keep_end=False`` cut at the end
    ("a_really_long_n…"), for text read from its start (a description, a token)."""
    if len(name) <= limit:
        return name
    head = (limit - 1) * 3 // 5 if keep_end else limit - 1
    tail = limit - 1 - head
    return name[:head] + "…" + (name[-tail:] if tail > 0 else "")


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"
