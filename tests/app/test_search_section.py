"""The Auto page's Search section on the tiny model: a search runs to the end in its thread,
the Pareto plot shows every candidate, the recipe opens on the Compress page; Cancel stops."""

from __future__ import annotations

import app_data
from app_data import decode, figure

WAIT_S = 120  # a tiny search takes seconds; a busy shared CPU can make it much slower


def job(at):
    return at.session_state["auto_search_job"] if "auto_search_job" in at.session_state else None


def wait_for(at, done, limit=WAIT_S):
    return app_data.wait_for(at, done, limit, "the search")


def finished(at):
    j = job(at)
    return j is not None and not j.running and not any(p for p in at.get("progress"))


def start(app, methods, budget, points=5.0):
    at = app.run()
    at.switch_page("pages/auto.py").run()
    assert not at.exception, at.exception
    assert any("Run search" in i.value for i in at.info)
    at.radio("s_mode").set_value("absolute").run()
    at.number_input("s_points").set_value(points)
    at.multiselect("s_methods").set_value(methods)
    at.number_input("s_budget").set_value(budget)
    at.number_input("s_rows").set_value(12).run()
    at.button("s_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_search_runs_shows_the_candidates_and_opens_the_recipe(app):
    at = start(app, ["magnitude"], 4)
    wait_for(at, finished)
    j = job(at)
    assert j.status == "done", j.error
    result = j.result
    assert result.evaluations <= 4 and result.best is not None
    assert j.settings["tolerance"] == 0.05 and not j.settings["relative"]
    shown = figure(at, "Search:")
    sizes = sorted(x for t in shown["data"][:2] if t["mode"] == "markers" for x in decode(t["x"]))
    assert sizes == sorted(c.size_bytes / 1e6 for c in result.candidates)
    assert any("Pick:" in m.value for m in at.markdown)
    assert any(f"On the {len(result.test_baseline.y_true)} test rows" in c.value
               for c in at.caption)  # fmt: skip
    # the recipe opens on the Compress page with its controls set and its run's results
    at.button("s_open").click().run()
    assert not at.exception, at.exception
    assert at.session_state["c_method"] == "magnitude"
    assert at.session_state["c_sparsity"] == result.recipe["sparsity"]
    assert at.query_params.get("run") in (str(result.run_id), [str(result.run_id)])


def test_cancel_stops_the_search(app):
    at = start(app, ["magnitude", "rtn"], 40)
    j = job(at)
    at.button("s_cancel").click().run()
    assert j.cancel.is_set()
    wait_for(at, finished)
    assert j.status == "cancelled" or j.result.evaluations < 40
    if j.status == "cancelled":
        assert any("Search cancelled" in w.value for w in at.warning)


def test_a_rejected_level_shows_the_sensitivity_that_ordered_the_fallbacks(
    app, sensitive_bert, monkeypatch
):
    """On a model whose predictions compression flips, with no loss allowed, some level is
    rejected: per-layer variants are searched and the heatmap of the sensitivity that ordered
    them is shown, one row per matrix."""
    monkeypatch.setenv("LLMOPT_DEFAULT_MODEL", str(sensitive_bert))
    at = start(app, ["magnitude"], 6, points=0.0)
    wait_for(at, finished)
    j = job(at)
    assert j.status == "done", j.error
    result = j.result
    assert any(not c.accepted for c in result.candidates)
    assert any(c.family == "per-layer" for c in result.candidates)
    assert len(result.sensitivities) == 1
    shown = figure(at, "Sensitivity")
    assert len(shown["data"][0]["y"]) == 12  # 2 blocks x 6 matrices
