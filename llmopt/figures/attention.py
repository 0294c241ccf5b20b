"""Attention figures: one head, baseline against compressed, all heads of a layer, drift."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from llmopt.errors import LlmoptError
from llmopt.figures.common import DIVERGING, SEQUENTIAL, short_label
from llmopt.figures.results import _escape

if TYPE_CHECKING:
    from llmopt.attention import AttentionMaps


MAX_TICKS = 24  # token labels on the axis of a full-width map; more overlap at 900 px
TICK_CHARS = 8  # a label's characters; the full token is in the hover text


def _tick_label(token: str) -> str:
    """A token shortened for an axis, as text (plotly reads tick labels as HTML)."""
    return _escape(short_label(token, TICK_CHARS, keep_end=False))


def _token_axis(
    tokens: list[str], max_ticks: int = MAX_TICKS, *, x: bool = False, offset: int = 0
) -> dict:
    """Positions in the text on the axis (a category axis would merge repeated tokens; a
    window of a long text starts at ``offset``), labelled with shortened tokens: every token
    when they fit, else every k-th (the hover names them all); key-token labels are turned so
    that neighbours do not overlap."""
    step = max(1, math.ceil(len(tokens) / max_ticks))
    shown = list(range(0, len(tokens), step))
    axis = {
        "tickmode": "array",
        "tickvals": [offset + i for i in shown],
        "ticktext": [_tick_label(tokens[i]) for i in shown],
    }
    return {**axis, "tickangle": -60} if x else axis


def _check_head(maps: AttentionMaps, layer: int, head: int | None = None) -> None:
    layers, heads = maps.maps.shape[:2]
    if not 0 <= layer < layers:
        raise LlmoptError(f"layer {layer} does not exist; the model has layers 0..{layers - 1}")
    if head is not None and not 0 <= head < heads:
        raise LlmoptError(f"head {head} does not exist; each layer has heads 0..{heads - 1}")


def view(maps: AttentionMaps, start: int = 0, size: int | None = None) -> AttentionMaps:
    """The part of ``maps`` a figure draws: the window ``start, size`` when a size is given,
    else the whole map, except that a causal map longer than ``DEFAULT_WINDOW`` tokens is
    shown through a window of that size from ``start`` (a larger map is unreadable)."""
    from llmopt.attention import DEFAULT_WINDOW, attention_window

    if size is None:
        if not (maps.causal and maps.n_tokens > DEFAULT_WINDOW):
            return maps
        size = DEFAULT_WINDOW
    return attention_window(maps, start, size)


def _attention_heatmap(
    z: np.ndarray, tokens: list[str], maps: AttentionMaps, **kwargs
) -> go.Heatmap:
    """One map; a causal model's masked cells are NaN, so they are left blank. Tokens come
    from typed text: the hover shows them as text, not HTML."""
    from llmopt.attention import masked

    n = len(tokens)
    tokens = [_escape(t) for t in tokens]
    q_tok = np.array([[tokens[i]] * n for i in range(n)])
    k_tok = np.array([tokens] * n)
    positions = list(range(maps.offset, maps.offset + n))
    return go.Heatmap(
        z=masked(maps, z),
        x=positions,
        y=positions,
        hoverongaps=False,
        customdata=np.dstack([q_tok, k_tok]),
        hovertemplate="query %{customdata[0]} (%{y})<br>key %{customdata[1]} (%{x})"
        "<br>weight %{z:.3f}<extra></extra>",
        **kwargs,
    )


def attention_figure(
    maps: AttentionMaps,
    layer: int,
    head: int,
    *,
    title: str | None = None,
    start: int = 0,
    size: int | None = None,
) -> go.Figure:
    """One head's attention: x = attended-to (key) tokens, y = query tokens, row 0 on top;
    the window ``start, size`` of the text (see ``view``), a causal model's upper triangle blank.

    Raises:
        LlmoptError: a layer or head the maps do not have.
    """
    _check_head(maps, layer, head)
    maps = view(maps, start, size)
    fig = go.Figure(
        _attention_heatmap(
            maps.maps[layer, head],
            maps.tokens,
            maps,
            colorscale=SEQUENTIAL,
            zmin=0,
            zmax=1,
            colorbar={"title": "weight"},
        )
    )
    fig.update_layout(
        title=title or f"Attention — layer {layer}, head {head}",
        xaxis={
            "title": "Key token (attended to)",
            **_token_axis(maps.tokens, x=True, offset=maps.offset),
        },
        yaxis={
            "title": "Query token",
            "autorange": "reversed",
            **_token_axis(maps.tokens, offset=maps.offset),
        },
        height=520,
    )
    return fig


def attention_compare_figure(
    base: AttentionMaps,
    other: AttentionMaps,
    layer: int,
    head: int,
    *,
    start: int = 0,
    size: int | None = None,
) -> go.Figure:
    """Baseline, compressed and compressed − baseline attention of one head, side by side,
    over the window ``start, size`` (see ``view``); a causal model's upper triangle is blank
    in all three, the difference included.

    Raises:
        LlmoptError: maps of different shapes, or a layer or head they do not have.
    """
    if base.maps.shape != other.maps.shape:
        raise LlmoptError("compare attention of a model and a compressed copy on the same text")
    _check_head(base, layer, head)
    base, other = view(base, start, size), view(other, start, size)
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
        _attention_heatmap(a, base.tokens, base, coloraxis="coloraxis"),
        row=1,
        col=1,
    )
    fig.add_trace(_attention_heatmap(b, other.tokens, other, coloraxis="coloraxis"), row=1, col=2)
    fig.add_trace(_attention_heatmap(diff, base.tokens, base, coloraxis="coloraxis2"), row=1, col=3)
    for col in (1, 2, 3):  # a third of the width each: a few labels, query tokens at the left
        fig.update_xaxes(
            title_text="Key token",
            row=1,
            col=col,
            **_token_axis(base.tokens, 5, x=True, offset=base.offset),
        )
        fig.update_yaxes(
            title_text="Query token" if col == 1 else None,
            autorange="reversed",
            row=1,
            col=col,
            showticklabels=col == 1,
            **_token_axis(base.tokens, 16, offset=base.offset),
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


def attention_heads_figure(
    maps: AttentionMaps, layer: int, *, start: int = 0, size: int | None = None
) -> go.Figure:
    """Every head of one layer in a grid (shared colour scale 0..1), over the window
    ``start, size`` (see ``view``).

    Raises:
        LlmoptError: a layer the maps do not have.
    """
    _check_head(maps, layer)
    maps = view(maps, start, size)
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
            _attention_heatmap(maps.maps[layer, h], maps.tokens, maps, coloraxis="coloraxis"),
            row=r,
            col=c,
        )
        fig.update_xaxes(
            title_text="Key token" if r == rows else None,
            row=r,
            col=c,
            showticklabels=few,
            **_token_axis(maps.tokens, 6, x=True, offset=maps.offset),
        )
        fig.update_yaxes(
            title_text="Query token" if c == 1 else None,
            autorange="reversed",
            row=r,
            col=c,
            showticklabels=few,
            **_token_axis(maps.tokens, 6, offset=maps.offset),
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
