"""The search's Pareto plot: every candidate's size against its validation accuracy, uniform
settings beside per-layer ones, the tolerance line, the pick and the best uniform setting."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from llmopt.figures.common import MB, PALETTE
from llmopt.figures.results import _escape

FAMILIES = {"uniform": ("Uniform settings", "circle"), "per-layer": ("Per-layer", "diamond")}


def search_figure(result) -> go.Figure:
    """Scatter of a ``SearchResult``'s candidates (size in MB across, validation accuracy up).

    Filled markers met the tolerance (the upper end of the loss interval within it), open
    ones did not; the hover holds each candidate's label, its loss and paired 95% interval.
    A dashed line marks the lowest accuracy the tolerance allows; a grey line joins the
    candidates no other beats on both size and accuracy (the Pareto front).
    """
    from llmopt.stats import pareto_mask

    fig = go.Figure()
    cands = result.candidates
    for family, (name, symbol) in FAMILIES.items():
        chosen = [c for c in cands if c.family == family]
        if not chosen:
            continue
        colour = PALETTE["baseline"] if family == "uniform" else PALETTE["compressed"]
        fig.add_trace(
            go.Scatter(
                x=[c.size_bytes / MB for c in chosen],
                y=[c.metric for c in chosen],
                mode="markers",
                name=name,
                marker={
                    "symbol": [symbol if c.accepted else f"{symbol}-open" for c in chosen],
                    "size": 11,
                    "color": colour,
                    "line": {"width": 2, "color": colour},
                },
                customdata=[[_hover(c)] for c in chosen],
                hovertemplate="%{customdata[0]}<extra></extra>",
            )
        )
    if cands:
        x = np.array([c.size_bytes / MB for c in cands])
        y = np.array([c.metric for c in cands])
        front = pareto_mask(x, y, x_higher=False, y_higher=True)
        order = np.argsort(x[front])
        fig.add_trace(
            go.Scatter(
                x=x[front][order], y=y[front][order], mode="lines", name="Pareto front",
                line={"color": "#7f7f7f", "width": 1}, hoverinfo="skip",
            )
        )  # fmt: skip
    for cand, name, symbol in ((result.best, "Pick", "star"),
                               (result.uniform_best, "Best uniform", "square-open")):  # fmt: skip
        if cand is None:
            continue
        fig.add_trace(
            go.Scatter(
                x=[cand.size_bytes / MB], y=[cand.metric], mode="markers", name=name,
                marker={"symbol": symbol, "size": 18, "color": "#2ca02c",
                        "line": {"width": 2, "color": "#2ca02c"}},
                customdata=[[_hover(cand)]], hovertemplate="%{customdata[0]}<extra></extra>",
            )
        )  # fmt: skip
    floor = result.baseline - result.allowed
    fig.add_hline(
        y=floor, line={"dash": "dash", "color": "#d62728"},
        annotation_text=f"tolerance: accuracy ≥ {floor:.4f}",
    )  # fmt: skip
    fig.add_hline(
        y=result.baseline, line={"dash": "dot", "color": PALETTE["baseline"]},
        annotation_text=f"base model {result.baseline:.4f}",
        annotation_position="bottom right",
    )  # fmt: skip
    fig.update_layout(
        title=f"Search: {len(cands)} candidates on {result.n_validation} validation rows",
        xaxis_title="Size (MB)",
        yaxis_title="Validation accuracy",
        legend={"orientation": "h", "y": -0.2},
        margin={"t": 60},
    )
    return fig


def _hover(c) -> str:
    lo, hi = c.interval
    verdict = "meets" if c.accepted else "misses"
    return (
        f"<b>{_escape(c.label)}</b><br>#{c.number} · {c.size_bytes / MB:.3f} MB<br>"
        f"accuracy {c.metric:.4f} · loss {c.loss:+.4f}<br>"
        f"loss 95% interval [{lo:+.4f}, {hi:+.4f}]: {verdict} the tolerance"
    )
