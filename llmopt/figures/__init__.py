"""Plotly figure builders: take results and arrays, return a go.Figure, compute no metric."""

from llmopt.figures.attention import (
    attention_compare_figure,
    attention_figure,
    attention_heads_figure,
    drift_figure,
)
from llmopt.figures.common import (
    DIVERGING,
    EXTRA_COLOURS,
    MB,
    METHOD_COLOURS,
    METRIC_TITLES,
    PALETTE,
    SEQUENTIAL,
    TABLE_COLUMNS,
    model_colour,
)
from llmopt.figures.explain import mask_figure, quant_hist_figure, spectrum_figure
from llmopt.figures.results import (
    confusion_diff_figure,
    confusion_figure,
    delta_table,
    facts_table,
    layer_error_figure,
    metrics_table,
    roc_figure,
    size_latency_figure,
)
from llmopt.figures.sweep import SWEEP_METRICS, pareto_figure, sweep_figure

__all__ = [
    "DIVERGING",
    "EXTRA_COLOURS",
    "MB",
    "METHOD_COLOURS",
    "METRIC_TITLES",
    "PALETTE",
    "SEQUENTIAL",
    "SWEEP_METRICS",
    "TABLE_COLUMNS",
    "attention_compare_figure",
    "attention_figure",
    "attention_heads_figure",
    "confusion_diff_figure",
    "confusion_figure",
    "delta_table",
    "drift_figure",
    "facts_table",
    "layer_error_figure",
    "mask_figure",
    "metrics_table",
    "model_colour",
    "pareto_figure",
    "quant_hist_figure",
    "roc_figure",
    "size_latency_figure",
    "spectrum_figure",
    "sweep_figure",
]
