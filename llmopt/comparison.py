"""Comparing stored runs: the runs table, what differs, metrics side by side with honest
deltas, disagreeing rows, per-class agreement, per-layer views and the lineage layout (which
steps a run adds are ``llmopt.lineage``'s to say).

Everything here works from what the experiment store kept (metrics, probabilities, reports,
masks, the rows' texts), so no model runs; tables come back as pandas frames for any front end.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from llmopt import metrics, stats
from llmopt.data import display_text
from llmopt.evaluation import EvalResult
from llmopt.experiments import RowSet, Run, short_source
from llmopt.lineage import TRAINING, config_steps, describe_training, step_order
from llmopt.lineage import step_change as _recipe_change

# What a scatter axis (or the lineage colour) can show: column -> title.
# Every registered metric (headline ones first), then these measurements; read at each use.
_MEASURED_AXES = {
    "size_mb": "Size (MB)",
    "latency_ms": "Latency (ms per text)",
    "latency_ratio": "Latency relative to its baseline (paired)",
    "agreement": "Agreement with its baseline",
    "mean_kl": "Mean KL from its baseline (nats)",
    "params_nonzero": "Non-zero parameters",
    "mean_rel_error": "Mean relative weight error",
}
AXES = metrics.LiveDict(
    lambda: {**{k: metrics.get(k).title for k in metrics.ranked(None)}, **_MEASURED_AXES}
)
SCORES = metrics.LiveList(lambda: list(metrics.ranked()))  # the metrics a run row holds
BASE_METHOD = "base model"  # the method of an uncompressed model's run
TEXT_CHARS = 160  # of a text in the disagreements table
MAX_DISAGREEMENTS = 500  # rows listed in the disagreements table (the count says how many)


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run: identity, recipe, every axis metric and its accuracy interval."""
    rows = []
    for r in runs:
        own = r.own_metrics
        low, high = (r.intervals.get("accuracy") or [math.nan, math.nan])[:2]
        rows.append(
            {
                "id": r.id,
                "label": r.label,
                "name": r.name,
                "tags": ", ".join(r.tags),
                "created": r.created,
                "model": r.model,
                "dataset": r.dataset,
                "model_short": short_source(r.model),
                "dataset_short": short_source(r.dataset),
                "n": r.n,
                "rows_fingerprint": r.rows_fingerprint,
                "kind": r.kind,
                "method": r.method,
                "steps": config_steps(r.config) or [BASE_METHOD],
                "parent": r.parent,
                "origin": r.origin,
                **{k: _num(own.get(k)) for k in metrics.ranked(None)},  # LM runs' too
                "accuracy_low": _num(low),
                "accuracy_high": _num(high),
                "size_mb": r.size_bytes / 1e6,
                "latency_ms": _num(r.latency_ms),
                "latency_ratio": _latency_ratio(r),
                "latency_simulated": bool(r.latency_simulated),
                "agreement": 1.0 if r.kind == "base" else _num(r.agreement),
                "mean_kl": 0.0 if r.kind == "base" else _num(r.mean_kl),
                "params_nonzero": r.params_nonzero,
                "mean_rel_error": 0.0 if r.kind == "base" else _num(r.mean_rel_error),
                "recipe": json.dumps(r.config, sort_keys=True) if r.config else "",
            }
        )
    columns = ["id", "label", "name", "tags", "created", "model", "dataset", "model_short"]
    columns += ["dataset_short", "n"]
    columns += ["rows_fingerprint", "kind", "method", "steps", "parent", "origin", *SCORES]
    columns += ["accuracy_low", "accuracy_high", *[k for k in AXES if k not in SCORES]]
    columns += ["latency_simulated", "recipe"]
    return pd.DataFrame(rows, columns=list(dict.fromkeys(columns)))


def _latency_ratio(r: Run) -> float:
    """A run's latency over its own baseline's, measured together: comparable across runs
    timed at different moments (1 for a base model and for methods that keep its kernels)."""
    latency = r.latency or {}
    if r.kind == "base" or r.latency_simulated:
        return 1.0
    if latency.get("method") == "paired" and latency.get("ratio") is not None:
        return float(latency["ratio"])
    return math.nan  # timed alone, at another moment than its baseline: no honest ratio


def _num(x) -> float:
    return math.nan if x is None else float(x)


def methods(frame: pd.DataFrame) -> list[str]:
    """Every step name that occurs in a runs frame (for a method filter)."""
    found = {s for steps in frame["steps"] for s in steps}
    order = [BASE_METHOD, *step_order()]
    return [s for s in order if s in found]


def filter_runs(
    frame: pd.DataFrame,
    *,
    models: list[str] | None = None,
    datasets: list[str] | None = None,
    steps: list[str] | None = None,
) -> pd.DataFrame:
    """Runs of any of ``models``, on any of ``datasets``, using any of ``steps`` (None or
    empty: no filter)."""
    keep = np.ones(len(frame), dtype=bool)
    if models:
        keep &= frame["model"].isin(models).to_numpy()
    if datasets:
        keep &= frame["dataset"].isin(datasets).to_numpy()
    if steps:
        keep &= np.array([bool(set(s) & set(steps)) for s in frame["steps"]], dtype=bool)
    return frame[keep]


def pareto(frame: pd.DataFrame, x: str, y: str) -> np.ndarray:
    """Which runs no other run beats on both axes (``stats.HIGHER_IS_BETTER`` says which way)."""
    return stats.pareto_mask(
        frame[x].to_numpy(dtype=float),
        frame[y].to_numpy(dtype=float),
        x_higher=stats.HIGHER_IS_BETTER.get(x, True),
        y_higher=stats.HIGHER_IS_BETTER.get(y, True),
    )


def rows_key(run: Run) -> tuple:
    """What makes two runs comparable: the same rows (texts, labels and order) and the same
    label names in the same order (the columns of their probabilities)."""
    return run.rows_fingerprint, tuple(run.label_names)


def comparable(runs: list[Run]) -> bool:
    """Whether runs can be compared row by row (see ``rows_key``)."""
    return len({rows_key(r) for r in runs}) <= 1


def what_differs(runs: list[Run]) -> pd.DataFrame:
    """The settings that differ between runs: model, dataset, rows and every config field;
    per-layer rules one row per pattern (``layer 'PATTERN'``: its settings), skip patterns as
    one row.

    Returns:
        One row per differing setting, one column per run (its label); empty if none differ.
    """

    from llmopt.compression import CompressionConfig

    off = CompressionConfig().to_dict()  # a field a run's config lacks is at its default
    patterns: list[str] = []  # every per-layer rule's pattern, in the order first seen
    for r in runs:
        rules = (r.config or {}).get("layers")
        if isinstance(rules, dict):
            patterns += [p for p in rules if p not in patterns]

    def settings(r: Run) -> dict:
        config = {**off, **(r.config or {})}
        out = {"model": r.model, "dataset": r.dataset, "rows": f"{r.n} ({r.rows_fingerprint})"}
        out.update({k: config.get(k) for k in sorted(_config_keys(runs) | set(off))})
        rules = out.pop("layers", None) or {}
        for pattern in patterns:
            rule = rules.get(pattern) if isinstance(rules, dict) else None
            out[f"layer {pattern!r}"] = _rule_text(rule) if isinstance(rule, dict) else None
        if out.get("skip") is not None:
            out["skip"] = ", ".join(map(str, out["skip"])) or None
        if out.get(TRAINING):
            out[TRAINING] = describe_training(out[TRAINING])
        return out

    table = {r.label: settings(r) for r in runs}
    keys = list(next(iter(table.values()), {}))
    differing = [
        k for k in keys if len({json.dumps(t[k], default=str) for t in table.values()}) > 1
    ]
    frame = pd.DataFrame(
        {label: [_show(values[k]) for k in differing] for label, values in table.items()},
        index=differing,
    )
    frame.index.name = "setting"
    return frame


def _rule_text(rule: dict) -> str:
    """A per-layer rule's settings, e.g. ``sparsity=0.3, bits=8``."""
    return ", ".join(f"{k}={_show(v)}" for k, v in rule.items()) or "—"


def _config_keys(runs: list[Run]) -> set[str]:
    return {k for r in runs for k in (r.config or {})}


def _show(value) -> str:
    return "—" if value is None else str(value)


def side_by_side(
    runs: list[Run], results: dict[int, EvalResult], reference: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each run's metrics with their 95% intervals and the difference from ``reference``.

    Differences of scores come with the paired bootstrap interval on the shared rows, and the
    accuracy difference with the exact McNemar test. An accuracy difference whose p-value is
    not below ``stats.ALPHA``, or another score's difference whose interval holds 0, is marked
    as noise. Runs on other rows than the reference get no difference (not comparable).

    Returns:
        (cells: metric × run display strings, verdicts: the same shape holding "better",
        "worse", "noise" or "" for each cell, to colour only what is not noise).
    """
    ref_run = next(r for r in runs if r.id == reference)
    ref = results.get(reference)
    cells: dict[str, dict] = {}
    verdicts: dict[str, dict] = {}
    for r in runs:
        res = results.get(r.id)
        same_rows = rows_key(r) == rows_key(ref_run) and res is not None
        paired = test = None
        if r.id != reference and same_rows and ref is not None:
            paired = stats.paired_delta_intervals(res.y_true, ref.y_score, res.y_score)
            test = stats.mcnemar_exact(ref.y_pred == ref.y_true, res.y_pred == res.y_true)
        col, verdict = {}, {}
        for key in SCORES:
            value = r.own_metrics.get(key)
            low, high = (r.intervals.get(key) or [None, None])[:2]
            text = f"{_f(value)} [{_f(low)}, {_f(high)}]"
            verdict[key] = ""
            if paired is not None:
                delta = _num(value) - _num(ref_run.own_metrics.get(key))
                # accuracy: the exact test on the paired predictions; the others: the interval
                noise = not (
                    test.significant if key == "accuracy" else stats.excludes_zero(paired[key])
                )
                text += f" · Δ {delta:+.3f}" + (" (noise)" if noise else "")
                verdict[key] = "noise" if noise else ("better" if delta > 0 else "worse")
            col[key] = text
        mcnemar = ""
        if test is not None:
            mcnemar = f"p = {test.p_value:.3g} (right only: ref. {test.only_a}, this {test.only_b})"
            verdict["mcnemar"] = (
                "noise"
                if not test.significant
                else ("better" if test.only_b > test.only_a else "worse")
            )
        elif r.id == reference:
            mcnemar, verdict["mcnemar"] = "reference", ""
        else:
            mcnemar, verdict["mcnemar"] = "other rows: not comparable", ""
        col["mcnemar"] = mcnemar
        size_delta = (r.size_bytes - ref_run.size_bytes) / 1e6
        col["size_mb"] = f"{r.size_bytes / 1e6:.4g}" + (
            f" · Δ {size_delta:+.3g}" if r.id != reference else ""
        )
        verdict["size_mb"] = (
            ""
            if r.id == reference or size_delta == 0
            else ("better" if size_delta < 0 else "worse")
        )
        col["latency_ms"] = _latency_text(r)
        verdict["latency_ms"] = ""
        col["agreement"] = "—" if r.agreement is None else f"{r.agreement:.3f}"
        verdict["agreement"] = ""
        cells[r.label], verdicts[r.label] = col, verdict
    titles = {**AXES, "mcnemar": "McNemar vs reference"}
    order = [*SCORES, "mcnemar", "size_mb", "latency_ms", "agreement"]
    frame = pd.DataFrame(cells).reindex(order)
    marks = pd.DataFrame(verdicts).reindex(order).fillna("")
    frame.index = marks.index = [titles[k] for k in order]
    return frame, marks


def _f(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _latency_text(r: Run) -> str:
    if r.latency_ms is None:
        return "—"
    method = (r.latency or {}).get("method", "single pass")
    if r.latency_simulated:
        return f"{r.latency_ms:.2f} (same kernels as its baseline)"
    ratio = _latency_ratio(r)
    if not math.isnan(ratio) and r.kind != "base":
        return f"{r.latency_ms:.2f} (paired: {ratio:.2f}× its baseline)"
    return f"{r.latency_ms:.2f} ({method})"


def disagreements(
    runs: list[Run], results: dict[int, EvalResult], rows: RowSet | None
) -> tuple[pd.DataFrame, int]:
    """The rows on which the runs' predictions are not all the same, grouped by true label.

    Returns:
        (table: true label, text (HTML removed, cut to ``TEXT_CHARS``), row number in the
        source, then per run "#<id> says" and "P(true) #<id>"; at most
        ``MAX_DISAGREEMENTS`` rows — the number of disagreeing rows in all).
    """
    first = results[runs[0].id]
    preds = np.stack([results[r.id].y_pred for r in runs])  # (runs, n)
    differ = np.flatnonzero((preds != preds[0]).any(axis=0))
    names = list(first.label_names)
    order = differ[np.lexsort((differ, first.y_true[differ]))]  # by true label, then position
    shown = order[:MAX_DISAGREEMENTS]
    table = pd.DataFrame(
        {
            "true label": [names[t] for t in first.y_true[shown]],
            "text": [
                display_text(rows.texts[i], TEXT_CHARS) if rows is not None else "" for i in shown
            ],
            "row": [int(rows.indices[i]) if rows is not None else int(i) for i in shown],
        }
    )
    for r in runs:
        res = results[r.id]
        table[f"#{r.id} says"] = [names[p] for p in res.y_pred[shown]]
        table[f"P(true) #{r.id}"] = res.y_score[shown, res.y_true[shown]]
    return table, len(differ)


def class_agreement(runs: list[Run], results: dict[int, EvalResult]) -> pd.DataFrame:
    """Per true class: its rows, each run's accuracy on them, and how often all runs agree,
    are all right and are all wrong."""
    first = results[runs[0].id]
    preds = np.stack([results[r.id].y_pred for r in runs])
    agree = (preds == preds[0]).all(axis=0)
    right = preds == first.y_true
    rows = []
    for c, name in enumerate(first.label_names):
        on = first.y_true == c
        if not on.any():
            continue
        row = {"true label": name, "rows": int(on.sum())}
        for r, ok in zip(runs, right, strict=True):
            row[f"accuracy #{r.id}"] = float(ok[on].mean())
        row["all agree"] = float(agree[on].mean())
        row["all right"] = float(right[:, on].all(axis=0).mean())
        row["all wrong"] = float((~right[:, on]).all(axis=0).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def layer_frame(runs: list[Run]) -> pd.DataFrame:
    """Per run and compressed layer: sparsity and relative error (long format, model order)."""
    rows = []
    for r in runs:
        for layer in (r.report or {}).get("rows", []):
            rows.append(
                {
                    "run": r.label,
                    "layer": layer["name"],
                    "sparsity": _num(layer.get("sparsity")),
                    "rel_error": _num(layer.get("rel_error")),
                }
            )
    return pd.DataFrame(rows, columns=["run", "layer", "sparsity", "rel_error"])


def shared_zeros(masks_a: dict, masks_b: dict) -> pd.DataFrame:
    """How many pruned weights two runs share, per weight matrix both pruned.

    Args:
        masks_a, masks_b: ``ExperimentStore.masks`` of two runs.

    Returns:
        One row per matrix: weights, zeros of each, zeros in both, what independent masks of
        those sparsities would share on average (weights · s_a · s_b), and the Jaccard overlap
        (both / either).
    """
    rows = []
    for name, a in masks_a.items():
        b = masks_b.get(name)
        if b is None or tuple(b["shape"]) != tuple(a["shape"]):
            continue
        size = int(a["shape"][0]) * int(a["shape"][1])
        kept_either = int(np.bitwise_count(a["bits"] | b["bits"]).sum())  # padding bits are 0
        both = size - kept_either
        either = a["zeros"] + b["zeros"] - both
        rows.append(
            {
                "matrix": name,
                "weights": size,
                "zeros a": int(a["zeros"]),
                "zeros b": int(b["zeros"]),
                "zeros in both": both,
                "if independent": a["zeros"] * b["zeros"] / size if size else 0.0,
                "overlap (Jaccard)": both / either if either else 1.0,
            }
        )
    columns = ["matrix", "weights", "zeros a", "zeros b", "zeros in both", "if independent"]
    return pd.DataFrame(rows, columns=[*columns, "overlap (Jaccard)"])


def step_change(parent: Run | None, child: Run) -> str:
    """What a run adds to its parent, e.g. '+ 4-bit weights (group 64)' (``llmopt.lineage``)."""
    return _recipe_change(parent.config if parent is not None else None, child.config)


def lineage_layout(runs: list[Run]) -> pd.DataFrame:
    """Where each run sits in the lineage map: ``depth`` (steps from its root) and ``y`` (leaves
    one apart, a parent midway between its children), with its parent and what it added.

    Runs whose parent is not among ``runs`` are roots; roots are stacked one tree after another.
    """
    by_id = {r.id: r for r in runs}
    children: dict[int | None, list[int]] = {}
    for r in runs:
        parent = r.parent if r.parent in by_id else None
        children.setdefault(parent, []).append(r.id)
    place: dict[int, tuple[int, float]] = {}
    next_leaf = [0.0]

    def visit(node: int, depth: int) -> float:
        kids = children.get(node, [])
        if not kids:
            y = next_leaf[0]
            next_leaf[0] += 1
        else:
            y = float(np.mean([visit(k, depth + 1) for k in kids]))
        place[node] = (depth, y)
        return y

    for root in children.get(None, []):
        visit(root, 0)
        next_leaf[0] += 0.5  # a gap between trees
    rows = []
    for r in runs:
        depth, y = place[r.id]
        parent = r.parent if r.parent in by_id else None
        rows.append(
            {
                "id": r.id,
                "depth": depth,
                "y": y,
                "parent": parent,
                "step": step_change(by_id.get(parent), r) if parent else r.method,
            }
        )
    return pd.DataFrame(rows, columns=["id", "depth", "y", "parent", "step"])
