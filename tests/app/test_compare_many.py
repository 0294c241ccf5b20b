"""Compare with many runs opens without any chart: the scatter waits for its switch.

Issue 18 item 24: with a thousand stored runs a cold load took ~4 s in Chromium, most of it the
browser loading plotly's script for the first chart. Above ``SCATTER_DRAWN_RUNS`` runs the first
view now sends no chart (the lineage box starts closed too), and the switch that draws the
scatter is kept in the address. On the old page the scatter was drawn at once, so the first
assertion fails there.
"""

from __future__ import annotations

import pytest
from app_data import figure, figures
from app_settings import APP, TIMEOUT


@pytest.fixture()
def many_runs(tiny_env, tmp_path, monkeypatch):
    from stored_runs import fill_store

    from dashboard.compare import SCATTER_DRAWN_RUNS

    path = tmp_path / "experiments.sqlite"
    monkeypatch.setenv("LLMOPT_EXPERIMENTS", str(path))
    sets = SCATTER_DRAWN_RUNS // 10 + 1  # ten runs on each: just over the threshold in all
    ids = fill_store(path, {f"d{d}.csv": (["n", "p"], 10) for d in range(sets)}, 10)
    return sorted(i for run_ids in ids.values() for i in run_ids)


def _points(fig: dict) -> list[int]:
    marks = [t for t in fig["data"] if t.get("mode") == "markers" and t["name"] != "selected"]
    return sorted(int(c[0]) for t in marks for c in t["customdata"])


def test_many_runs_first_view_sends_no_chart_until_the_switch(many_runs):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    assert figures(at) == []  # no plotly chart: the browser need not load plotly yet
    switch = at.toggle(key="cmp_scatter_on")
    assert switch.value is False and f"{len(many_runs):,} runs" in switch.label
    switch.set_value(True).run()
    assert not at.exception, at.exception
    assert _points(figure(at, "Accuracy against Size (MB)")) == many_runs
    assert at.query_params.get("scatter") in ("on", ["on"])  # kept in the address
    at.toggle(key="cmp_scatter_on").set_value(False).run()
    assert figures(at) == [] and "scatter" not in at.query_params


def test_a_link_with_the_scatter_on_draws_it_at_once(many_runs):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["scatter"] = "on"
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    assert at.toggle(key="cmp_scatter_on").value is True
    assert _points(figure(at, "Accuracy against Size (MB)")) == many_runs


def _table(at) -> list[int]:
    (table,) = [d.value for d in at.main.dataframe if "recipe" in d.value.columns]
    return [int(i) for i in table["id"]]


def test_the_runs_table_is_paged_searched_and_sorted_here(many_runs):
    """Issue 18 item 24: the table and the "Runs to compare" box sent every run to the browser
    (a thousand rows and a thousand options). Now the table sends a page of ``TABLE_PAGE_ROWS``
    rows, the page control reaches the last run, sorting and searching happen here over all the
    runs, and the box offers the picked runs and the page's rows. On the old page the table held
    every run, so the first assertion fails there."""
    from streamlit.testing.v1 import AppTest

    from dashboard.compare import TABLE_PAGE_ROWS

    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    assert _table(at) == many_runs[:TABLE_PAGE_ROWS]
    assert len(at.multiselect("cmp_runs").options) == TABLE_PAGE_ROWS
    last_page = -(-len(many_runs) // TABLE_PAGE_ROWS)
    page = at.number_input(key="cmp_page")
    assert page.max == last_page > 1
    page.set_value(last_page).run()
    assert not at.exception, at.exception
    assert _table(at) == many_runs[(last_page - 1) * TABLE_PAGE_ROWS :]
    assert at.multiselect("cmp_runs").set_value([many_runs[-1]]).run().multiselect(
        "cmp_runs"
    ).value == [many_runs[-1]]
    assert any(h.value == "1 picked run" for h in at.header)
    at.number_input(key="cmp_page").set_value(1).run()  # the pick stays on another page
    assert at.multiselect("cmp_runs").value == [many_runs[-1]]
    assert len(at.multiselect("cmp_runs").options) == TABLE_PAGE_ROWS + 1

    at.toggle(key="cmp_sort_desc").set_value(True).run()  # over every run, not one page
    assert _table(at) == many_runs[::-1][:TABLE_PAGE_ROWS]
    at.selectbox(key="cmp_sort").set_value("size_mb").run()
    sizes = [r for r in at.main.dataframe if "recipe" in r.value.columns][0].value["size MB"]
    assert list(sizes) == sorted(sizes, reverse=True) and sizes.iloc[0] == 90.0

    at.text_input(key="cmp_search").set_value(f"#{many_runs[-1]}").run()
    assert _table(at) == [many_runs[-1]]
    assert "cmp_page" not in [n.key for n in at.main.number_input]  # one page: no control


def test_filters_wait_behind_their_switch_and_turning_it_off_shows_every_run(many_runs):
    """The four filter boxes cost a fresh browser about half a second, so they appear behind a
    switch (on by itself only when the sidebar's defaults set a filter). On the old page the
    boxes were drawn at once, so the first assertion fails there."""
    from streamlit.testing.v1 import AppTest

    filter_keys = {"cmp_models", "cmp_data", "cmp_rows", "cmp_methods"}
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    assert not filter_keys & {m.key for m in at.multiselect}
    assert at.toggle(key="cmp_filters_on").value is False
    table = at.dataframe[0].value
    assert len(table) == min(len(many_runs), 100)

    at.toggle(key="cmp_filters_on").set_value(True).run()
    assert filter_keys <= {m.key for m in at.multiselect}
    at.multiselect("cmp_data").set_value(["d0.csv"]).run()
    assert not at.exception, at.exception
    assert sorted(at.dataframe[0].value["id"]) == many_runs[:10]  # d0.csv's ten runs

    at.toggle(key="cmp_filters_on").set_value(False).run()
    assert not at.exception, at.exception
    assert len(at.dataframe[0].value) == min(len(many_runs), 100)  # every run again
    assert "cmp_data" not in at.session_state or not at.session_state["cmp_data"]


def test_the_runs_table_leaves_out_columns_no_run_fills(many_runs):
    """Classifier runs only: the perplexity and bits-per-byte columns were a column of 'None'
    each on the old page; now only columns some run fills are sent."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/compare.py").run()
    columns = list(at.dataframe[0].value.columns)
    assert "ppl" not in columns and "bits/B" not in columns
    assert {"id", "recipe", "accuracy", "size MB"} <= set(columns)
