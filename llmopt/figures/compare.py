"""Figures of many stored runs: a scatter of any two metrics with its Pareto front, the lineage
map, confusion matrices in a row, per-layer error and sparsity, and shared pruning zeros."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from llmopt.evaluation import EvalResult
from llmopt.figures.common import PALETTE, SEQUENTIAL, model_colour, short_label
from llmopt.figures.results import (
    TITLE_PX,
    _class_axis,
    _common_prefix,
    _escape,
    confusion_layout,
)

GROUP_COLOURS = list(qualitative.D3) + list(qualitative.Dark24)
SELECTED = {"symbol": "circle-open", "size": 18, "color": "black", "line": {"width": 2}}
LINEAGE_ROW_PX = 22  # vertical room per leaf of the lineage map
LINEAGE_LABEL_CHARS = 26  # a node's label: its id and what it added, shortened
LINEAGE_PX = (380, 1400)  # its height: at least, at most (many runs share the room)
LINEAGE_TEXT_NODES = 150  # more nodes carry their run id in the hover only (text draws slowly)
FRACTION_PAD = 0.02  # the least padding of a fraction axis around its data
ROW_TICK_PX = 18  # height per class of the confusion row (one tick label each)


def _axis_title(key: str) -> str:
    from llmopt.comparison import AXES

    return AXES.get(key, key)


def _fraction_axis(key: str) -> bool:
    """Whether an axis holds fractions in [0, 1] (accuracy, F1, agreement, …)."""
    from llmopt import metrics

    known = metrics.all_metrics(None)
    return key == "agreement" or (key in known and not known[key].unit)


def _fraction_range(values: pd.Series) -> list[float] | None:
    """An axis range for fractions: the data with some padding, never past 0 or 1 (plotly's
    own range for runs all at 1.0 ran from 0.5 to 2)."""
    finite = values.to_numpy(dtype=float)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return None
    low, high = float(finite.min()), float(finite.max())
    pad = max(0.05 * (high - low), FRACTION_PAD)
    return [max(0.0, low - pad), min(1.0, high + pad)]


def _hover(frame: pd.DataFrame) -> list[str]:
    """Each run's recipe and identity, for a hover."""
    return [
        f"<b>{_escape(r.label)}</b><br>{_escape(r.method)}<br>model {_escape(r.model)}"
        f"<br>dataset {_escape(r.dataset)} · {r.n} rows"
        + (" · latency: same kernels as its baseline" if r.latency_simulated else "")
        for r in frame.itertuples()
    ]


def runs_scatter_figure(
    frame: pd.DataFrame,
    x: str,
    y: str,
    *,
    front: np.ndarray | None = None,
    selected: list[int] = (),
    colour: str = "model",
) -> go.Figure:
    """Every run as a point of two metrics; colour = ``colour`` column; base models as
    diamonds; the Pareto front joined by a line; selected runs ringed.

    Args:
        frame: ``llmopt.comparison.runs_frame`` rows.
        x, y: columns (keys of ``llmopt.comparison.AXES``).
        front: bool per row, True on the Pareto front (``comparison.pareto``); a line joins
            the front's runs of each ``rows_fingerprint`` (runs on other rows do not compare).
        selected: run ids to ring.
        colour: the column that groups the points (model, dataset, method).

    Returns:
        Points carry their run id as ``customdata[0]`` (for selection events).
    """
    fig = go.Figure()
    frame = frame.reset_index(drop=True)
    hover = np.array(_hover(frame), dtype=object)
    for i, (group, part) in enumerate(frame.groupby(colour, sort=False)):
        idx = part.index.to_numpy()
        fig.add_trace(
            go.Scatter(
                x=part[x],
                y=part[y],
                mode="markers",
                name=short_label(str(group), 40),
                marker={
                    "color": GROUP_COLOURS[i % len(GROUP_COLOURS)],
                    "size": 10,
                    "symbol": ["diamond" if k == "base" else "circle" for k in part["kind"]],
                    "line": {"width": 0.5, "color": "white"},
                },
                customdata=np.stack([part["id"].to_numpy(), hover[idx]], axis=1),
                hovertemplate="%{customdata[1]}<br>"
                + f"{_escape(_axis_title(x))} %{{x:.4g}}<br>{_escape(_axis_title(y))} %{{y:.4g}}"
                + "<extra></extra>",
            )
        )
    if front is not None and front.any():
        fronts = frame[front]
        by = "rows_fingerprint" if "rows_fingerprint" in fronts else None
        parts = fronts.groupby(by, sort=False) if by else [(None, fronts)]
        for j, (_, part) in enumerate(parts):  # one front per set of comparable runs
            line = part.sort_values(x)
            fig.add_trace(
                go.Scatter(
                    x=line[x],
                    y=line[y],
                    mode="lines",
                    name="Pareto front",
                    legendgroup="front",
                    showlegend=j == 0,
                    line={"color": "black", "width": 1.5, "dash": "dot"},
                    hoverinfo="skip",
                )
            )
    ringed = frame[frame["id"].isin(list(selected))]
    if len(ringed):
        fig.add_trace(
            go.Scatter(
                x=ringed[x],
                y=ringed[y],
                mode="markers",
                name="selected",
                marker=SELECTED,
                customdata=np.stack([ringed["id"].to_numpy(), hover[ringed.index]], axis=1),
                hovertemplate="%{customdata[1]}<extra>selected</extra>",
            )
        )
    fig.update_layout(
        title=f"{_axis_title(y)} against {_axis_title(x)} (Pareto front dotted)",
        xaxis_title=_axis_title(x),
        yaxis_title=_axis_title(y),
        height=520,
        legend={"title": colour.removesuffix("_short"), "orientation": "h", "y": -0.2},
        clickmode="event+select",
        dragmode="lasso",
    )
    for axis, key in (("xaxis", x), ("yaxis", y)):
        if _fraction_axis(key) and (fitted := _fraction_range(frame[key])) is not None:
            fig.update_layout({axis: {"range": fitted}})
            fig.update_traces(cliponaxis=False)  # points at 1.0 sit whole on the axis's end
    return fig


def _node_label(step) -> str:
    """A lineage node's short description (what it added), e.g. '50% wanda pruning', cut at
    its end (a description reads from its start) by the one shortening helper."""
    text = "" if step is None or (isinstance(step, float) and np.isnan(step)) else str(step)
    return short_label(text, LINEAGE_LABEL_CHARS, keep_end=False)


def lineage_figure(
    layout: pd.DataFrame, frame: pd.DataFrame, metric: str, *, selected: list[int] = ()
) -> go.Figure:
    """The model map: each run a node placed by ``comparison.lineage_layout``, joined to the
    run it was derived from; node colour = ``metric``; base models as squares.

    Returns:
        Nodes carry their run id as ``customdata[0]``.
    """
    nodes = layout.merge(frame, on="id", how="left", suffixes=("", "_run"))
    where = nodes.set_index("id")[["depth", "y"]]
    xs, ys = [], []
    for row in nodes.itertuples():
        if row.parent is not None and not pd.isna(row.parent) and int(row.parent) in where.index:
            px, py = where.loc[int(row.parent)]
            xs += [px, row.depth, None]
            ys += [py, row.y, None]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines",
            line={"color": "#bbbbbb", "width": 1},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    values = nodes[metric].astype(float)
    hover = [
        f"<b>{_escape(r.label)}</b><br>{_escape(r.step)}<br>{_escape(r.model)} · "
        f"{_escape(r.dataset)} ({r.n} rows)"
        for r in nodes.itertuples()
    ]
    fig.add_trace(
        go.Scatter(
            x=nodes["depth"],
            y=nodes["y"],
            mode="markers+text" if len(nodes) <= LINEAGE_TEXT_NODES else "markers",
            text=[f"#{r.id} {_escape(_node_label(r.step))}" for r in nodes.itertuples()]
            if len(nodes) <= LINEAGE_TEXT_NODES
            else None,
            textposition="middle right",
            textfont={"size": 10},
            showlegend=False,
            marker={
                "color": values,
                "colorscale": "Viridis",
                "size": [16 if i in set(selected) else 11 for i in nodes["id"]],
                "symbol": ["square" if k == "base" else "circle" for k in nodes["kind"]],
                "line": {
                    "width": [2.5 if i in set(selected) else 0.5 for i in nodes["id"]],
                    "color": "black",
                },
                "colorbar": {"title": _axis_title(metric)},
                "showscale": True,
            },
            customdata=np.stack([nodes["id"].to_numpy(), np.array(hover, dtype=object)], axis=1),
            hovertemplate="%{customdata[1]}<br>"
            + f"{_escape(_axis_title(metric))} %{{marker.color:.4g}}<extra></extra>",
        )
    )
    leaves = max(float(nodes["y"].max()) + 1 if len(nodes) else 1, 1)
    height = int(min(max(LINEAGE_ROW_PX * leaves + 120, LINEAGE_PX[0]), LINEAGE_PX[1]))
    depth = int(nodes["depth"].max()) if len(nodes) else 0
    fig.update_xaxes(
        title_text="steps from the base model (low-rank → prune → quantize → …)",
        tickmode="array",
        tickvals=list(range(depth + 1)),
        range=[-0.3, depth + 0.7],
    )
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_layout(
        title=f"Lineage: how each model was derived (colour = {_axis_title(metric)})",
        height=height,
        clickmode="event+select",
    )
    return fig


def confusion_row_figure(results: dict[str, EvalResult]) -> go.Figure:
    """The confusion counts of several models side by side, on one colour scale.

    Class names are shortened on the axes as on the Compress page (``short_label``; the hover
    names them in full); every class keeps its tick label; the rows are tall enough for them.
    """
    labels = list(results)
    first = next(iter(results.values()))
    names = [str(n) for n in first.label_names]
    layout = confusion_layout(len(names), max(map(len, names), default=1), panels=1)
    side = max(layout.side, ROW_TICK_PX * len(names))  # one readable tick label per class
    font = min(layout.tick_font, max(8, int(side / len(names) / 1.3)))
    axis = {**_class_axis(names, layout, None), "tickfont": {"size": font}}
    axis.update(tickvals=names, ticktext=[short_label(n) for n in names])  # every class
    longest = max(len(t) for t in axis["ticktext"])
    angle = layout.tick_angle or (-45 if len(labels) > 1 and longest * len(names) > 30 else 0)
    top = max(int(np.max(r.confusion, initial=0)) for r in results.values()) or 1
    fig = make_subplots(
        rows=1,
        cols=len(labels),
        subplot_titles=[short_label(label, 28) for label in labels],
        horizontal_spacing=0.03,
    )
    for i, (label, result) in enumerate(results.items(), start=1):
        counts = np.asarray(result.confusion, dtype=int)
        fig.add_trace(
            go.Heatmap(
                z=counts,
                x=names,
                y=names,
                text=counts.astype(str),
                texttemplate="%{text}" if layout.show_text else None,
                textfont={"size": layout.text_font},
                colorscale=SEQUENTIAL,
                zmin=0,
                zmax=top,
                showscale=i == len(labels),
                colorbar={"title": {"text": "rows", "side": "right"}, "nticks": 6, "thickness": 14},
                hovertemplate=f"{_escape(label)}<br>true %{{y}}<br>predicted %{{x}}<br>"
                "count %{z}<extra></extra>",
            ),
            row=1,
            col=i,
        )
        fig.update_xaxes(axis, title_text="Predicted", tickangle=angle, row=1, col=i)
        fig.update_yaxes(
            axis,
            autorange="reversed",
            showticklabels=i == 1,
            title_text="True" if i == 1 else None,
            row=1,
            col=i,
        )
    fig.update_layout(
        title="Confusion matrices (counts)",
        height=max(TITLE_PX + side + layout.bottom, 340),
        margin={"t": TITLE_PX, "b": layout.bottom, "l": 10, "r": 10},
    )
    return fig


def layer_compare_figure(layers: pd.DataFrame) -> go.Figure:
    """Relative weight error (bars) and sparsity (lines) per layer, one colour per run.

    Args:
        layers: ``llmopt.comparison.layer_frame`` (run, layer, sparsity, rel_error).
    """
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("Relative error ‖W−Ŵ‖/‖W‖", "Sparsity (fraction of zeros)"),
    )
    names = list(dict.fromkeys(layers["layer"]))
    prefix = _common_prefix(names)
    short = {n: n[len(prefix) :] or n for n in names}
    for i, (run, part) in enumerate(layers.groupby("run", sort=False)):
        colour = model_colour(str(run), i + 1)  # index 0 is the baseline's blue
        xs = [short[n] for n in part["layer"]]
        fig.add_trace(
            go.Bar(
                x=xs, y=part["rel_error"], name=str(run), marker_color=colour, legendgroup=str(run)
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=part["sparsity"],
                name=str(run),
                mode="lines+markers",
                line={"color": colour},
                legendgroup=str(run),
                showlegend=False,
            ),
            row=2,
            col=1,
        )
    fig.update_xaxes(
        type="category", row=2, col=1, title_text=f"Layer{f' (under {prefix})' if prefix else ''}"
    )
    fig.update_yaxes(range=[0, 1], row=2, col=1)
    fig.update_layout(
        title="Per layer, side by side",
        height=660,
        barmode="group",
        margin={"t": 130},
        legend={"orientation": "h", "y": 1.12, "yanchor": "bottom", "x": 0},
    )
    return fig


def shared_zeros_figure(table: pd.DataFrame, label_a: str, label_b: str) -> go.Figure:
    """Per weight matrix: the fraction of weights both runs pruned, against what two
    independent masks of the same sparsities would share.

    Args:
        table: ``llmopt.comparison.shared_zeros``.
    """
    prefix = _common_prefix(list(table["matrix"]))
    xs = [m[len(prefix) :] or m for m in table["matrix"]]
    weights = table["weights"].to_numpy(dtype=float)
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=xs,
            y=table["zeros in both"] / weights,
            name="pruned by both",
            marker_color=PALETTE["compressed"],
            customdata=np.stack([table["zeros in both"], table["overlap (Jaccard)"]], axis=1),
            hovertemplate="%{x}<br>%{customdata[0]:,} weights pruned by both (%{y:.1%})"
            "<br>Jaccard overlap %{customdata[1]:.3f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=table["if independent"] / weights,
            name="if the masks were independent",
            mode="markers",
            marker={"symbol": "line-ew-open", "size": 18, "color": "black"},
            hovertemplate="%{x}<br>independent masks would share %{y:.1%}<extra></extra>",
        )
    )
    under = f" (under {prefix})" if prefix else ""
    fig.update_xaxes(type="category", title_text=f"Weight matrix{under}")
    fig.update_yaxes(title_text="Fraction of the matrix's weights", rangemode="tozero")
    fig.update_layout(
        title=f"Zeros shared by {short_label(label_a, 30)} and {short_label(label_b, 30)}",
        height=420,
        legend={"orientation": "h", "y": 1.1},
    )
    return fig
