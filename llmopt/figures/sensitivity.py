"""The per-layer sensitivity heatmap: units down, levels across, colour = how much worse the
unit alone makes the metric, the paired interval and the proxies on hover."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from llmopt.figures.common import BETTER_WORSE, short_label
from llmopt.figures.results import _escape

ROW_PX = 18  # height per unit, so 36 matrices stay readable
LABEL_CHARS = 34  # unit names are long (encoder.encoder.layer.5.attention.self.query)


def sensitivity_figure(result) -> go.Figure:
    """Heatmap of a ``SensitivityResult``: one row per unit, one column per level.

    The colour is the loss (accuracy drop in points for a classifier, NLL rise in nats per
    token for a causal LM; red = worse, blue = better, white = no change), centred at 0; the
    hover shows the full unit name, the delta with its paired 95% interval, and the proxies.
    """
    names = list(dict.fromkeys(r.name for r in result.layers))
    levels = list(result.levels)
    by = {(r.name, r.level): r for r in result.layers}
    accuracy = result.metric == "accuracy"
    scale = 100.0 if accuracy else 1.0
    what = "accuracy drop (points)" if accuracy else "NLL rise (nats/token)"
    z = np.full((len(names), len(levels)), np.nan)
    hover = np.full((len(names), len(levels)), "", dtype=object)
    for i, n in enumerate(names):
        for j, lv in enumerate(levels):
            r = by.get((n, lv))
            if r is None:
                continue
            z[i, j] = scale * result.loss(r)
            lo, hi = (scale * v for v in r.interval)
            lines = [
                f"<b>{_escape(n)}</b>",
                f"level {lv:g}",
                f"{result.metric} change {scale * r.delta:+.3f} [{lo:+.3f}, {hi:+.3f}] (95%)",
            ]
            lines += [f"{_escape(k)} {v:.4g}" for k, v in r.extra.items()]
            lines += [f"{_escape(k)} {v:.4g}" for k, v in r.proxies.items()]
            hover[i, j] = "<br>".join(lines)
    finite = np.abs(z[np.isfinite(z)])
    bound = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    prefix, labels = unit_labels(names)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"{lv:g}" for lv in levels],
            y=labels,
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            colorscale=BETTER_WORSE,
            zmid=0.0,
            zmin=-bound,
            zmax=bound,
            colorbar={"title": {"text": what}},
            xgap=1,
            ygap=1,
        )
    )
    level_title = {"prune": "sparsity", "quantize": "bits", "lowrank": "rank"}.get(
        result.kind, "level"
    )
    fig.update_layout(
        title=f"Sensitivity: {what} of each {_escape(result.granularity)} compressed alone "
        f"({_escape(result.method)}, {result.n_validation} validation rows)",
        xaxis_title=level_title,
        yaxis={
            "autorange": "reversed",
            "type": "category",
            "title": result.granularity + (f" (under {_escape(prefix)})" if prefix else ""),
        },
        height=max(320, 120 + ROW_PX * len(names)),
        margin={"l": 10, "r": 10, "t": 60, "b": 40},
    )
    return fig


def unit_labels(names: list[str]) -> tuple[str, list[str]]:
    """(a dotted prefix dropped from every tick, or "", each name's tick label).

    Names are shortened in the middle when long; when that makes two ticks equal (cutting
    ``encoder.encoder.layer.3.attention.self.query`` drops the block number, so every block's
    query got one tick and one row for six), the prefix every name shares goes instead, and
    the names stay whole should the shortened ones still collide.
    """
    labels = [short_label(n, LABEL_CHARS) for n in names]
    prefix = ""
    if len(set(labels)) < len(set(names)):
        parts = [n.split(".") for n in names]
        common = 0
        while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
            common += 1
        prefix = ".".join(parts[0][:common]) + "." if common else ""
        labels = [short_label(n.removeprefix(prefix), LABEL_CHARS) for n in names]
        if len(set(labels)) < len(set(names)):
            prefix, labels = "", list(names)
    return prefix, [_escape(label) for label in labels]
