"""Attention figures: one head, baseline against compressed, all heads of a layer, drift."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from llmopt.errors import LlmoptError
from llmopt.figures.common import DIVERGING, SEQUENTIAL

if TYPE_CHECKING:
    from llmopt.attention import AttentionMaps


MAX_TICKS = 24  # token labels on the axis of a full-width map; more overlap at 900 px
TICK_CHARS = 8  # a label's characters; the full token is in the hover text


def _tick_label(token: str) -> str:
    return token if len(token) <= TICK_CHARS else token[: TICK_CHARS - 1] + "…"


def _token_axis(tokens: list[str], max_ticks: int = MAX_TICKS, *, x: bool = False) -> dict:
    """Positions on the axis (a category axis would merge repeated tokens), labelled with
    shortened tokens: every token when they fit, else every k-th (the hover names them all);
    key-token labels are turned so that neighbours do not overlap."""
    step = max(1, math.ceil(len(tokens) / max_ticks))
    shown = list(range(0, len(tokens), step))
    axis = {
        "tickmode": "array",
        "tickvals": shown,
        "ticktext": [_tick_label(tokens[i]) for i in shown],
    }
    return {**axis, "tickangle": -60} if x else axis


def _check_head(maps: AttentionMaps, layer: int, head: int | None = None) -> None:
    layers, heads = maps.maps.shape[:2]
    if not 0 <= layer < layers:
        raise LlmoptError(f"layer {layer} does not exist; the model has layers 0..{layers - 1}")
    if head is not None and not 0 <= head < heads:
        raise LlmoptError(f"head {head} does not exist; each layer has heads 0..{heads - 1}")


def _attention_heatmap(z: np.ndarray, tokens: list[str], **kwargs) -> go.Heatmap:
    n = len(tokens)
    q_tok = np.array([[tokens[i]] * n for i in range(n)])
    k_tok = np.array([tokens] * n)
    return go.Heatmap(
        z=z,
        x=list(range(n)),
        y=list(range(n)),
        customdata=np.dstack([q_tok, k_tok]),
        hovertemplate="query %{customdata[0]} (%{y})<br>key %{customdata[1]} (%{x})"
        "<br>weight %{z:.3f}<extra></extra>",
        **kwargs,
    )


def attention_figure(
    maps: AttentionMaps, layer: int, head: int, *, title: str | None = None
) -> go.Figure:
    """One head's attention: x = attended-to (key) tokens, y = query tokens, row 0 on top.

    Raises:
        LlmoptError: a layer or head the maps do not have.
    """
    _check_head(maps, layer, head)
    fig = go.Figure(
        _attention_heatmap(
            maps.maps[layer, head],
            maps.tokens,
            colorscale=SEQUENTIAL,
            zmin=0,
            zmax=1,
            colorbar={"title": "weight"},
        )
    )
    fig.update_layout(
        title=title or f"Attention — layer {layer}, head {head}",
        xaxis={"title": "Key token (attended to)", **_token_axis(maps.tokens, x=True)},
        yaxis={"title": "Query token", "autorange": "reversed", **_token_axis(maps.tokens)},
        height=520,
    )
    return fig


def attention_compare_figure(
    base: AttentionMaps, other: AttentionMaps, layer: int, head: int
) -> go.Figure:
    """Baseline, compressed and compressed − baseline attention of one head, side by side.

    Raises:
        LlmoptError: maps of different shapes, or a layer or head they do not have.
    """
    if base.maps.shape != other.maps.shape:
        raise LlmoptError("compare attention of a model and a compressed copy on the same text")
    _check_head(base, layer, head)
    a, b = base.maps[layer, head], other.maps[layer, head]
    diff = b - a
    top = float(max(a.max(), b.max()))
    limit = max(float(np.abs(diff).max()), 1e-6)
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("Baseline", "Compressed", "Compressed − baseline"),
        horizontal_spacing=0.12,
    )
    fig.add_trace(
        _attention_heatmap(a, base.tokens, coloraxis="coloraxis"),
        row=1,
        col=1,
    )
    fig.add_trace(_attention_heatmap(b, other.tokens, coloraxis="coloraxis"), row=1, col=2)
    fig.add_trace(_attention_heatmap(diff, base.tokens, coloraxis="coloraxis2"), row=1, col=3)
    for col in (1, 2, 3):  # a third of the width each: a few labels, query tokens at the left
        fig.update_xaxes(
            title_text="Key token", row=1, col=col, **_token_axis(base.tokens, 5, x=True)
        )
        fig.update_yaxes(
            title_text="Query token" if col == 1 else None,
            autorange="reversed",
            row=1,
            col=col,
            showticklabels=col == 1,
            **_token_axis(base.tokens, 16),
        )
    fig.update_layout(
        title=f"Attention before and after compression — layer {layer}, head {head}",
        coloraxis={
            "colorscale": SEQUENTIAL,
            "cmin": 0,
            "cmax": top,
            "colorbar": {"x": 0.635, "xanchor": "left", "thickness": 12, "title": "weight"},
        },
        coloraxis2={
            "colorscale": DIVERGING,
            "cmid": 0,
            "cmin": -limit,
            "cmax": limit,
            "colorbar": {"title": "Δ"},
        },
        height=460,
    )
    return fig


def attention_heads_figure(maps: AttentionMaps, layer: int) -> go.Figure:
    """Every head of one layer in a grid (shared colour scale 0..1).

    Raises:
        LlmoptError: a layer the maps do not have.
    """
    _check_head(maps, layer)
    heads = maps.maps.shape[1]
    cols = min(4, heads)
    rows = math.ceil(heads / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"head {h}" for h in range(heads)],
        horizontal_spacing=0.03,
        vertical_spacing=0.08 if rows > 1 else 0.1,
    )
    few = len(maps.tokens) <= 16
    for h in range(heads):
        r, c = h // cols + 1, h % cols + 1
        fig.add_trace(
            _attention_heatmap(maps.maps[layer, h], maps.tokens, coloraxis="coloraxis"),
            row=r,
            col=c,
        )
        fig.update_xaxes(
            title_text="Key token" if r == rows else None,
            row=r,
            col=c,
            showticklabels=few,
            **_token_axis(maps.tokens, 6, x=True),
        )
        fig.update_yaxes(
            title_text="Query token" if c == 1 else None,
            autorange="reversed",
            row=r,
            col=c,
            showticklabels=few,
            **_token_axis(maps.tokens, 6),
        )
    fig.update_layout(
        title=f"All heads of layer {layer}",
        coloraxis={"colorscale": SEQUENTIAL, "cmin": 0, "cmax": 1, "colorbar": {"title": "weight"}},
        height=260 * rows + 80,
    )
    return fig


def drift_figure(drift: np.ndarray) -> go.Figure:
    """Mean Jensen–Shannon divergence (bits) of each head's attention, layers × heads."""
    drift = np.asarray(drift, dtype=float)
    layers, heads = drift.shape
    fig = go.Figure(
        go.Heatmap(
            z=drift,
            x=list(range(heads)),
            y=list(range(layers)),
            text=np.char.mod("%.3f", drift),
            texttemplate="%{text}",
            colorscale="Reds",
            zmin=0,
            colorbar={"title": "JS divergence (bits)"},
            hovertemplate="layer %{y}, head %{x}<br>JS %{z:.4f} bits<extra></extra>",
        )
    )
    fig.update_layout(
        title="Attention drift: how far each head moved (0 = unchanged, 1 bit = maximal)",
        xaxis={"title": "Head", "tickmode": "linear", "dtick": 1},
        yaxis={"title": "Layer", "tickmode": "linear", "dtick": 1, "autorange": "reversed"},
        height=220 + 36 * layers,  # rows of a 2-layer model stay a line of text apart
    )
    return fig
