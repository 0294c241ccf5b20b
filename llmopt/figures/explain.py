"""Explainer figures: a pruning mask, quantization levels over weights, a singular spectrum."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from llmopt.figures.common import PALETTE


def mask_figure(block: np.ndarray, *, title: str, m: int | None = None) -> go.Figure:
    """Kept (dark) and pruned (light) weights of a block; with ``m``, N:M group boundaries."""
    block = np.asarray(block, dtype=bool)
    rows, cols = block.shape
    fig = go.Figure(
        go.Heatmap(
            z=block.astype(int),
            x=list(range(cols)),
            y=list(range(rows)),
            zmin=0,
            zmax=1,
            colorscale=[[0, "#eeeeee"], [0.5, "#eeeeee"], [0.5, "#08306b"], [1, "#08306b"]],
            colorbar={"tickvals": [0.25, 0.75], "ticktext": ["pruned", "kept"], "len": 0.5},
            xgap=1,
            ygap=1,
            hovertemplate="row %{y}, column %{x}<br>%{z}<extra>1 = kept, 0 = pruned</extra>",
        )
    )
    if m:
        for c in range(m, cols, m):
            fig.add_vline(x=c - 0.5, line={"color": "#d62728", "width": 2})
    kept = block.mean() if block.size else 0.0
    fig.update_layout(
        title=f"{title} — {kept:.0%} kept",
        xaxis={"title": "Input column", "constrain": "domain"},
        yaxis={"title": "Output row", "autorange": "reversed", "scaleanchor": "x"},
        height=max(260, 22 * rows + 120),
    )
    return fig


MARKED_LEVELS = 33  # at most this many level ticks: more would merge into a solid band


def quant_hist_figure(weights: np.ndarray, grid: np.ndarray, *, title: str) -> go.Figure:
    """Histogram of weights with the quantization grid levels marked along the bottom (and as
    vertical lines when there are few of them). A fine grid (an 8-bit one has 255 or 256
    levels) marks every k-th level only, and its legend says so."""
    weights = np.asarray(weights, dtype=float).ravel()
    grid = np.asarray(grid, dtype=float).ravel()
    every = max(1, -(-grid.size // MARKED_LEVELS))  # ceil
    if every > 1:
        zero = int(np.argmin(np.abs(grid)))  # keep the level at 0 among the marked ones
        marked = grid[zero % every :: every]
        name = f"1 in {every} of {grid.size} grid levels"
    else:
        marked, name = grid, f"grid levels ({grid.size})"
    fig = go.Figure(
        go.Histogram(
            x=weights,
            nbinsx=min(80, max(10, weights.size // 2)),
            name="weights",
            marker_color=PALETTE["baseline"],
            opacity=0.75,
            hovertemplate="%{x}<br>%{y} weights<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=marked,
            y=np.zeros_like(marked),
            mode="markers",
            name=name,
            marker={"symbol": "line-ns-open", "size": 18, "color": PALETTE["compressed"]},
            hovertemplate="level %{x:.4g}<extra></extra>",
        )
    )
    if grid.size <= 17:
        for level in grid:
            fig.add_vline(
                x=float(level), line={"color": PALETTE["compressed"], "width": 1, "dash": "dot"}
            )
    fig.update_layout(
        title=title,
        xaxis={"title": "Weight value"},
        yaxis={"title": "Number of weights"},
        bargap=0.05,
        height=380,
    )
    return fig


def spectrum_figure(
    singular_values: np.ndarray, rank: int | None, *, energy: np.ndarray | None = None
) -> go.Figure:
    """Singular values (bars), cumulative energy Σσ_i²/Σσ² (line, right axis) and the chosen
    rank with the share of energy it keeps.

    Args:
        singular_values: descending singular values.
        rank: the truncation rank to mark, or None.
        energy: the cumulative energy fractions if already computed (``explain.spectrum``).
    """
    s = np.asarray(singular_values, dtype=float)
    if energy is None:
        energy = np.cumsum(s**2) / max(float(np.sum(s**2)), 1e-300)
    index = np.arange(1, s.size + 1)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Bar(
            x=index,
            y=s,
            name="singular value σᵢ",
            marker_color=PALETTE["baseline"],
            hovertemplate="σ_%{x} = %{y:.4g}<extra></extra>",
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=index,
            y=np.asarray(energy) * 100,
            mode="lines",
            name="cumulative energy (%)",
            line={"color": PALETTE["compressed"]},
            hovertemplate="first %{x}: %{y:.1f}% of Σσ²<extra></extra>",
        ),
        secondary_y=True,
    )
    if rank is not None and 1 <= rank <= s.size:
        kept = float(energy[rank - 1]) * 100
        fig.add_vline(
            x=rank + 0.5,
            line={"color": "black", "dash": "dash"},
            annotation_text=f"rank {rank}: {kept:.1f}% of energy kept",
            annotation_position="top right" if rank < 0.6 * s.size else "top left",
        )
    fig.update_xaxes(title_text="Index i (largest first)")
    fig.update_yaxes(title_text="Singular value σᵢ", secondary_y=False)
    fig.update_yaxes(
        title_text="Cumulative energy Σσᵢ² (%)",
        range=[0, 101],
        tickvals=[0, 25, 50, 75, 100],
        showgrid=False,
        secondary_y=True,
    )
    fig.update_layout(title="Singular value spectrum", height=400, bargap=0)
    return fig


def gptq_figure(rtn: np.ndarray, gptq: np.ndarray, *, title: str) -> go.Figure:
    """The relative output error caused by input columns ``0..j`` as they are quantized left
    to right, for round to nearest and GPTQ (the last point is the layer's output error)."""
    x = np.arange(len(rtn))
    fig = go.Figure()
    for name, values, colour in (
        ("round to nearest", rtn, PALETTE["baseline"]),
        ("GPTQ (error feedback)", gptq, PALETTE["compressed"]),
    ):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=np.asarray(values, dtype=float),
                mode="lines",
                name=name,
                line={"color": colour, "width": 1},
                hovertemplate="column %{x}<br>%{y:.3g}<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(
        title=title,
        xaxis={"title": "Input columns 0…j quantized (left to right)"},
        yaxis={"title": "Relative output error ‖XΔWᵀ‖ / ‖XWᵀ‖", "rangemode": "tozero"},
        height=380,
    )
    return fig


def scaled_spectrum_figure(
    energy_plain: np.ndarray, energy_scaled: np.ndarray, rank: int, *, title: str
) -> go.Figure:
    """Cumulative energy of the singular values of W and of the whitened W·L, with the rank."""
    fig = go.Figure()
    for name, energy, colour in (
        ("W (plain SVD)", energy_plain, PALETTE["baseline"]),
        ("W·L (activation-aware)", energy_scaled, PALETTE["compressed"]),
    ):
        energy = np.asarray(energy, dtype=float)
        fig.add_trace(
            go.Scatter(
                x=np.arange(1, energy.size + 1),
                y=energy * 100,
                mode="lines",
                name=name,
                line={"color": colour},
                hovertemplate="first %{x}: %{y:.1f}%<extra>" + name + "</extra>",
            )
        )
    fig.add_vline(
        x=rank + 0.5,
        line={"color": "black", "dash": "dash"},
        annotation_text=f"rank {rank}",
        annotation_position="bottom right",
    )
    fig.update_layout(
        title=title,
        xaxis={"title": "Singular values kept (largest first)"},
        yaxis={"title": "Cumulative energy Σσᵢ² (%)", "range": [0, 101]},
        height=380,
    )
    return fig


def smoothing_figure(
    act_before: np.ndarray,
    act_after: np.ndarray,
    weight_before: np.ndarray,
    weight_after: np.ndarray,
    *,
    title: str,
) -> go.Figure:
    """Per input channel: activation range and weight range before and after smoothing."""
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("Activations max |X_j|", "Weights max |W_:,j|"),
    )
    x = np.arange(len(act_before))
    for row, before, after in ((1, act_before, act_after), (2, weight_before, weight_after)):
        for name, values, colour in (
            ("before", before, PALETTE["baseline"]),
            ("after smoothing", after, PALETTE["compressed"]),
        ):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=np.asarray(values, dtype=float),
                    mode="lines",
                    name=name,
                    legendgroup=name,
                    showlegend=row == 1,
                    line={"color": colour, "width": 1},
                    hovertemplate="channel %{x}<br>%{y:.3g}<extra>" + name + "</extra>",
                ),
                row=row,
                col=1,
            )
    fig.update_xaxes(title_text="Input channel j", row=2, col=1)
    fig.update_layout(title=title, height=460)
    return fig
