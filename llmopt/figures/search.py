"""The search's Pareto plot: every candidate's size against its validation accuracy (a causal
LM: its validation perplexity), uniform settings beside per-layer ones, the tolerance line, the
pick and the best uniform setting."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from llmopt.figures.common import MB, PALETTE
from llmopt.figures.results import _escape

FAMILIES = {"uniform": ("Uniform settings", "circle"), "per-layer": ("Per-layer", "diamond")}


def perplexity(mean_nll: float) -> float:
    """exp of a mean NLL per token; inf (a point not drawn) where a broken candidate's NLL is
    beyond what a float holds (math.exp raises above ~709.78)."""
    return math.exp(mean_nll) if mean_nll < 709.0 else math.inf


def search_figure(result) -> go.Figure:
    """Scatter of a ``SearchResult``'s candidates (size in MB across, validation accuracy up).

    Filled markers met the tolerance (the upper end of the loss interval within it), open
    ones did not; the hover holds each candidate's label, its loss and paired 95% interval.
    A dashed line marks the lowest accuracy the tolerance allows; a grey line joins the
    candidates no other beats on both size and accuracy (the Pareto front). A causal LM's
    search (``result.metric == "nll"``) is drawn as validation perplexity (exp of the mean NLL
    per token, lower is better), the dashed line the highest perplexity the tolerance allows.
    """
    from llmopt.stats import pareto_mask

    lm = result.metric == "nll"
    value = perplexity if lm else float  # what the y axis shows of a metric
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
                y=[value(c.metric) for c in chosen],
                mode="markers",
                name=name,
                marker={
                    "symbol": [symbol if c.accepted else f"{symbol}-open" for c in chosen],
                    "size": 11,
                    "color": colour,
                    "line": {"width": 2, "color": colour},
                },
                customdata=[[_hover(c, lm)] for c in chosen],
                hovertemplate="%{customdata[0]}<extra></extra>",
            )
        )
    if cands:
        x = np.array([c.size_bytes / MB for c in cands])
        y = np.array([value(c.metric) for c in cands])
        front = pareto_mask(x, y, x_higher=False, y_higher=not lm)
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
                x=[cand.size_bytes / MB], y=[value(cand.metric)], mode="markers", name=name,
                marker={"symbol": symbol, "size": 18, "color": "#2ca02c",
                        "line": {"width": 2, "color": "#2ca02c"}},
                customdata=[[_hover(cand, lm)]], hovertemplate="%{customdata[0]}<extra></extra>",
            )
        )  # fmt: skip
    if lm:
        limit, what, rows = perplexity(result.baseline + result.allowed), "perplexity ≤", "texts"
    else:
        limit, what, rows = result.baseline - result.allowed, "accuracy ≥", "rows"
    fig.add_hline(
        y=limit, line={"dash": "dash", "color": "#d62728"},
        annotation_text=f"tolerance: {what} {limit:.4f}",
    )  # fmt: skip
    fig.add_hline(
        y=value(result.baseline), line={"dash": "dot", "color": PALETTE["baseline"]},
        annotation_text=f"base model {value(result.baseline):.4f}",
        annotation_position="bottom right",  # the tolerance's label sits above its line
    )  # fmt: skip
    fig.update_layout(
        title=f"Search: {len(cands)} candidates on {result.n_validation} validation {rows}",
        xaxis_title="Size (MB)",
        yaxis_title="Validation perplexity" if lm else "Validation accuracy",
        legend={
            "orientation": "h",
            "y": -0.2,
            "title": {"text": "filled: accepted · open: rejected"},
        },
        margin={"t": 60},
    )
    return fig


def _hover(c, lm: bool = False) -> str:
    lo, hi = c.interval
    verdict = "meets" if c.accepted else "misses"
    score = (
        f"perplexity {perplexity(c.metric):.4f} · NLL rise {c.loss:+.4f} nats"
        if lm
        else f"accuracy {c.metric:.4f} · loss {c.loss:+.4f}"
    )
    return (
        f"<b>{_escape(c.label)}</b><br>#{c.number} · {c.size_bytes / MB:.3f} MB<br>{score}<br>"
        f"loss 95% interval [{lo:+.4f}, {hi:+.4f}]: {verdict} the tolerance"
    )
