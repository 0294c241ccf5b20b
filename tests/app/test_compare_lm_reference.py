"""Compare with a language model's run as the reference: it kept no per-row predictions."""

from __future__ import annotations

from app_settings import APP, TIMEOUT


def test_a_language_model_reference_keeps_the_tabs_that_apply(tiny_env, tmp_path, monkeypatch):
    """An LM run (perplexity, no per-row predictions) and a classifier run picked, the LM run
    the reference: the page showed the side-by-side caption without its table and skipped the
    Layers and Export tabs, which apply to any run. Now the caption says why there is no
    table, Layers and Export are shown, and with the classifier as reference the side-by-side
    table, curves and behaviour come back. On the old page no tab was drawn at all."""
    from stored_runs import fill_store
    from streamlit.testing.v1 import AppTest

    from llmopt.experiments import ExperimentStore, Run

    path = tmp_path / "experiments.sqlite"
    monkeypatch.setenv("LLMOPT_EXPERIMENTS", str(path))
    (classifier, _) = fill_store(path, {"reviews.csv": (["neg", "pos"], 10)}, 2)["reviews.csv"]
    lm = ExperimentStore(path).add(
        Run(
            model="tiny-lm",
            model_fingerprint="lm",
            dataset="reviews.csv",
            rows_fingerprint="lm-rows",
            n=10,
            label_names=[],
            kind="base",
            task="perplexity",
            metrics={"baseline": {"perplexity": 31.5}, "compressed": {"perplexity": 31.5}},
            size_bytes=int(5e6),
        )
    )
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"runs": f"{lm},{classifier}", "ref": str(lm)})
    at.switch_page("pages/compare.py").run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    assert at.selectbox(key="cmp_ref").value == lm
    assert [t.label for t in at.tabs] == ["Layers", "Export"]
    assert not [h for h in at.subheader if h.value == "Side by side"]
    assert any("kept no per-row predictions" in c.value for c in at.caption)
    assert at.selectbox(key="cmp_export").options  # the Export tab is drawn

    at.selectbox(key="cmp_ref").set_value(classifier).run()
    assert not at.exception, at.exception
    assert [t.label for t in at.tabs] == ["ROC and confusion", "Behaviour", "Layers", "Export"]
    assert [h for h in at.subheader if h.value == "Side by side"]
    assert not any("kept no per-row predictions" in c.value for c in at.caption)


def test_a_store_of_language_model_runs_opens_on_perplexity(tiny_env, tmp_path, monkeypatch):
    """Only perplexity-scored LM runs: the scatter opened on accuracy, which none of them has,
    and drew an empty chart. It now opens on the first headline metric the runs have."""
    from app_data import decode, figure
    from streamlit.testing.v1 import AppTest

    from llmopt.experiments import ExperimentStore, Run

    path = tmp_path / "experiments.sqlite"
    monkeypatch.setenv("LLMOPT_EXPERIMENTS", str(path))
    store = ExperimentStore(path)
    for i, ppl in enumerate([31.5, 33.0]):
        store.add(
            Run(
                model="tiny-lm", model_fingerprint="lm", dataset="reviews.csv",
                rows_fingerprint="lm-rows", n=10, label_names=[],
                kind="base" if i == 0 else "variant", task="perplexity",
                metrics={"baseline": {"perplexity": 31.5}, "compressed": {"perplexity": ppl}},
                size_bytes=int((5 - i) * 1e6),
            )
        )  # fmt: skip
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    assert at.selectbox(key="cmp_y").value == "perplexity"
    fig = figure(at, "Perplexity (tokens) against Size (MB)")
    ys = [float(y) for t in fig["data"] if t.get("mode") == "markers" for y in decode(t["y"])]
    assert sorted(ys) == [31.5, 33.0]
