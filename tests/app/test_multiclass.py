"""Multi-class data in the dashboard (3, 7 and 22 classes, encoder + trained head on the tiny
BERT) and texts with HTML in them, driven through AppTest."""

from __future__ import annotations

import csv

import pytest
from app_data import (
    class_texts,
    decode,
    figure,
    figures,
    label_names,
    spec,
    table,
    title,
    write_class_csv,
)
from app_settings import APP, TIMEOUT

from llmopt.figures import confusion_layout, needs_full_width

CONFUSION = ("Baseline", "Compressed", "Change in the confusion matrix")


@pytest.fixture()
def class_env(tiny_env, tmp_path, monkeypatch):
    """Start the sidebar on 'Encoder + trained head' over the tiny BERT and a CSV of k classes
    (every test row evaluated); returns a function k -> a fresh AppTest, not yet run."""
    from streamlit.testing.v1 import AppTest

    def start(k: int):
        path = write_class_csv(tmp_path / f"classes_{k}.csv", k, per_class=10)
        monkeypatch.setenv("LLMOPT_DEFAULT_MODEL", f"encoder:{tiny_env['model']}")
        monkeypatch.setenv("LLMOPT_DEFAULT_DATASET", str(path))
        monkeypatch.setenv("LLMOPT_DEFAULT_ROWS", "1000")  # more than the test split: all of it
        monkeypatch.setenv("LLMOPT_EXPERIMENTS", str(tmp_path / f"runs_{k}.sqlite"))
        return AppTest.from_file(APP, default_timeout=TIMEOUT)

    return start


def ok(at, where: str) -> None:
    assert not at.exception, (where, at.exception)
    assert not at.error, (where, [e.value for e in at.error])


def in_columns(at) -> list[str]:
    """Titles of the figures drawn inside st.columns (half the page or less)."""
    return [title(spec(el)) for col in at.main.columns for el in col.get("plotly_chart")]


@pytest.mark.parametrize("k", [3, 7, 22])
def test_every_page_with_many_classes(class_env, k):
    names = label_names(k)  # llmopt sorts labels naturally: category_2 before category_10
    at = class_env(k).run()
    ok(at, "overview")
    balance = table(at, "label")
    assert list(balance["label"]) == names and (balance["test"] == 2).all()  # 20 % of 10 each

    at.switch_page("pages/compress.py").run()
    ok(at, "compress")
    [b for b in at.button if b.label == "Evaluate"][0].click().run()
    ok(at, "evaluate")
    for starts in CONFUSION:  # every heatmap is k × k, rows and columns named after the labels
        fig = figure(at, starts)
        assert fig["data"], starts
        for trace in fig["data"]:
            assert decode(trace["z"]).shape == (k, k), starts
            assert list(trace["x"]) == list(trace["y"]) == names
    roc = figure(at, "ROC curve")
    for model in ("baseline", "compressed"):  # one one-vs-rest curve per class and model
        curves = [t for t in roc["data"] if t.get("legendgroup") == model]
        assert len(curves) == k, (model, [t["name"] for t in curves])
    full = needs_full_width(k, max(map(len, names)))
    assert full == (k > 6)
    beside = in_columns(at)
    for starts in CONFUSION:  # many classes: each confusion figure gets a row of its own
        assert any(t.startswith(starts) for t in beside) != full, (starts, beside)
    assert any(t.startswith("ROC curve") for t in beside)
    layout = figure(at, "Baseline")["layout"]
    side_by_side = layout["yaxis"]["domain"] == layout["yaxis2"]["domain"]
    stacked = confusion_layout(k, max(map(len, names))).stacked  # many classes: one above other
    assert side_by_side == (not stacked) and stacked == (k == 22)
    if side_by_side:  # the true labels are named once, left of the first panel
        assert not layout["yaxis2"].get("title", {}).get("text")

    at.switch_page("pages/attention.py").run()
    ok(at, "attention")
    assert figure(at, "Attention before and after compression")  # the evaluated model
    assert figure(at, "Attention drift")

    at.switch_page("pages/sweep.py").run()
    at.multiselect("s_values_sparsity").set_value([0.0, 0.6])
    at.multiselect("s_methods_sparsity").set_value(["magnitude"]).run()
    [b for b in at.button if b.label == "Run sweep"][0].click().run()
    ok(at, "sweep")
    assert sorted(table(at, "knob")["value"]) == [0.0, 0.6]
    assert any(title(f).startswith("Sweep over sparsity") for f in figures(at))

    from llmopt.experiments import ExperimentStore, store_path

    runs = ExperimentStore(store_path()).runs()
    base = next(r.id for r in runs if r.kind == "base")
    at.switch_page("pages/compare.py").run()
    at.multiselect("cmp_runs").set_value([base, at.session_state["evaluation"]["run_id"]]).run()
    ok(at, "compare")
    curves = [t for t in figure(at, "ROC curve")["data"] if not t["name"].startswith("chance")]
    assert len(curves) == 2 * k  # one one-vs-rest curve per class and run
    heatmaps = [t for t in figure(at, "Confusion matrices")["data"] if t["type"] == "heatmap"]
    assert [decode(h["z"]).shape for h in heatmaps] == [(k, k), (k, k)]


HTML_WORDS = 'good tasty coffee <br /><br />the price was <span class="hl">awful</span> &amp; bad'


def test_html_in_texts_is_shown_as_plain_text(tiny_env, sensitive_bert, tmp_path, monkeypatch):
    """Scraped reviews carry tags (<br />, <span …>): tables and the Attention page show the
    text a reader would see, long texts are cut to a row (the full text one click away)."""
    from streamlit.testing.v1 import AppTest

    texts, labels = class_texts(2, per_class=40)
    long = " ".join([HTML_WORDS] * 6)  # about 270 characters without the tags
    rows = [(f"{t} {long}", y) for t, y in zip(texts, labels, strict=True)]
    path = tmp_path / "html.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *((t, ["pos", "neg"][y]) for t, y in rows)])
    monkeypatch.setenv("LLMOPT_DEFAULT_MODEL", str(sensitive_bert))
    monkeypatch.setenv("LLMOPT_DEFAULT_DATASET", str(path))
    monkeypatch.setenv("LLMOPT_DEFAULT_ROWS", "1000")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    ok(at, "overview")
    preview = [d.value for d in at.sidebar.dataframe if "text" in d.value.columns]
    assert preview and not preview[0]["text"].str.contains("<br|<span|&amp;").any()

    at.switch_page("pages/compress.py").run()  # 50 % pruning flips predictions of this model
    [b for b in at.button if b.label == "Evaluate"][0].click().run()
    ok(at, "evaluate")
    flipped = table(at, "text")
    assert len(flipped) > 0
    shown = flipped["text"]
    assert not shown.str.contains("<br|<span|</span>|&amp;").any(), list(shown)
    assert shown.str.contains("the price was awful & bad").all()
    assert (shown.str.len() <= 160).all() and shown.str.endswith("…").all()
    assert any("Select a row" in c.value for c in at.caption)
    at.session_state["flipped"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()  # as a click on the first row does: its whole text below the table
    ok(at, "select a row")
    whole = [t.value for t in at.get("text")]
    assert len(whole) == 1 and whole[0].startswith(shown[0][:-1]) and len(whole[0]) > 250
    assert "<br" not in whole[0] and "<span" not in whole[0]

    at.switch_page("pages/attention.py").run()
    ok(at, "attention")
    text = at.text_area("a_text").value
    assert "<br" not in text and "<span" not in text and "awful & bad" in text
