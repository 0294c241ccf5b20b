"""The Auto page's Search section on a tiny random causal LM: the search runs from the page as
``llmopt search`` runs it (tolerance a rise of the mean NLL per token), shows the pick's test
perplexity as the backend computes it, the Pareto plot in perplexity, and records every candidate
with its parent; a window the model cannot take is one error line. (Before, the section showed a
"classifiers only" note for a causal LM and searched nothing: every test here failed.)"""

from __future__ import annotations

import math

import app_data
import numpy as np
from app_data import decode, figure
from app_settings import TINY_ROWS

SEQ_LEN = 16
ROWS = 20  # validation texts: 48 windows of 16 tokens on the tiny CSV
NATS = 0.01  # the tolerance: a pick after a rejected 4-bit level (per-layer variants searched)
BUDGET = 6


WAIT_S = 180  # a tiny LM search takes seconds; a busy shared CPU can make it much slower


def job(at):
    return at.session_state["auto_search_job"] if "auto_search_job" in at.session_state else None


def finished(at):
    j = job(at)
    return j is not None and not j.running and not any(p for p in at.get("progress"))


def wait_for(at, done, limit=WAIT_S):
    return app_data.wait_for(at, done, limit, "the search")


def _auto(at):
    at.run()
    at.switch_page("pages/auto.py").run()
    assert not at.exception, at.exception
    return at


def _start(at, seq_len=SEQ_LEN):
    at.radio("s_mode").set_value("absolute").run()
    at.number_input("s_nats").set_value(NATS)
    at.number_input("s_seq_len").set_value(seq_len)
    at.multiselect("s_methods").set_value(["rtn"])
    at.number_input("s_budget").set_value(BUDGET)
    at.number_input("s_rows").set_value(ROWS).run()
    at.button("s_run").click().run()
    assert not at.exception, at.exception
    return at


def test_lm_search_runs_shows_the_backends_perplexity_and_records(lm_app, tiny_env, tiny_lm_dir):
    import llmopt
    from llmopt.experiments import ExperimentStore, store_path
    from llmopt.lm import load_causal_lm
    from llmopt.search import search

    at = _auto(lm_app)
    assert not any("classifiers only" in i.value for i in at.info)
    assert any("Perplexity-aware search" in m.value for m in at.markdown)
    _start(at)
    assert not at.error, [e.value for e in at.error]
    wait_for(at, finished)
    j = job(at)
    assert j.status == "done", j.error
    result = j.result
    assert result.metric == "nll" and result.best is not None
    assert j.settings == {
        "tolerance": NATS, "relative": False, "objective": "size", "methods": ["rtn"],
        "max_evaluations": BUDGET, "validation_rows": ROWS, "seq_len": SEQ_LEN,
    }  # fmt: skip
    # the same settings through the backend directly give the numbers the page shows
    lm = load_causal_lm(str(tiny_lm_dir))
    train = llmopt.load_dataset(str(tiny_env["csv"]), "train")
    test = llmopt.load_dataset(str(tiny_env["csv"]), "test", limit=TINY_ROWS)
    direct = search(lm, train, test, tolerance=NATS, methods=["rtn"], max_evaluations=BUDGET,
                    validation_rows=ROWS, seq_len=SEQ_LEN)  # fmt: skip
    assert [c.label for c in direct.candidates] == [c.label for c in result.candidates]
    assert direct.recipe == result.recipe
    b, o = direct.test_baseline["perplexity"], direct.test_compressed["perplexity"]
    line = f"On the {TINY_ROWS} test texts ({SEQ_LEN}-token windows): perplexity {b:.4f} → {o:.4f}"
    assert any(c.value.startswith(line) for c in at.caption), [c.value for c in at.caption]
    pick = next(m.value for m in at.markdown if m.value.startswith("**Pick:"))
    assert f"validation perplexity {math.exp(direct.best.metric):.4f}" in pick
    # the Pareto plot: one marker per candidate at (size, validation perplexity)
    shown = figure(at, "Search:")
    assert shown["layout"]["yaxis"]["title"]["text"] == "Validation perplexity"
    points = sorted(
        (float(x), float(y))
        for t in shown["data"] if t.get("name") in ("Uniform settings", "Per-layer")
        for x, y in zip(decode(t["x"]), decode(t["y"]), strict=True)
    )  # fmt: skip
    want = sorted((c.size_bytes / 1e6, math.exp(c.metric)) for c in result.candidates)
    np.testing.assert_allclose(np.array(points), np.array(want), rtol=1e-9)
    # the front joins the candidates no other beats on both size and perplexity (lower wins)
    front = next(t for t in shown["data"] if t.get("name") == "Pareto front")
    beaten = [any(x2 <= x and y2 <= y and (x2, y2) != (x, y) for x2, y2 in want) for x, y in want]
    on_front = sorted(p for p, b in zip(want, beaten, strict=True) if not b)
    np.testing.assert_allclose(
        np.column_stack([decode(front["x"]), decode(front["y"])]), np.array(on_front), rtol=1e-9
    )
    # every candidate recorded with its parent, the pick on the test texts too
    store = ExperimentStore(store_path())
    runs = [store.get(c.run_id) for c in result.candidates]
    assert all(r.task == "perplexity" and r.parent is not None for r in runs)
    for c, run in zip(result.candidates, runs, strict=True):
        if c.parent is not None:
            assert run.parent == result.candidates[c.parent].run_id
    assert (
        len({r.parent for c, r in zip(result.candidates, runs, strict=True) if c.parent is None})
        == 1
    )  # fmt: skip (the base model's run)
    assert any(c.family == "per-layer" for c in result.candidates)
    picked = store.get(result.run_id)
    assert math.isclose(picked.metrics["compressed"]["perplexity"], o, rel_tol=1e-9)
    # the recipe opens on the Compress page with its controls set
    at.button("s_open").click().run()
    assert not at.exception, at.exception
    assert at.session_state["c_bits"] == result.recipe["bits"]
    assert not at.error, [e.value for e in at.error]


def test_a_window_the_lm_cannot_take_is_one_error_line(lm_app):
    """The tiny GPT-2 has 64 positions: a 100-token window is refused before any search starts,
    with the backend's message and what to do, and no traceback."""
    at = _start(_auto(lm_app), seq_len=100)
    assert job(at) is None
    assert len(at.error) == 1, [e.value for e in at.error]
    message = at.error[0].value
    assert "100" in message and "64" in message and "lower the window length" in message
    assert "Traceback" not in message
