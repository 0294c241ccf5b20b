"""Figures and tables of evaluation results: ROC, confusion matrices, metrics, size, layer error."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from llmopt import metrics
from llmopt.errors import LlmoptError
from llmopt.evaluation import EvalResult
from llmopt.figures.common import (
    BETTER_WORSE,
    LABEL_CHARS,
    MB,
    PALETTE,
    SEQUENTIAL,
    TABLE_COLUMNS,
    _fmt,
    class_colours,
    model_colour,
    short_label,
)

if TYPE_CHECKING:
    from llmopt.compression import CompressionReport


ROC_DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
ROC_PLOT_PX = 360  # side of the square ROC plot (fits half the page of the wide layout)
LEGEND_ROW_PX = 19  # one line of the legend
LEGEND_ROWS = 22  # more lines than this scroll inside the legend
LEGEND_CHARS = 14  # class names in the ROC legend are cut to this many characters
FULL_WIDTH_CLASSES = 6  # a confusion figure of more classes needs the full page width
FULL_WIDTH_LABEL = 12  # ... and one whose longest label name has more characters
STACK_CLASSES = 12  # a two-panel confusion figure of more classes stacks its panels
TEXT_CLASSES = 12  # cells carry their value up to this many classes (the hover always does)
PAGE_PX = {False: 440, True: 940}  # assumed figure width: half page, full page (wide layout)
CELL_PX = 32  # wished-for cell side; shrinks to fit the width
WISH_SIDE, MIN_SIDE, MAX_SIDE = 260, 160, 720  # side of one heatmap, in pixels
TITLE_PX = 90  # figure title and panel title above a heatmap
AXIS_TITLE_PX = 40
COLOURBAR_PX = 80
PANEL_GAP_PX = 40  # between side-by-side panels: the right one's axis title
CHANGE_SHARE = 0.05  # confusion-change colours saturate at a change of this share of the rows


def roc_figure(results: dict[str, EvalResult]) -> go.Figure:
    """ROC curves of several models on the same rows.

    Convention: with two classes, one curve per model for the positive class (index 1), whose
    AUC equals ``metrics["roc_auc"]``. With more classes, one one-vs-rest curve per model and
    class: colour = class, dash = model, one legend group per model titled with the model's
    macro AUC ``metrics["roc_auc"]`` (a click on it hides the model), the legend below the
    plot, one column per model.

    Args:
        results: {model label: result}; the first is drawn as the baseline.

    Returns:
        The figure, AUC in each legend entry, the chance diagonal dashed.
    """
    fig = go.Figure()
    names = list(next(iter(results.values())).label_names) if results else []
    for i, (label, result) in enumerate(results.items()):
        if len(result.label_names) == 2:
            _add_positive_curve(fig, label, result, i)
        else:
            _add_class_curves(fig, label, result, i)
    curves = len(fig.data)
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="chance (AUC 0.5)",
            line={"color": "grey", "dash": "dash", "width": 1},
            hoverinfo="skip",
            showlegend=len(names) <= 2,  # many classes: the legend lists classes only
        )
    )
    if curves == 0:
        fig.add_annotation(text="ROC undefined: the data has a single class", showarrow=False)
    fig.update_layout(
        xaxis={"title": "False positive rate", "range": [0, 1], "constrain": "domain"},
        yaxis={
            "title": "True positive rate",
            "range": [0, 1],
            "scaleanchor": "x",
            "constrain": "domain",
        },
        width=None,
    )
    if len(names) > 2:
        _multiclass_roc_layout(fig, results)
    else:
        subtitle = f" (positive class: {names[1]})" if len(names) == 2 else ""
        fig.update_layout(
            title=f"ROC curve{subtitle}",
            height=480,
            legend={"x": 0.98, "y": 0.02, "xanchor": "right", "yanchor": "bottom"},
        )
    return fig


def _add_positive_curve(fig: go.Figure, label: str, result: EvalResult, index: int) -> None:
    """One model's ROC curve of the positive class (two classes), coloured by model."""
    curve = result.roc.get(result.label_names[1])
    if curve is None:  # a class absent from (or alone in) the data has no curve
        return
    fig.add_trace(
        go.Scatter(
            x=np.asarray(curve["fpr"]),
            y=np.asarray(curve["tpr"]),
            mode="lines",
            name=f"{label} (AUC {curve['auc']:.3f})",
            line={"color": model_colour(label, index), "dash": "solid"},
            hovertemplate=f"{label}<br>FPR %{{x:.3f}}<br>TPR %{{y:.3f}}<extra></extra>",
        )
    )


def _add_class_curves(fig: go.Figure, label: str, result: EvalResult, index: int) -> None:
    """One model's one-vs-rest curves: colour = class, dash = model, one legend group."""
    names = [str(n) for n in result.label_names]
    colours = class_colours(len(names))
    dash = ROC_DASHES[index % len(ROC_DASHES)]
    title = f"<b>{_escape(label)}</b>, macro AUC {_macro_auc(result)}"
    for j, cls in enumerate(names):
        curve = result.roc.get(cls)
        if curve is None:  # a class absent from (or alone in) the data has no curve
            continue
        fig.add_trace(
            go.Scatter(
                x=np.asarray(curve["fpr"]),
                y=np.asarray(curve["tpr"]),
                mode="lines",
                name=f"{short_label(cls, LEGEND_CHARS)} (AUC {curve['auc']:.3f})",
                legendgroup=label,
                legendgrouptitle_text=title,
                line={"color": colours[j], "dash": dash, "width": 2 if len(names) <= 10 else 1.5},
                hovertemplate=f"{_escape(cls)} · {_escape(label)}<br>AUC {curve['auc']:.3f}"
                "<br>FPR %{x:.3f}<br>TPR %{y:.3f}<extra></extra>",
            )
        )


def _macro_auc(result: EvalResult) -> str:
    """The result's macro ROC AUC, formatted ("n/a" when undefined)."""
    return _fmt(result.metrics.get("roc_auc", float("nan")))


def _multiclass_roc_layout(fig: go.Figure, results: dict[str, EvalResult]) -> None:
    """Title with each model's macro AUC; the legend below the plot, a column per model."""
    macro = " · ".join(f"{_escape(label)} {_macro_auc(r)}" for label, r in results.items())
    classes = max(len(r.label_names) for r in results.values())
    legend_px = min(classes + 1, LEGEND_ROWS) * LEGEND_ROW_PX + 10  # + the group titles
    axis_px = 70  # x tick labels and axis title, between the plot and the legend
    fig.update_xaxes(constraintoward="left")
    fig.update_layout(
        title=f"ROC curves, one-vs-rest per class<br><sup>macro AUC: {macro}</sup>",
        height=TITLE_PX + ROC_PLOT_PX + axis_px + legend_px,
        margin={"t": TITLE_PX, "b": axis_px + legend_px, "l": 55, "r": 10},
        legend={
            "orientation": "h",
            "x": 0,
            "xanchor": "left",
            "y": -axis_px / ROC_PLOT_PX,
            "yanchor": "top",
            "traceorder": "grouped",
            "groupclick": "togglegroup",
            "itemwidth": 30,
            "maxheight": legend_px,
            "font": {"size": 10},
            "grouptitlefont": {"size": 11},
        },
    )


def _escape(text) -> str:
    """``text`` safe inside a plotly hover template (no template fields, no HTML)."""
    return html.escape(str(text)).replace("{", "&#123;")


def needs_full_width(n_classes: int, longest_label: int = 0) -> bool:
    """Whether a confusion figure of ``n_classes`` (label names up to ``longest_label``
    characters) needs the full page width to stay readable, rather than half of it."""
    return n_classes > FULL_WIDTH_CLASSES or longest_label > FULL_WIDTH_LABEL


@dataclass(frozen=True)
class ConfusionLayout:
    """Sizes of a confusion heatmap figure, in pixels (see ``confusion_layout``)."""

    height: int  # of the figure
    side: int  # height of one heatmap (its width is what the page gives)
    gap: int  # between stacked panels (x tick labels of the upper one, title of the lower)
    spacing: float  # between side-by-side panels, as a fraction of the plotting width
    bottom: int  # below the (lower) heatmap: x tick labels and axis title
    tick_font: int
    tick_angle: int  # of the x tick labels: 0, -45 or -90
    tick_step: int  # every how many classes a tick label is shown (1: every class)
    show_text: bool  # every cell carries its value (the hover always does)
    text_font: int
    stacked: bool  # two panels one above the other rather than side by side


def confusion_layout(n_classes: int, longest_label: int, *, panels: int = 2) -> ConfusionLayout:
    """Sizes that keep a confusion figure of ``n_classes`` readable at the width
    ``needs_full_width`` asks for: near-square cells, tick labels that do not overlap, cell
    values only where cells are big enough.

    Args:
        n_classes: rows (and columns) of the matrix.
        longest_label: characters of the longest label name (tick labels are cut to
            ``LABEL_CHARS``).
        panels: heatmaps in the figure, 1 or 2 (side by side; stacked above ``STACK_CLASSES``).
    """
    n = max(n_classes, 1)
    chars = min(max(longest_label, 1), LABEL_CHARS)
    stacked = panels == 2 and n > STACK_CLASSES
    cols = 2 if panels == 2 and not stacked else 1
    paper_px = PAGE_PX[needs_full_width(n, longest_label)] - COLOURBAR_PX
    paper_px -= 7 * chars + AXIS_TITLE_PX  # the left panel's tick labels and axis title
    panel_px = (paper_px - (cols - 1) * PANEL_GAP_PX) / cols
    side = int(max(min(max(CELL_PX * n, WISH_SIDE), panel_px, MAX_SIDE), MIN_SIDE))
    cell = min(side, panel_px) / n
    tick_font = int(min(max(cell * 0.7, 8), 12))
    tick_step = math.ceil(1.2 * tick_font / cell)  # > 1: only every tick_step-th name fits
    text_px = 0.6 * tick_font * chars
    angle = 0 if text_px <= 0.9 * cell else -45 if cell >= 1.8 * tick_font else -90
    tilt = math.radians(-angle)
    bottom = int(text_px * math.sin(tilt) + tick_font * math.cos(tilt)) + 8 + AXIS_TITLE_PX
    gap = bottom + 40 if stacked else 0
    return ConfusionLayout(
        height=TITLE_PX + (2 if stacked else 1) * side + gap + bottom,
        side=side,
        gap=gap,
        spacing=PANEL_GAP_PX / paper_px if cols == 2 else 0.0,
        bottom=bottom,
        tick_font=tick_font,
        tick_angle=angle,
        tick_step=tick_step,
        show_text=n <= TEXT_CLASSES,
        text_font=int(min(max(cell * 0.35, 8), 14)),
        stacked=stacked,
    )


def _class_axis(names: list[str], layout: ConfusionLayout, title: str | None) -> dict:
    """A category axis of class names: every name shown, long ones shortened."""
    return {
        "title_text": title,
        "type": "category",
        "tickmode": "array",
        "tickvals": names[:: layout.tick_step],
        "ticktext": [short_label(n) for n in names[:: layout.tick_step]],
        "tickfont": {"size": layout.tick_font},
        "automargin": True,
    }


def _confusion_customdata(counts: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Per cell (count, share of its true label) for the hover."""
    return np.dstack([counts.astype(int), rates])


def confusion_figure(result: EvalResult, *, title: str | None = None) -> go.Figure:
    """Confusion matrix as counts and as row-normalised rates, side by side (one above the
    other for many classes), sized by ``confusion_layout``.

    Args:
        result: an evaluation result.
        title: figure title (default: the model's name).

    Returns:
        Two heatmaps, values in the cells for few classes; rows are true labels, columns
        predicted labels; the hover names both labels in full.
    """
    counts = np.asarray(result.confusion, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    names = [str(n) for n in result.label_names]
    layout = confusion_layout(len(names), max(map(len, names), default=1))
    fig = _confusion_grid(layout)
    custom = _confusion_customdata(counts, rates)
    panels = [
        (counts, counts.astype(int).astype(str), max(float(counts.max(initial=0)), 1.0)),
        (rates, np.char.mod("%.2f", rates), 1.0),
    ]
    for i, (z, text, top) in enumerate(panels):
        row, col = (i + 1, 1) if layout.stacked else (1, i + 1)
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=names,
                y=names,
                text=text,
                texttemplate="%{text}" if layout.show_text else None,
                textfont={"size": layout.text_font},
                customdata=custom,
                colorscale=SEQUENTIAL,
                colorbar=_colourbar(fig, row, col),
                showscale=i == 1 or not layout.show_text,  # else the cells carry the counts
                zmin=0,
                zmax=top,
                hovertemplate="true %{y}<br>predicted %{x}<br>count %{customdata[0]}"
                " · %{customdata[1]:.1%} of this true label<extra></extra>",
            ),
            row=row,
            col=col,
        )
        shared = not layout.stacked and col == 2  # side by side: rows named once, on the left
        fig.update_xaxes(
            _class_axis(names, layout, "Predicted label"),
            tickangle=layout.tick_angle,
            row=row,
            col=col,
        )
        fig.update_yaxes(
            _class_axis(names, layout, "True label"),
            autorange="reversed",
            showticklabels=not shared,
            row=row,
            col=col,
        )
    fig.update_layout(
        title=title or f"Confusion matrix — {result.name or 'model'}",
        height=layout.height,
        margin={"t": TITLE_PX, "b": layout.bottom, "l": 10, "r": 10},
    )
    return fig


def _confusion_grid(layout: ConfusionLayout) -> go.Figure:
    """The two empty panels of ``confusion_figure``: side by side, or stacked."""
    titles = ("Counts", "Share of each true label")
    if layout.stacked:
        spacing = layout.gap / (2 * layout.side + layout.gap)
        return make_subplots(rows=2, cols=1, subplot_titles=titles, vertical_spacing=spacing)
    return make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=layout.spacing)


def _colourbar(fig: go.Figure, row: int, col: int) -> dict:
    """A colour bar right of the heatmap in (row, col), as tall as it."""
    ref = fig.get_subplot(row, col)
    _, x1 = ref.xaxis.domain
    y0, y1 = ref.yaxis.domain
    return {"x": x1 + 0.01, "xanchor": "left", "y": (y0 + y1) / 2, "len": y1 - y0, "thickness": 14}


def confusion_diff_figure(base: EvalResult, other: EvalResult) -> go.Figure:
    """Compressed minus baseline confusion counts, sized by ``confusion_layout``; values in the
    cells for few classes, always in the hover.

    Colour says better or worse, not up or down: more predictions off the diagonal (errors) or
    fewer on it (correct ones) are red, the opposite blue; the cells show the signed change.
    The colour scale is fixed in share of the rows (``CHANGE_SHARE`` of them is the darkest), so
    one row of 93 looks as small as it is next to 13 rows of 300.

    Raises:
        LlmoptError: if the two results have different labels.
    """
    if list(base.label_names) != list(other.label_names):
        raise LlmoptError("the two results have different labels; evaluate both on one dataset")
    diff = np.asarray(other.confusion, dtype=int) - np.asarray(base.confusion, dtype=int)
    names = [str(n) for n in base.label_names]
    layout = confusion_layout(len(names), max(map(len, names), default=1), panels=1)
    rows = max(int(np.asarray(base.confusion).sum()), 1)
    limit = CHANGE_SHARE * rows  # in rows: the colour of a change depends on its share only
    worse = np.where(np.eye(len(names), dtype=bool), -diff, diff)  # > 0: more errors
    share = f"{CHANGE_SHARE:.0%}"
    fig = go.Figure(
        go.Heatmap(
            z=worse,
            x=names,
            y=names,
            text=np.char.mod("%+d", diff),
            customdata=diff / rows,
            texttemplate="%{text}" if layout.show_text else None,
            textfont={"size": layout.text_font},
            colorscale=BETTER_WORSE,
            zmid=0,
            zmin=-limit,
            zmax=limit,
            colorbar={
                "title": {"text": "share of rows", "side": "right"},
                "tickvals": [-limit, 0, limit],
                "ticktext": [f"{share} better", "same", f"{share} worse"],
                "thickness": 14,
            },
            hovertemplate="true %{y}<br>predicted %{x}<br>change %{text} rows"
            " (%{customdata:+.1%} of all rows)<extra></extra>",
        )
    )
    fig.update_xaxes(_class_axis(names, layout, "Predicted label"), tickangle=layout.tick_angle)
    fig.update_yaxes(
        _class_axis(names, layout, "True label"),
        autorange="reversed",
        scaleanchor="x",  # square cells at any width
        constrain="domain",
        showgrid=False,
        zeroline=False,
    )
    fig.update_xaxes(showgrid=False, zeroline=False, constrain="domain")
    fig.update_layout(
        title="Change in the confusion matrix<br><sup>compressed − baseline counts; red = more "
        f"errors; colours saturate at {share} of the {rows} rows</sup>",
        height=layout.height,
        margin={"t": TITLE_PX, "b": layout.bottom, "l": 10, "r": 10},
    )
    return fig


def _row(result: EvalResult) -> dict:
    row = {k: float(result.metrics.get(k, float("nan"))) for k in metrics.keys()}
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


FACT_LIST_ITEMS = 12  # a list fact (the labels) shows this many values, then the count


def facts_table(facts: dict) -> pd.DataFrame:
    """``llmopt.model_facts`` as a two-column (fact, value) table of display strings."""
    rows = []
    for key, title in FACT_TITLES.items():
        value = facts.get(key)
        if isinstance(value, list):
            value = _list_text(value)
        elif isinstance(value, int):
            value = f"{value:,}"
        rows.append({"fact": title, "value": "n/a" if value is None else str(value)})
    return pd.DataFrame(rows)


def _list_text(values: list, limit: int = FACT_LIST_ITEMS) -> str:
    """Up to ``limit`` values, comma-separated, then how many there are in all."""
    shown = ", ".join(map(str, values[:limit]))
    return shown if len(values) <= limit else f"{shown}, … ({len(values)} in all)"


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
