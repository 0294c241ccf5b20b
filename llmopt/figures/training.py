"""Training figures: loss and validation-accuracy curves, a language model's loss curves, and a
pruning schedule."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from llmopt.figures.common import EXTRA_COLOURS, PALETTE

LOSS_COLOUR = PALETTE["compressed"]
ACCURACY_COLOUR = PALETTE["baseline"]
SPARSITY_COLOUR = EXTRA_COLOURS[0]


def training_curves_figure(history: list[dict], *, title: str | None = None) -> go.Figure:
    """Training loss (left axis) and validation accuracy (right axis) against the step; the
    measured sparsity too (right axis, dotted) when the history has it.

    Args:
        history: entries ``{"step", "epoch", "loss", "val_accuracy"[, "sparsity"]}`` as
            training runs record them; missing values (``None``) are skipped.
        title: the figure's title.
    """
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    loss = [(h["step"], h["loss"]) for h in history if h.get("loss") is not None]
    acc = [(h["step"], h["val_accuracy"]) for h in history if h.get("val_accuracy") is not None]
    sparsity = [(h["step"], h["sparsity"]) for h in history if h.get("sparsity") is not None]
    fig.add_trace(
        go.Scatter(
            x=[s for s, _ in loss],
            y=[v for _, v in loss],
            mode="lines+markers",
            name="training loss",
            line={"color": LOSS_COLOUR},
            hovertemplate="step %{x}<br>loss %{y:.4f}<extra></extra>",
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=[s for s, _ in acc],
            y=[v for _, v in acc],
            mode="lines+markers",
            name="validation accuracy",
            line={"color": ACCURACY_COLOUR},
            hovertemplate="step %{x}<br>validation accuracy %{y:.3f}<extra></extra>",
        ),
        secondary_y=True,
    )
    if sparsity:
        fig.add_trace(
            go.Scatter(
                x=[s for s, _ in sparsity],
                y=[v for _, v in sparsity],
                mode="lines",
                name="sparsity (measured)",
                line={"color": SPARSITY_COLOUR, "dash": "dot"},
                hovertemplate="step %{x}<br>sparsity %{y:.3f}<extra></extra>",
            ),
            secondary_y=True,
        )
    fig.update_xaxes(title_text="Training step", rangemode="tozero")
    fig.update_yaxes(title_text="Training loss", rangemode="tozero", secondary_y=False)
    right = "Validation accuracy" + (" · sparsity" if sparsity else "")
    fig.update_yaxes(title_text=right, range=[0, 1.02], showgrid=False, secondary_y=True,
        tickmode="linear", tick0=0, dtick=0.25)  # fmt: skip
    fig.update_layout(
        title=title or "Training: loss and validation accuracy",
        height=380,
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def lm_loss_figure(history: list[dict], *, title: str | None = None) -> go.Figure:
    """A language model's training loss and, where measured, its validation loss (both the
    mean next-token NLL or KL, nats per token) against the step.

    Args:
        history: entries ``{"step", "loss"[, "val_loss"]}`` as LM training and pre-training
            record them; missing values are skipped.
        title: the figure's title.
    """
    fig = go.Figure()
    for key, name, colour in (("loss", "training loss", LOSS_COLOUR),
                              ("val_loss", "validation loss", ACCURACY_COLOUR)):  # fmt: skip
        points = [(h["step"], h[key]) for h in history if h.get(key) is not None]
        if not points:
            continue
        fig.add_trace(
            go.Scatter(
                x=[s for s, _ in points],
                y=[v for _, v in points],
                mode="lines+markers" if key == "val_loss" or len(points) < 50 else "lines",
                name=name,
                line={"color": colour},
                hovertemplate=f"step %{{x}}<br>{name} %{{y:.4f}}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="Training step", rangemode="tozero")
    fig.update_yaxes(title_text="Loss (nats per token)", rangemode="tozero")
    fig.update_layout(
        title=title or "Training: next-token loss",
        height=380,
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def schedule_figure(points: list[dict], *, title: str | None = None) -> go.Figure:
    """The sparsity a pruning schedule puts in force at every step (a staircase: the mask
    changes only at pruning steps), and the measured sparsity where the points carry it.

    Args:
        points: ``[{"step", "sparsity"[, "achieved"]}, …]`` from
            ``llmopt.training.schedules.schedule_points`` or a finished run's ``schedule``.
        title: the figure's title.
    """
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[p["step"] for p in points],
            y=[p["sparsity"] for p in points],
            mode="lines",
            line={"color": SPARSITY_COLOUR, "shape": "hv"},
            name="scheduled sparsity",
            hovertemplate="step %{x}<br>scheduled %{y:.3f}<extra></extra>",
        )
    )
    done = [p for p in points if p.get("achieved") is not None]
    if done:
        fig.add_trace(
            go.Scatter(
                x=[p["step"] for p in done],
                y=[p["achieved"] for p in done],
                mode="markers",
                marker={"color": LOSS_COLOUR, "size": 4},
                name="measured sparsity",
                hovertemplate="step %{x}<br>measured %{y:.3f}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="Training step", rangemode="tozero")
    fig.update_yaxes(title_text="Sparsity of the pruned layers", range=[0, 1])
    fig.update_layout(
        title=title or "Pruning schedule", height=320, legend={"orientation": "h", "y": -0.3}
    )
    return fig
