"""Sweep figures: quality and size against the knob value, and the size-accuracy Pareto front."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from llmopt.figures.common import METHOD_COLOURS, METRIC_TITLES, PALETTE

SWEEP_METRICS = [("accuracy", "solid"), ("roc_auc", "dash"), ("agreement", "dot")]


def _knob_spec(df: pd.DataFrame) -> tuple[str, dict]:
    from llmopt.sweep import SWEEP_KNOBS

    knob = str(df["knob"].iloc[0]) if len(df) else str(df.attrs.get("knob", "sparsity"))
    return knob, SWEEP_KNOBS.get(knob, {"label": knob, "reverse": False})


def sweep_figure(df: pd.DataFrame) -> go.Figure:
    """Accuracy, ROC AUC and agreement against the knob value (colour = method, dash = metric),
    size (MB) on a secondary axis; the baseline accuracy as a dotted horizontal line.

    Args:
        df: the frame from ``llmopt.sweep.run_sweep``.
    """
    knob, spec = _knob_spec(df)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for i, (method, part) in enumerate(df.groupby("method", sort=False)):
        part = part.dropna(subset=["value"]).sort_values("value")
        colour = METHOD_COLOURS[i % len(METHOD_COLOURS)]
        for metric, dash in SWEEP_METRICS:
            fig.add_trace(
                go.Scatter(
                    x=part["value"],
                    y=part[metric],
                    mode="lines+markers",
                    name=f"{method} · {METRIC_TITLES.get(metric, metric)}",
                    legendgroup=method,
                    line={"color": colour, "dash": dash},
                    hovertemplate=f"{method}<br>{knob} %{{x}}<br>{metric} %{{y:.3f}}"
                    "<extra></extra>",
                ),
                secondary_y=False,
            )
        fig.add_trace(
            go.Scatter(
                x=part["value"],
                y=part["size_mb"],
                mode="lines+markers",
                name=f"{method} · size (MB)",
                legendgroup=method,
                line={"color": colour, "dash": "longdashdot", "width": 1},
                marker={"symbol": "square-open"},
                opacity=0.6,
                hovertemplate=f"{method}<br>{knob} %{{x}}<br>%{{y:.2f}} MB<extra></extra>",
            ),
            secondary_y=True,
        )
    baseline = df.attrs.get("baseline")
    if baseline:
        fig.add_hline(
            y=baseline["accuracy"],
            line={"color": PALETTE["baseline"], "dash": "dot", "width": 1},
            annotation_text=f"baseline accuracy {baseline['accuracy']:.3f}",
            annotation_position="bottom left",
        )
    fig.update_xaxes(
        title_text=spec["label"], autorange="reversed" if spec.get("reverse") else True
    )
    fig.update_yaxes(title_text="Score (accuracy, ROC AUC, agreement)", secondary_y=False)
    fig.update_yaxes(title_text="Size (MB)", rangemode="tozero", showgrid=False, secondary_y=True)
    fig.update_layout(
        title=f"Sweep over {knob}: quality and size (more compression to the right)",
        height=480,
        legend={"groupclick": "toggleitem"},
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
    fig.update_layout(
        title="Size against accuracy (up and to the left is better)",
        xaxis={"title": "Size (MB)", "rangemode": "tozero"},
        yaxis={"title": "Accuracy"},
        height=460,
    )
    return fig
