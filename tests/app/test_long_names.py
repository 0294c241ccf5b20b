"""A 7-class CSV whose class names are long: the Overview's label table shows them whole."""

from __future__ import annotations

import csv
import json

from app_data import class_texts
from app_settings import APP, TIMEOUT

LONG_NAMES = [f"customer support tickets about a long-winded topic number {c}" for c in range(7)]


def test_overview_label_table_gives_long_class_names_their_width(tiny_env, tmp_path, monkeypatch):
    """Issue 18 item 18: the Overview's label table sat in two fifths of the page with a default
    label column, so long class names showed as "customer sup…". With long names it takes the
    page's width and its label column is as wide as the longest name."""
    from streamlit.testing.v1 import AppTest

    texts, labels = class_texts(7, per_class=10)
    path = tmp_path / "long.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        rows = zip(texts, labels, strict=True)  # texts longer than the names: the text column
        writer.writerows([" ".join([t] * 8), LONG_NAMES[y]] for t, y in rows)
    monkeypatch.setenv("LLMOPT_DEFAULT_MODEL", f"encoder:{tiny_env['model']}")
    monkeypatch.setenv("LLMOPT_DEFAULT_DATASET", str(path))
    monkeypatch.setenv("LLMOPT_EXPERIMENTS", str(tmp_path / "runs.sqlite"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    [balance] = [d for d in at.main.dataframe if d.value.columns[0] == "label"]
    assert sorted(balance.value["label"]) == sorted(LONG_NAMES)
    assert not at.main.columns or all(
        balance not in col.get("arrow_data_frame") for col in at.main.columns
    )  # not squeezed into a column beside the chart
    config = json.loads(balance.proto.columns)
    width = config["label"]["width"]
    assert isinstance(width, int) and width >= 7 * len(LONG_NAMES[0])  # ~7 px a character


def test_overview_facts_name_long_labels_below_the_table(tiny_env, tmp_path, monkeypatch):
    """The facts table's "Labels" cell held every class name joined ("customer support
    tickets about a long-winded topic number 0, customer…"), cut off by the cell (table cells
    never wrap). With names that long the cell gives their count and a caption under the table
    names them all, as text. On the old page the cell held the joined names."""
    from streamlit.testing.v1 import AppTest

    texts, labels = class_texts(7, per_class=10)
    path = tmp_path / "long.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        rows = zip(texts, labels, strict=True)  # texts longer than the names: the text column
        writer.writerows([" ".join([t] * 8), LONG_NAMES[y]] for t, y in rows)
    monkeypatch.setenv("LLMOPT_DEFAULT_MODEL", f"encoder:{tiny_env['model']}")
    monkeypatch.setenv("LLMOPT_DEFAULT_DATASET", str(path))
    monkeypatch.setenv("LLMOPT_EXPERIMENTS", str(tmp_path / "runs.sqlite"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    [facts] = [d.value for d in at.main.dataframe if list(d.value.columns) == ["fact", "value"]]
    value = dict(zip(facts["fact"], facts["value"], strict=True))["Labels"]
    assert value == "7, named below"
    [named] = [c.value for c in at.main.caption if c.value.startswith("Labels: ")]
    assert all(name in named for name in LONG_NAMES)
