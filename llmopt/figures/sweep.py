"""Sweep figures: quality and size against the knob value, and the size-accuracy Pareto front."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from llmopt.figures.common import METHOD_COLOURS, METRIC_TITLES, PALETTE

SWEEP_METRICS = [("accuracy", "solid")]  # the quality drawn (ROC AUC, agreement: in the table)


def _knob_spec(df: pd.DataFrame) -> tuple[str, dict]:
    from llmopt.sweep import SWEEP_KNOBS

    knob = str(df["knob"].iloc[0]) if len(df) else str(df.attrs.get("knob", "sparsity"))
    return knob, SWEEP_KNOBS.get(knob, {"label": knob, "reverse": False})


def _interval(part: pd.DataFrame, metric: str = "accuracy") -> dict | None:
    """Error bars from a sweep's interval columns ``<metric>_low`` / ``<metric>_high`` (None
    where a frame has none)."""
    low, high = f"{metric}_low", f"{metric}_high"
    if low not in part or part[low].isna().all():
        return None
    return {
        "type": "data",
        "symmetric": False,
        "array": (part[high] - part[metric]).to_numpy(dtype=float),
        "arrayminus": (part[metric] - part[low]).to_numpy(dtype=float),
        "thickness": 1,
        "width": 3,
    }


def sweep_metric(df: pd.DataFrame) -> str:
    """The quality a sweep frame draws by default: perplexity for a causal LM's sweep
    (``df.attrs["task"] == "perplexity"``), accuracy for a classifier's."""
    return "perplexity" if df.attrs.get("task") == "perplexity" else "accuracy"


def _padded(values: list[float], *, pad: float = 0.08, floor: float | None = None) -> list:
    """An axis range around ``values`` with a margin (the data, not the space down to 0)."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return [0, 1]
    low, high = min(finite), max(finite)
    margin = (high - low) * pad or max(abs(high) * pad, 1e-3)
    low, high = low - margin, high + margin
    return [max(low, floor) if floor is not None else low, high]


def sweep_figure(df: pd.DataFrame, metric: str | None = None) -> go.Figure:
    """A quality (with its 95% bootstrap interval) against the knob value, one line per method,
    the baseline's as a dotted line; below it, on its own axis, the size in MB.

    Args:
        df: the frame from ``llmopt.sweep.run_sweep`` (accuracy) or ``run_lm_sweep``
            (perplexity or bits per byte).
        metric: the column drawn (default: ``sweep_metric(df)``); its interval columns are
            ``<metric>_low`` and ``<metric>_high``. Perplexity is drawn on a log axis (it
            grows by orders of magnitude when a model breaks).
    """
    knob, spec = _knob_spec(df)
    metric = metric or sweep_metric(df)
    title = METRIC_TITLES.get(metric, metric)
    short = "accuracy" if metric == "accuracy" else title.lower()
    log = metric == "perplexity"
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.07
    )
    scores = []
    for i, (method, part) in enumerate(df.groupby("method", sort=False)):
        part = part.dropna(subset=["value"]).sort_values("value")
        colour = METHOD_COLOURS[i % len(METHOD_COLOURS)]
        bars = _interval(part, metric)
        scores += list(part[metric])
        if bars is not None:
            scores += list(part[f"{metric}_low"]) + list(part[f"{metric}_high"])
        fig.add_trace(
            go.Scatter(
                x=part["value"],
                y=part[metric],
                error_y=bars,
                mode="lines+markers",
                name=f"{method} · {METRIC_TITLES.get(metric, metric)}",
                legendgroup=method,
                line={"color": colour},
                hovertemplate=f"{method}<br>{knob} %{{x}}<br>{short} %{{y:.3f}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=part["value"],
                y=part["size_mb"],
                mode="lines+markers",
                name=f"{method} · size (MB)",
                legendgroup=method,
                showlegend=False,
                line={"color": colour, "width": 1.5},
                marker={"symbol": "square-open"},
                hovertemplate=f"{method}<br>{knob} %{{x}}<br>%{{y:.2f}} MB<extra></extra>",
            ),
            row=2,
            col=1,
        )
    baseline = df.attrs.get("baseline")
    if baseline and metric in baseline:
        scores += [baseline[metric], *(baseline.get(f"{metric}_interval") or [])]
        line = {"color": PALETTE["baseline"], "dash": "dot", "width": 1}
        text = f"baseline {short} {baseline[metric]:.3f}"
        if log:  # an hline's annotation is placed in axis units, which are log10 here
            fig.add_hline(y=baseline[metric], line=line, row=1, col=1)
            fig.add_annotation(
                text=text, x=0, xref="x domain", y=float(np.log10(baseline[metric])), yref="y",
                xanchor="left", yanchor="bottom", showarrow=False,
            )  # fmt: skip
        else:
            fig.add_hline(
                y=baseline[metric],
                line=line,
                annotation_text=text,
                annotation_position="bottom left",
                row=1,
                col=1,
            )
    fig.update_xaxes(autorange="reversed" if spec.get("reverse") else True)
    fig.update_xaxes(title_text=spec["label"], row=2, col=1)
    if log:
        fig.update_yaxes(title_text=f"{title} (95% interval, log scale)", type="log", row=1, col=1)
    else:
        fig.update_yaxes(
            title_text=f"{'Accuracy' if metric == 'accuracy' else title} (95% interval)",
            range=_padded(scores, floor=0.0),
            row=1,
            col=1,
        )
    sizes = list(df["size_mb"]) + ([baseline["size_mb"]] if baseline else [])
    fig.update_yaxes(
        title_text="Size (MB)", range=_padded(sizes, pad=0.15, floor=0.0), nticks=4, row=2, col=1
    )
    fig.update_layout(
        title=f"Sweep over {knob}: {short} and size (more compression to the right)",
        height=520,
        legend={"groupclick": "togglegroup"},
    )
    return fig


def pareto_figure(df: pd.DataFrame) -> go.Figure:
    """Size (MB) against accuracy for every sweep point; the Pareto frontier (nothing else is
    both smaller and more accurate) joined by a line; the baseline as a star."""
    from llmopt.sweep import pareto_front

    knob, _ = _knob_spec(df)
    points = df.dropna(subset=["size_mb", "accuracy"]).reset_index(drop=True)
    baseline = df.attrs.get("baseline")
    fig = go.Figure()
    for i, (method, part) in enumerate(points.groupby("method", sort=False)):
        fig.add_trace(
            go.Scatter(
                x=part["size_mb"],
                y=part["accuracy"],
                error_y=_interval(part),
                mode="markers",
                name=str(method),
                marker={"color": METHOD_COLOURS[i % len(METHOD_COLOURS)], "size": 9},
                customdata=np.stack([part["value"].astype(object), part["agreement"]], axis=1),
                hovertemplate=f"{method}, {knob} %{{customdata[0]}}<br>%{{x:.2f}} MB<br>"
                "accuracy %{y:.3f}<br>agreement %{customdata[1]:.3f}<extra></extra>",
            )
        )
    both = points[["size_mb", "accuracy", "method", "value"]].copy()
    if baseline:
        extra = {"size_mb": baseline["size_mb"], "accuracy": baseline["accuracy"]}
        both = pd.concat([both, pd.DataFrame([{**extra, "method": "baseline"}])])
    front = both[pareto_front(both, x="size_mb", y="accuracy")].sort_values("size_mb")
    fig.add_trace(
        go.Scatter(
            x=front["size_mb"],
            y=front["accuracy"],
            mode="lines+markers",
            name="Pareto frontier",
            line={"color": "black", "width": 1.5},
            marker={"symbol": "circle-open", "size": 15, "color": "black"},
            hovertemplate="frontier<br>%{x:.2f} MB<br>accuracy %{y:.3f}<extra></extra>",
        )
    )
    if baseline:
        fig.add_trace(
            go.Scatter(
                x=[baseline["size_mb"]],
                y=[baseline["accuracy"]],
                mode="markers",
                name="baseline (uncompressed)",
                marker={"symbol": "star", "size": 16, "color": PALETTE["baseline"]},
                hovertemplate="baseline<br>%{x:.2f} MB<br>accuracy %{y:.3f}<extra></extra>",
            )
        )
    sizes = list(both["size_mb"])
    scores = list(both["accuracy"])
    if "accuracy_low" in points:
        scores += list(points["accuracy_low"]) + list(points["accuracy_high"])
    fig.update_layout(
        title="Size against accuracy (up and to the left is better)",
        xaxis={"title": "Size (MB)", "range": _padded(sizes, floor=0.0)},
        yaxis={"title": "Accuracy", "range": _padded(scores, floor=0.0)},
        height=460,
    )
    return fig
