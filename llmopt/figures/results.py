"""Figures and tables of evaluation results: ROC, confusion matrices, metrics, size, layer error."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from llmopt.errors import LlmoptError
from llmopt.evaluate import METRIC_KEYS, EvalResult
from llmopt.figures.common import (
    DIVERGING,
    MB,
    PALETTE,
    SEQUENTIAL,
    TABLE_COLUMNS,
    model_colour,
)

if TYPE_CHECKING:
    from llmopt.compress import CompressionReport


def roc_figure(results: dict[str, EvalResult]) -> go.Figure:
    """ROC curves of several models on the same rows.

    Convention: with two classes, one curve per model for the positive class (index 1), whose
    AUC equals ``metrics["roc_auc"]``. With more classes, one one-vs-rest curve per model and
    class (colour = model, dash = class); ``metrics["roc_auc"]`` is their macro average.

    Args:
        results: {model label: result}; the first is drawn as the baseline.

    Returns:
        The figure, AUC in each legend entry, the chance diagonal dashed.
    """
    fig = go.Figure()
    dashes = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
    for i, (label, result) in enumerate(results.items()):
        names = list(result.label_names)
        classes = [names[1]] if len(names) == 2 else names
        for j, cls in enumerate(classes):
            curve = result.roc.get(cls)
            if curve is None:  # a class absent from (or alone in) the data has no curve
                continue
            suffix = "" if len(names) == 2 else f" — {cls}"
            fig.add_trace(
                go.Scatter(
                    x=np.asarray(curve["fpr"]),
                    y=np.asarray(curve["tpr"]),
                    mode="lines",
                    name=f"{label}{suffix} (AUC {curve['auc']:.3f})",
                    line={"color": model_colour(label, i), "dash": dashes[j % len(dashes)]},
                    hovertemplate=f"{label}{suffix}<br>FPR %{{x:.3f}}<br>TPR %{{y:.3f}}"
                    "<extra></extra>",
                )
            )
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="chance (AUC 0.5)",
            line={"color": "grey", "dash": "dash", "width": 1},
            hoverinfo="skip",
        )
    )
    if len(fig.data) == 1:
        fig.add_annotation(text="ROC undefined: the data has a single class", showarrow=False)
    positive = next(iter(results.values())).label_names if results else []
    subtitle = f" (positive class: {positive[1]})" if len(positive) == 2 else " (one-vs-rest)"
    fig.update_layout(
        title=f"ROC curve{subtitle}",
        xaxis={"title": "False positive rate", "range": [0, 1], "constrain": "domain"},
        yaxis={"title": "True positive rate", "range": [0, 1], "scaleanchor": "x"},
        width=None,
        height=480,
        legend={"x": 0.98, "y": 0.02, "xanchor": "right", "yanchor": "bottom"},
    )
    return fig


def confusion_figure(result: EvalResult, *, title: str | None = None) -> go.Figure:
    """Confusion matrix as counts and as row-normalised rates, side by side.

    Args:
        result: an evaluation result.
        title: figure title (default: the model's name).

    Returns:
        Two annotated heatmaps; rows are true labels, columns predicted labels.
    """
    counts = np.asarray(result.confusion, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    names = [str(n) for n in result.label_names]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Counts", "Share of each true label"),
        horizontal_spacing=0.15,
    )
    for col, (z, text, colorbar_x, top) in enumerate(
        [
            (counts, counts.astype(int).astype(str), 0.42, max(float(counts.max()), 1.0)),
            (rates, np.char.mod("%.2f", rates), 1.0, 1.0),
        ],
        start=1,
    ):
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=names,
                y=names,
                text=text,
                texttemplate="%{text}",
                colorscale=SEQUENTIAL,
                colorbar={"x": colorbar_x, "len": 0.9},
                zmin=0,
                zmax=top,
                hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="Predicted label", type="category", row=1, col=col)
        fig.update_yaxes(
            title_text="True label", type="category", autorange="reversed", row=1, col=col
        )
    fig.update_layout(title=title or f"Confusion matrix — {result.name or 'model'}", height=420)
    return fig


def confusion_diff_figure(base: EvalResult, other: EvalResult) -> go.Figure:
    """Compressed minus baseline confusion counts (diverging colours, centred at 0).

    Raises:
        LlmoptError: if the two results have different labels.
    """
    if list(base.label_names) != list(other.label_names):
        raise LlmoptError("the two results have different labels; evaluate both on one dataset")
    diff = np.asarray(other.confusion, dtype=int) - np.asarray(base.confusion, dtype=int)
    names = [str(n) for n in base.label_names]
    limit = max(int(np.abs(diff).max()), 1)
    fig = go.Figure(
        go.Heatmap(
            z=diff,
            x=names,
            y=names,
            text=np.char.mod("%+d", diff),
            texttemplate="%{text}",
            colorscale=DIVERGING,
            zmid=0,
            zmin=-limit,
            zmax=limit,
            colorbar={"title": "Δ count"},
            hovertemplate="true %{y}<br>predicted %{x}<br>change %{text}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Change in the confusion matrix (compressed − baseline)",
        xaxis={"title": "Predicted label", "type": "category"},
        yaxis={"title": "True label", "type": "category", "autorange": "reversed"},
        height=420,
    )
    return fig


def _row(result: EvalResult) -> dict:
    row = {k: float(result.metrics.get(k, float("nan"))) for k in METRIC_KEYS}
    row["latency_ms_per_sample"] = float(result.latency_ms_per_sample)
    row["size_mb"] = result.size_bytes / MB
    row["params_total"] = int(result.params_total)
    row["params_nonzero"] = int(result.params_nonzero)
    return row


FACT_TITLES = {  # model_facts key -> row title
    "name": "Name",
    "source": "Source",
    "architecture": "Architecture",
    "layers": "Layers",
    "heads": "Attention heads per layer",
    "hidden_size": "Hidden size",
    "params_total": "Parameters",
    "params_nonzero": "Non-zero parameters",
    "size_bytes": "Size (bytes)",
    "labels": "Labels",
    "max_length": "Max length (tokens)",
}


def facts_table(facts: dict) -> pd.DataFrame:
    """``llmopt.model_facts`` as a two-column (fact, value) table of display strings."""
    rows = []
    for key, title in FACT_TITLES.items():
        value = facts.get(key)
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        elif isinstance(value, int):
            value = f"{value:,}"
        rows.append({"fact": title, "value": "n/a" if value is None else str(value)})
    return pd.DataFrame(rows)


def metrics_table(results: dict[str, EvalResult]) -> pd.DataFrame:
    """One row per model (index = its label): metrics, latency, size in MB, parameter counts."""
    frame = pd.DataFrame([_row(r) for r in results.values()], index=list(results))
    frame.index.name = "model"
    return frame[TABLE_COLUMNS]


def delta_table(base: EvalResult, other: EvalResult) -> pd.DataFrame:
    """Columns metric, baseline, compressed, delta (compressed − baseline), one row per metric."""
    a, b = _row(base), _row(other)
    return pd.DataFrame(
        [
            {"metric": k, "baseline": a[k], "compressed": b[k], "delta": b[k] - a[k]}
            for k in TABLE_COLUMNS
        ]
    )


def size_latency_figure(results: dict[str, EvalResult]) -> go.Figure:
    """Model size (MB) and latency (ms/sample) as bars in two panels."""
    labels = list(results)
    colours = [model_colour(label, i) for i, label in enumerate(labels)]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Size", "Latency"))
    sizes = [r.size_bytes / MB for r in results.values()]
    latency = [r.latency_ms_per_sample for r in results.values()]
    for col, values, unit in [(1, sizes, "MB"), (2, latency, "ms/sample")]:
        fig.add_trace(
            go.Bar(
                x=labels,
                y=values,
                marker_color=colours,
                text=[f"{v:.2f}" for v in values],
                textposition="auto",
                showlegend=False,
                hovertemplate=f"%{{x}}<br>%{{y:.3f}} {unit}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="Model", row=1, col=col)
    fig.update_yaxes(title_text="Size (MB)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="Latency (ms/sample)", rangemode="tozero", row=1, col=2)
    fig.update_layout(title="Size and latency", height=380)
    return fig


def layer_error_figure(report: CompressionReport) -> go.Figure:
    """Relative weight error per compressed layer (bars, model order) and its sparsity (line)."""
    rows = list(report.rows)
    names = [str(r["name"]) for r in rows]
    prefix = _common_prefix(names)
    short = [n[len(prefix) :] or n for n in names]

    def num(value) -> float:
        return float("nan") if value is None else float(value)

    hover = [
        f"{r['name']}<br>shape {tuple(r.get('shape') or ())}<br>bits {r.get('bits')}, "
        f"group {r.get('group_size')}, rank {r.get('rank')}<br>{r.get('note') or ''}"
        for r in rows
    ]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Bar(
            x=short,
            y=[num(r.get("rel_error")) for r in rows],
            name="relative error ‖W−Ŵ‖/‖W‖",
            marker_color=PALETTE["compressed"],
            hovertext=hover,
            hovertemplate="%{hovertext}<br>rel. error %{y:.4f}<extra></extra>",
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=short,
            y=[num(r.get("sparsity")) for r in rows],
            name="sparsity",
            mode="lines+markers",
            line={"color": PALETTE["baseline"]},
            hovertext=hover,
            hovertemplate="%{hovertext}<br>sparsity %{y:.3f}<extra></extra>",
        ),
        secondary_y=True,
    )
    if not rows:
        fig.add_annotation(text="no layer was compressed", showarrow=False)
    fig.update_xaxes(title_text=f"Layer{f' (under {prefix})' if prefix else ''}", type="category")
    fig.update_yaxes(title_text="Relative error ‖W−Ŵ‖_F / ‖W‖_F", secondary_y=False)
    fig.update_yaxes(title_text="Sparsity (fraction of zeros)", range=[0, 1], secondary_y=True)
    fig.update_layout(title="Error per layer", height=420, legend={"orientation": "h", "y": 1.1})
    return fig


def _common_prefix(names: list[str]) -> str:
    """The longest common dotted prefix (whole name parts), e.g. 'encoder.layer.'."""
    if len(names) < 2:
        return ""
    parts = [n.split(".") for n in names]
    common = []
    for group in zip(*parts, strict=False):
        if len(set(group)) != 1:
            break
        common.append(group[0])
    return ".".join(common) + "." if common else ""
