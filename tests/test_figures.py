"""Figures carry the result's numbers, the traces a reader needs, and titled axes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from sklearn import metrics as skm

import llmopt
from llmopt import figures
from llmopt.attention import AttentionMaps, attention_maps
from llmopt.evaluation import EvalResult, compute_metrics, roc_curves
from llmopt.sweep import COLUMNS, pareto_front


def make_result(
    seed: int, k: int = 2, n: int = 80, name: str = "m", names: list[str] | None = None
) -> EvalResult:
    """An EvalResult from random (but informative) scores, built with the evaluate helpers."""
    rng = np.random.default_rng(seed)
    y_true = np.arange(n) % k
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y_true]
    y_score = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y_pred = y_score.argmax(1)
    names = names or [f"class{c}" for c in range(k)]
    return EvalResult(
        y_true=y_true,
        y_score=y_score,
        y_pred=y_pred,
        label_names=names,
        metrics=compute_metrics(y_true, y_score, y_pred),
        confusion=skm.confusion_matrix(y_true, y_pred, labels=list(range(k))),
        roc=roc_curves(y_true, y_score, names),
        latency_ms_per_sample=2.0 + seed,
        size_bytes=1_000_000 * (seed + 1),
        params_total=1000,
        params_nonzero=1000 - 100 * seed,
        name=name,
    )


def axis_title(fig: go.Figure, axis: str) -> str:
    return fig.layout[axis].title.text or ""


def test_roc_binary_one_curve_per_model_with_auc_in_legend():
    results = {"baseline": make_result(0), "compressed": make_result(1)}
    fig = figures.roc_figure(results)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 3  # two models + chance diagonal
    for trace, result in zip(fig.data[:2], results.values(), strict=True):
        assert f"AUC {result.metrics['roc_auc']:.3f}" in trace.name
        np.testing.assert_allclose(trace.x, result.roc["class1"]["fpr"])
        np.testing.assert_allclose(trace.y, result.roc["class1"]["tpr"])
    assert fig.data[0].line.color == figures.PALETTE["baseline"]
    assert fig.data[1].line.color == figures.PALETTE["compressed"]
    assert fig.data[2].line.dash == "dash"
    assert axis_title(fig, "xaxis") == "False positive rate"
    assert axis_title(fig, "yaxis") == "True positive rate"
    assert list(fig.layout.xaxis.range) == [0, 1] and list(fig.layout.yaxis.range) == [0, 1]
    assert fig.layout.title.text


def test_roc_multiclass_one_curve_per_model_and_class():
    results = {"baseline": make_result(0, k=3), "compressed": make_result(1, k=3)}
    fig = figures.roc_figure(results)
    assert len(fig.data) == 2 * 3 + 1
    for i, (label, result) in enumerate(results.items()):
        for c, cls in enumerate(result.label_names):
            trace = fig.data[3 * i + c]
            assert trace.legendgroup == label and cls in trace.name  # model: the legend group
            assert f"AUC {result.roc[cls]['auc']:.3f}" in trace.name


CLASS_COUNTS = [2, 3, 4, 7, 20, 50]


def long_names(k: int) -> list[str]:
    """Label names like a real many-class dataset's, the last one very long."""
    return [f"category_number_{c}" for c in range(k - 1)] + [f"a_really_long_name_{k - 1:02d}x"]


def many_class_pair(k: int, names: list[str] | None = None) -> dict[str, EvalResult]:
    """Baseline and compressed results on k classes, a few rows of each class."""
    n = max(80, 4 * k)
    return {
        "baseline": make_result(0, k=k, n=n, names=names),
        "compressed": make_result(1, k=k, n=n, names=names),
    }


@pytest.mark.parametrize("k", [3, 4, 7, 20, 50])
def test_roc_multiclass_legend_outside_and_one_curve_per_class_and_model(k):
    results = many_class_pair(k, long_names(k))
    fig = figures.roc_figure(results)
    legend = fig.layout.legend
    assert legend.y < 0 and legend.yanchor == "top"  # below the [0, 1] plot, never on it
    assert fig.layout.yaxis.scaleanchor == "x"  # square plot
    curves = [t for t in fig.data if t.showlegend is not False]
    for i, (label, result) in enumerate(results.items()):
        mine = [t for t in curves if t.legendgroup == label]
        assert len(mine) == len(result.roc) == k  # every class that occurs has a curve
        for trace, cls in zip(mine, result.label_names, strict=True):
            assert cls in trace.hovertemplate and label in trace.hovertemplate  # full names
            assert f"AUC {result.roc[cls]['auc']:.3f}" in trace.name
            np.testing.assert_allclose(trace.x, result.roc[cls]["fpr"])
        assert {t.line.dash for t in mine} == {["solid", "dash"][i]}  # dash = model
        macro = f"macro AUC {result.metrics['roc_auc']:.3f}"
        assert macro in mine[0].legendgrouptitle.text
        assert f"{label} {result.metrics['roc_auc']:.3f}" in fig.layout.title.text
    base, other = (
        [t for t in curves if t.legendgroup == label] for label in ("baseline", "compressed")
    )
    assert [t.line.color for t in base] == [t.line.color for t in other]  # colour = class
    assert len({t.line.color for t in base}) == min(k, 24)
    assert fig.layout.legend.groupclick == "togglegroup"  # a click hides a model's curves


def test_roc_multiclass_skips_a_class_that_does_not_occur():
    result = make_result(0, k=4)
    missing = replace(result, roc={c: v for c, v in result.roc.items() if c != "class2"})
    fig = figures.roc_figure({"baseline": missing, "compressed": make_result(1, k=4)})
    groups = [t.legendgroup for t in fig.data if t.legendgroup]
    assert groups.count("baseline") == 3 and groups.count("compressed") == 4


def test_roc_height_grows_with_many_classes_and_binary_keeps_its_legend():
    heights = [figures.roc_figure(many_class_pair(k)).layout.height for k in CLASS_COUNTS]
    assert heights == sorted(heights) and heights[-2] > heights[2]
    binary = figures.roc_figure(many_class_pair(2))
    assert 0 < binary.layout.legend.x <= 1 and 0 <= binary.layout.legend.y <= 1
    assert binary.data[0].legendgroup is None and binary.data[0].line.dash == "solid"


def test_short_label_keeps_both_ends_of_a_long_name():
    assert figures.short_label("class3") == "class3"
    short = figures.short_label("a_really_long_category_name_number_17")
    assert len(short) == figures.LABEL_CHARS and "…" in short
    assert short.startswith("a_really") and short.endswith("_17")


def test_confusion_layout_grows_and_hides_cell_text_for_many_classes():
    layouts = [figures.confusion_layout(k, len(f"class{k - 1}")) for k in CLASS_COUNTS]
    heights = [lay.height for lay in layouts]
    assert heights == sorted(heights) and heights[2] < heights[3] < heights[4] < heights[5]
    long = [figures.confusion_layout(k, 18).height for k in CLASS_COUNTS]
    assert long == sorted(long) and long[3] < long[4] < long[5]
    show = {k: lay.show_text for k, lay in zip(CLASS_COUNTS, layouts, strict=True)}
    assert show[2] and show[4] and show[7] and not show[20] and not show[50]
    for k, lay in zip(CLASS_COUNTS, layouts, strict=True):
        cell = lay.side / k
        assert lay.tick_step == 1  # every class named up to 50 classes
        assert 1.2 * lay.tick_font <= cell * lay.tick_step  # row labels do not overlap
        assert 8 <= lay.tick_font <= 12 and lay.tick_angle in (0, -45, -90)
    assert figures.confusion_layout(100, 18).tick_step > 1  # beyond: every other name
    single = [figures.confusion_layout(k, 18, panels=1).height for k in CLASS_COUNTS]
    assert single == sorted(single)


def test_needs_full_width_above_six_classes_or_with_long_names():
    assert not any(figures.needs_full_width(k) for k in range(1, 7))
    assert all(figures.needs_full_width(k) for k in (7, 20, 50))
    assert figures.needs_full_width(3, len("category_number_17"))
    assert not figures.needs_full_width(2, len("negative"))


@pytest.mark.parametrize("k", CLASS_COUNTS)
def test_confusion_figure_readable_for_many_classes(k):
    result = many_class_pair(k)["baseline"]
    fig = figures.confusion_figure(result)
    counts, rates = fig.data
    np.testing.assert_array_equal(np.asarray(counts.z), result.confusion)
    np.testing.assert_allclose(np.asarray(rates.z).sum(axis=1), 1.0)
    layout = figures.confusion_layout(k, max(map(len, result.label_names)))
    assert fig.layout.height == layout.height
    assert bool(counts.texttemplate) == bool(rates.texttemplate) == (k <= 12)
    assert "%{x}" in counts.hovertemplate and "%{y}" in counts.hovertemplate  # values on hover
    assert list(fig.layout.xaxis.tickvals) == result.label_names  # every class named
    diff = figures.confusion_diff_figure(result, many_class_pair(k)["compressed"])
    assert bool(diff.data[0].texttemplate) == (k <= 12)
    assert (
        diff.layout.height
        == figures.confusion_layout(k, len(result.label_names[-1]), panels=1).height
    )


def test_confusion_heights_grow_with_the_number_of_classes():
    pairs = [many_class_pair(k, long_names(k)) for k in CLASS_COUNTS]
    heights = [figures.confusion_figure(p["baseline"]).layout.height for p in pairs]
    assert heights == sorted(heights) and heights[2] < heights[4] < heights[5]
    diffs = [figures.confusion_diff_figure(*p.values()).layout.height for p in pairs]
    assert diffs == sorted(diffs) and diffs[2] < diffs[4]


@pytest.mark.parametrize("k", [4, 20])
def test_confusion_long_names_are_shortened_in_ticks_full_in_hover(k):
    names = long_names(k)
    base, other = many_class_pair(k, names).values()
    for fig in (figures.confusion_figure(base), figures.confusion_diff_figure(base, other)):
        heatmap = fig.data[0]
        assert list(heatmap.x) == list(heatmap.y) == names  # the hover's %{x} is the full name
        for axis in (fig.layout.xaxis, fig.layout.yaxis):
            ticks = list(axis.ticktext)
            assert list(axis.tickvals) == names
            assert all(len(t) <= figures.LABEL_CHARS for t in ticks)
            assert ticks[-1] != names[-1] and "…" in ticks[-1]
            assert ticks[:-1] == names[:-1]  # short enough names stay whole
        assert fig.layout.xaxis.tickangle in (-45, -90)  # long names never side by side
    assert bool(fig.data[0].texttemplate) == (k == 4)


def test_confusion_counts_and_row_normalised():
    result = make_result(2, k=3)
    fig = figures.confusion_figure(result)
    assert len(fig.data) == 2
    counts, rates = np.asarray(fig.data[0].z), np.asarray(fig.data[1].z)
    np.testing.assert_array_equal(counts, result.confusion)
    np.testing.assert_allclose(rates.sum(axis=1), 1.0)
    np.testing.assert_allclose(rates, result.confusion / result.confusion.sum(1, keepdims=True))
    assert list(fig.data[0].x) == result.label_names == list(fig.data[1].y)
    for axis in ("xaxis", "xaxis2"):
        assert axis_title(fig, axis) == "Predicted label"
    for axis in ("yaxis", "yaxis2"):
        assert axis_title(fig, axis) == "True label"
    assert fig.data[0].texttemplate and fig.layout.title.text


def test_confusion_diff_colours_more_errors_as_worse():
    base, other = make_result(0, k=3), make_result(3, k=3)
    fig = figures.confusion_diff_figure(base, other)
    assert len(fig.data) == 1
    diff = other.confusion - base.confusion
    shown = np.array([[int(t) for t in row] for row in fig.data[0].text])
    np.testing.assert_array_equal(shown, diff)  # the cells show the signed change
    worse = np.asarray(fig.data[0].z)  # colour: > 0 = worse (red end of RdBu_r)
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_array_equal(worse[off], diff[off])  # more errors off the diagonal: worse
    np.testing.assert_array_equal(np.diag(worse), -np.diag(diff))  # fewer correct: worse
    assert fig.data[0].zmid == 0 and fig.data[0].zmin == -fig.data[0].zmax
    assert axis_title(fig, "xaxis") and axis_title(fig, "yaxis")
    with pytest.raises(llmopt.LlmoptError):
        figures.confusion_diff_figure(base, make_result(0, k=2))


def test_metrics_and_delta_tables_hold_the_results_values():
    results = {"baseline": make_result(0), "compressed": make_result(1)}
    table = figures.metrics_table(results)
    assert list(table.index) == ["baseline", "compressed"]
    assert list(table.columns) == figures.TABLE_COLUMNS
    for label, result in results.items():
        for key, value in result.metrics.items():
            assert table.loc[label, key] == value
        assert table.loc[label, "size_mb"] == result.size_bytes / 1e6
        assert table.loc[label, "params_nonzero"] == result.params_nonzero
    delta = figures.delta_table(results["baseline"], results["compressed"])
    assert list(delta.columns) == ["metric", "baseline", "compressed", "delta"]
    row = delta.set_index("metric").loc["accuracy"]
    assert row["baseline"] == results["baseline"].metrics["accuracy"]
    assert row["delta"] == pytest.approx(row["compressed"] - row["baseline"])


def test_size_latency_bars():
    results = {"baseline": make_result(0), "compressed": make_result(1)}
    fig = figures.size_latency_figure(results)
    assert len(fig.data) == 2
    assert list(fig.data[0].y) == [1.0, 2.0]  # MB
    assert list(fig.data[1].y) == [2.0, 3.0]  # ms/sample
    assert "MB" in axis_title(fig, "yaxis") and "ms" in axis_title(fig, "yaxis2")


def test_layer_error_figure_from_a_real_report(tiny_dirs):
    from llmopt.compression import CompressionConfig, compress

    loaded = llmopt.load_model(str(tiny_dirs["bert"]))
    _, report = compress(loaded, CompressionConfig(sparsity=0.5, bits=4))
    fig = figures.layer_error_figure(report)
    assert len(fig.data) == 2
    assert len(fig.data[0].x) == len(report.rows) == 12
    np.testing.assert_allclose(fig.data[0].y, [r["rel_error"] for r in report.rows])
    np.testing.assert_allclose(fig.data[1].y, [r["sparsity"] for r in report.rows])
    assert all(r["name"].endswith(x) for r, x in zip(report.rows, fig.data[0].x, strict=True))
    assert axis_title(fig, "yaxis") and axis_title(fig, "yaxis2") and axis_title(fig, "xaxis")


@pytest.fixture(scope="module")
def maps(tiny_dirs):
    loaded = llmopt.load_model(str(tiny_dirs["bert"]))
    return attention_maps(loaded, "the tea was good and the tea was hot")


def test_attention_figure_one_head(maps):
    fig = figures.attention_figure(maps, 1, 2)
    assert len(fig.data) == 1
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), maps.maps[1, 2])
    assert list(fig.layout.xaxis.ticktext) == maps.tokens  # repeated tokens stay separate
    assert fig.layout.yaxis.autorange == "reversed"
    assert "Key" in axis_title(fig, "xaxis") and "Query" in axis_title(fig, "yaxis")
    with pytest.raises(llmopt.LlmoptError, match="head 4"):
        figures.attention_figure(maps, 0, 4)


def test_attention_compare_and_heads(maps):
    shifted = np.roll(maps.maps, 1, axis=-1)
    other = AttentionMaps(maps.tokens, shifted)
    fig = figures.attention_compare_figure(maps, other, 0, 1)
    assert len(fig.data) == 3
    np.testing.assert_allclose(np.asarray(fig.data[2].z), shifted[0, 1] - maps.maps[0, 1])
    assert fig.layout.coloraxis2.cmid == 0
    heads = figures.attention_heads_figure(maps, 0)
    assert len(heads.data) == maps.maps.shape[1]
    for h, trace in enumerate(heads.data):
        np.testing.assert_array_equal(np.asarray(trace.z), maps.maps[0, h])
    assert axis_title(heads, "xaxis") and axis_title(heads, "yaxis")


def test_drift_figure_axes_and_units():
    drift = np.random.default_rng(0).random((3, 4)) * 0.2
    fig = figures.drift_figure(drift)
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), drift)
    assert axis_title(fig, "xaxis") == "Head" and axis_title(fig, "yaxis") == "Layer"
    assert "bits" in fig.data[0].colorbar.title.text
    assert fig.data[0].texttemplate


def sweep_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for method in ("magnitude", "wanda"):
        for value in (0.0, 0.3, 0.6, 0.9):
            size = 10_000_000 * (1 - 0.8 * value) + rng.integers(0, 100_000)
            rows.append(
                {
                    "knob": "sparsity",
                    "method": method,
                    "value": value,
                    "accuracy": 0.8 - 0.3 * value**2 + 0.02 * rng.random(),
                    "roc_auc": 0.85 - 0.3 * value**2,
                    "f1_macro": 0.8,
                    "agreement": 1 - 0.4 * value,
                    "mean_kl": 0.1 * value,
                    "size_bytes": int(size),
                    "size_mb": size / 1e6,
                    "params_nonzero": 1000,
                    "latency_ms_per_sample": 5.0,
                    "seconds": 1.0,
                }
            )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame.attrs["baseline"] = {"accuracy": 0.81, "size_mb": 10.2, "size_bytes": 10_200_000}
    return frame


def test_sweep_figure_lines_per_method_and_metric():
    frame = sweep_frame()
    fig = figures.sweep_figure(frame)
    assert len(fig.data) == 2 * 2  # (accuracy, size) per method
    first = fig.data[0]
    part = frame[frame["method"] == "magnitude"]
    np.testing.assert_allclose(first.x, part["value"])
    np.testing.assert_allclose(first.y, part["accuracy"])
    assert fig.data[1].yaxis == "y2"  # size on its own axis (the panel below)
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color
    assert axis_title(fig, "xaxis2") and axis_title(fig, "yaxis") and axis_title(fig, "yaxis2")


def test_pareto_figure_marks_the_front_and_the_baseline():
    frame = sweep_frame()
    fig = figures.pareto_figure(frame)
    names = [t.name for t in fig.data]
    assert names[:2] == ["magnitude", "wanda"]
    front = next(t for t in fig.data if t.name == "Pareto frontier")
    both = pd.concat(
        [frame[["size_mb", "accuracy"]], pd.DataFrame([{"size_mb": 10.2, "accuracy": 0.81}])]
    )
    expected = both[pareto_front(both, x="size_mb", y="accuracy")].sort_values("size_mb")
    np.testing.assert_allclose(front.x, expected["size_mb"])
    np.testing.assert_allclose(front.y, expected["accuracy"])
    assert any("baseline" in n for n in names)
    assert axis_title(fig, "xaxis") == "Size (MB)" and axis_title(fig, "yaxis") == "Accuracy"


def test_explainer_figures():
    block = np.zeros((4, 8), dtype=bool)
    block[:, ::2] = True
    fig = figures.mask_figure(block, title="2:4", m=4)
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), block.astype(int))
    assert len(fig.layout.shapes) == 1  # one group boundary inside 8 columns
    assert "50%" in fig.layout.title.text
    grid = np.linspace(-1, 1, 7)
    hist = figures.quant_hist_figure(np.random.default_rng(0).normal(size=200), grid, title="q")
    assert len(hist.data) == 2
    np.testing.assert_allclose(hist.data[1].x, grid)
    s = np.array([4.0, 2.0, 1.0, 1.0])
    spec = figures.spectrum_figure(s, 2)
    np.testing.assert_allclose(spec.data[1].y, 100 * np.cumsum(s**2) / np.sum(s**2))
    assert "90.9%" in spec.layout.annotations[0].text  # (16 + 4) / 22
    for f in (fig, hist, spec):
        assert f.layout.title.text and axis_title(f, "xaxis") and axis_title(f, "yaxis")


def test_facts_table_formats_every_fact():
    from llmopt.figures import facts_table

    table = facts_table({"name": "m", "params_total": 1234567, "labels": ["a", "b"]})
    values = dict(zip(table["fact"], table["value"], strict=True))
    assert values["Name"] == "m" and values["Parameters"] == "1,234,567"
    assert values["Labels"] == "a, b" and values["Layers"] == "n/a"
    many = facts_table({"labels": [f"category_number_{c}" for c in range(50)]})
    labels = dict(zip(many["fact"], many["value"], strict=True))["Labels"]
    assert labels.startswith("category_number_0, ") and labels.endswith("(50 in all)")
    assert "category_number_11" in labels and "category_number_12" not in labels


def test_compare_confusion_row_shortens_long_names_and_names_every_class():
    """Issue 18 item 10: the Compare page's confusion row used the full names as ticks (a thin
    strip beside ~400 px of labels, every other label dropped by plotly); it now shortens them
    like the Compress page, names every class, and keeps the full names for the hover."""
    names = [f"support tickets about a very long-winded topic number {c}" for c in range(7)]
    pair = many_class_pair(7, names)
    fig = figures.confusion_row_figure({"run #1": pair["baseline"], "run #2": pair["compressed"]})
    for trace in fig.data:
        assert list(trace.x) == list(trace.y) == names  # the hover's %{x} / %{y}: full names
    for axis in (fig.layout.xaxis, fig.layout.yaxis, fig.layout.xaxis2):
        assert list(axis.tickvals) == names  # every class has its tick
        assert all(len(t) <= figures.LABEL_CHARS for t in axis.ticktext)
        assert len(set(axis.ticktext)) == 7  # shortened names still tell the classes apart
    assert fig.layout.xaxis.tickangle in (-45, -90)
    assert fig.layout.height >= 7 * 18  # room for one y tick label per class
    assert fig.data[-1].colorbar.nticks <= 6  # a few colour-bar ticks, not overlapping ones


def test_confusion_change_colours_use_a_fixed_share_of_rows():
    """Issue 18 item 19: the colour scale was ±(largest change), so ±1 of 93 rows was as dark as
    ±13 of 300. Now it is fixed in share of rows: the same change in rows is paler on more rows,
    and a change of 1 row of 93 is far from the darkest colour."""

    def pair(n: int, moved: int) -> tuple[EvalResult, EvalResult]:
        base = make_result(0, k=2, n=n)
        confusion = np.asarray(base.confusion).copy()
        confusion[0, 0] -= moved  # ``moved`` rows of class 0 now wrongly predicted as class 1
        confusion[0, 1] += moved
        return base, replace(base, confusion=confusion)

    small = figures.confusion_diff_figure(*pair(93, 1)).data[0]
    large = figures.confusion_diff_figure(*pair(300, 13)).data[0]
    for heatmap, n in ((small, 93), (large, 300)):
        assert heatmap.zmin == -heatmap.zmax
        assert heatmap.zmax == pytest.approx(figures.CHANGE_SHARE * n)  # fixed share of rows
    darkness = [float(np.abs(h.z).max()) / h.zmax for h in (small, large)]
    assert darkness[0] < 0.3 < 0.8 < darkness[1]  # 1 of 93 pale, 13 of 300 dark
    np.testing.assert_allclose(np.asarray(small.customdata)[0], [-1 / 93, 1 / 93])
