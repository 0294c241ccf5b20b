"""Every dashboard page, driven through AppTest on a tiny model and checked against llmopt."""

from __future__ import annotations

import numpy as np
import pytest
from app_data import decode, figure, figures, table, title
from app_settings import APP, TIMEOUT, TINY_ROWS

import llmopt
from llmopt.attention import attention_maps
from llmopt.compression import CompressionConfig, compress
from llmopt.data import display_text
from llmopt.estimate import estimate_size

PAGES = ["pages/overview.py", "pages/compress.py", "pages/attention.py", "pages/sweep.py"]


def direct(env, config):
    """The same evaluation as the page, made with llmopt directly."""
    loaded = llmopt.load_model(str(env["model"]))
    data = llmopt.load_dataset(str(env["csv"]), "test", limit=TINY_ROWS)
    model, report = compress(loaded, config)
    base, other = llmopt.evaluate(loaded, data), llmopt.evaluate(model, data)
    return loaded, data, base, other, report


def evaluate_on_page(at, sparsity=0.5, bits=4, rank=8):
    at.switch_page("pages/compress.py").run()
    at.slider("c_sparsity").set_value(sparsity)
    at.select_slider("c_bits").set_value(bits)
    at.slider("c_rank").set_value(rank)
    at.run()
    button = [b for b in at.button if b.label == "Evaluate"]
    assert len(button) == 1
    button[0].click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_every_page_runs_without_errors(app):
    at = app.run()
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, [e.value for e in at.error])
    assert at.session_state["selection"].rows == TINY_ROWS


def test_overview_shows_the_models_facts(app, tiny_env):
    at = app.run()
    loaded = llmopt.load_model(str(tiny_env["model"]))
    facts = llmopt.model_facts(loaded)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Layers"] == str(facts["layers"]) == "2"
    assert metrics["Heads per layer"] == str(facts["heads"]) == "4"
    assert metrics["Parameters"] == f"{facts['params_total'] / 1e6:.2f} M"
    balance = table(at, "label")
    train = llmopt.load_dataset(str(tiny_env["csv"]), "train")
    test = llmopt.load_dataset(str(tiny_env["csv"]), "test")
    assert list(balance["label"]) == test.label_names
    assert list(balance["train"]) == np.bincount(train.labels).tolist()
    assert list(balance["test"]) == np.bincount(test.labels).tolist()


def test_estimate_is_shown_before_evaluating(app, tiny_env):
    at = app.run()
    at.switch_page("pages/compress.py").run()
    at.slider("c_sparsity").set_value(0.7)
    at.select_slider("c_bits").set_value(3).run()
    loaded = llmopt.load_model(str(tiny_env["model"]))
    est = estimate_size(loaded, CompressionConfig(sparsity=0.7, bits=3))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Size (estimate)"] == f"{est['size_bytes'] / 1e6:.2f} MB"
    assert metrics["Compression (estimate)"] == f"{est['ratio']:.2f}×"
    assert not at.get("plotly_chart") or all(
        not title(f).startswith("ROC") for f in figures(at)
    )  # nothing evaluated yet


@pytest.mark.parametrize("bits", [8, 2])
def test_every_method_picture_is_drawn(app, bits):
    at = app.run()
    at.switch_page("pages/compress.py").run()
    at.select_slider("c_bits").set_value(bits).run()
    assert not at.exception, at.exception
    titles = [title(f) for f in figures(at)]
    assert any(t.startswith("Unstructured magnitude mask") for t in titles)
    assert any(t.startswith(f"Row 0: {bits}-bit grid") for t in titles)
    assert any(t.startswith("Row 0: 8-bit grid") for t in titles)  # the int8 picture
    assert "Singular value spectrum" in titles
    at.selectbox("c_pattern").set_value("2:4").run()
    assert any(t.startswith("2:4 magnitude mask") for t in [title(f) for f in figures(at)])
    assert at.slider("c_sparsity").proto.disabled


def test_evaluate_shows_the_numbers_llmopt_computes(app, tiny_env):
    at = evaluate_on_page(app.run(), sparsity=0.5, bits=4, rank=8)
    config = CompressionConfig(sparsity=0.5, bits=4, rank=8)
    _, data, base, other, report = direct(tiny_env, config)

    metrics = table(at, "metric").set_index("metric")
    for key, name in [("accuracy", "Accuracy"), ("f1_macro", "F1 (macro)"), ("roc_auc", "ROC AUC")]:
        assert metrics.loc[name, "baseline"] == pytest.approx(base.metrics[key], abs=1e-12)
        assert metrics.loc[name, "compressed"] == pytest.approx(other.metrics[key], abs=1e-12)
    assert metrics.loc["Size (MB)", "compressed"] == pytest.approx(other.size_bytes / 1e6)
    assert metrics.loc["Non-zero parameters", "compressed"] == other.params_nonzero

    roc = figure(at, "ROC curve")
    curves = [t for t in roc["data"] if t["name"].startswith("compressed")]
    positive = other.label_names[1]
    assert len(curves) == 1
    np.testing.assert_allclose(decode(curves[0]["x"]), other.roc[positive]["fpr"])
    np.testing.assert_allclose(decode(curves[0]["y"]), other.roc[positive]["tpr"])

    counts = figure(at, "Baseline")["data"][0]
    np.testing.assert_array_equal(decode(counts["z"]), base.confusion)
    counts = figure(at, "Compressed")["data"][0]
    np.testing.assert_array_equal(decode(counts["z"]), other.confusion)
    diff = figure(at, "Change in the confusion matrix")["data"][0]
    np.testing.assert_array_equal(decode(diff["z"]), other.confusion - base.confusion)
    sizes = figure(at, "Size and latency")["data"][0]
    np.testing.assert_allclose(decode(sizes["y"]), [base.size_bytes / 1e6, other.size_bytes / 1e6])

    layers = table(at, "name")
    expected = report.to_frame()
    assert list(layers["name"]) == list(expected["name"])
    np.testing.assert_allclose(layers["rel_error"], expected["rel_error"], rtol=1e-9)
    np.testing.assert_array_equal(layers["bytes_after"], expected["bytes_after"])
    errors = figure(at, "Error per layer")["data"][0]
    np.testing.assert_allclose(decode(errors["y"]), expected["rel_error"], rtol=1e-9)

    fidelity = llmopt.compare(base, other)
    agreement = {m.label: m.value for m in at.metric}["Agreement"]
    assert agreement == f"{fidelity['agreement']:.1%}"
    if fidelity["flipped"]:
        flipped = table(at, "text")
        for shown, i in zip(flipped["text"], fidelity["flipped"], strict=True):
            full = display_text(data.texts[i])  # as a reader sees it, cut to fit a row
            assert shown == full or (shown.endswith("…") and full.startswith(shown[:-1]))
        rows, truth = fidelity["flipped"], base.y_true[fidelity["flipped"]]
        np.testing.assert_allclose(flipped["P(label) compressed"], other.y_score[rows, truth])


def test_settings_and_results_survive_a_page_switch(app):
    at = evaluate_on_page(app.run(), sparsity=0.3, bits=6, rank=0)
    at.switch_page("pages/overview.py").run()
    at.switch_page("pages/compress.py").run()
    assert at.slider("c_sparsity").value == pytest.approx(0.3)
    assert at.select_slider("c_bits").value == 6
    assert any(title(f).startswith("ROC curve") for f in figures(at))
    assert not at.warning  # the results shown belong to the settings shown


def test_moving_a_slider_recomputes_only_the_compressed_side(app, monkeypatch):
    calls = []
    real = llmopt.evaluate

    def counting(loaded, dataset, **kwargs):
        calls.append(loaded.name)
        return real(loaded, dataset, **kwargs)

    monkeypatch.setattr(llmopt, "evaluate", counting)
    at = evaluate_on_page(app.run(), sparsity=0.5, bits="off", rank=0)
    assert len(calls) == 2  # baseline and compressed
    at.slider("c_sparsity").set_value(0.8).run()
    assert at.warning  # results are stale until Evaluate is pressed again
    [b for b in at.button if b.label == "Evaluate"][0].click().run()
    assert len(calls) == 3 and calls[-1].endswith("(compressed)")


def test_two_sessions_do_not_share_compressed_models(tiny_env):
    from streamlit.testing.v1 import AppTest

    first = evaluate_on_page(AppTest.from_file(APP, default_timeout=TIMEOUT).run(), 0.9, 2, 4)
    second = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    second.switch_page("pages/compress.py").run()
    assert second.slider("c_sparsity").value == pytest.approx(0.5)  # its own first value
    assert "compressed" not in second.session_state and "evaluation" not in second.session_state
    assert not any(title(f).startswith("ROC curve") for f in figures(second))
    assert first.session_state["evaluation"]["config"].sparsity == pytest.approx(0.9)


def test_attention_heatmaps_have_one_row_and_column_per_token(app, tiny_env):
    at = app.run()
    at.switch_page("pages/attention.py").run()
    assert not at.exception, at.exception
    text = at.text_area("a_text").value
    loaded = llmopt.load_model(str(tiny_env["model"]))
    maps = attention_maps(loaded, text)
    n = len(maps.tokens)
    single = figure(at, "Attention — layer 0, head 0")["data"][0]
    np.testing.assert_allclose(decode(single["z"]), maps.maps[0, 0], rtol=1e-6)
    assert decode(single["z"]).shape == (n, n)
    grid = figure(at, "All heads of layer 0")
    assert [decode(t["z"]).shape for t in grid["data"]] == [(n, n)] * 4

    [b for b in at.button if b.label.startswith("Compress with")][0].click().run()
    assert not at.exception, at.exception
    compare = figure(at, "Attention before and after compression")
    assert [decode(t["z"]).shape for t in compare["data"]] == [(n, n)] * 3
    drift = figure(at, "Attention drift")["data"][0]
    assert decode(drift["z"]).shape == (2, 4)  # layers × heads of the tiny model
    assert (decode(drift["z"]) >= 0).all()

    at.selectbox("a_layer").set_value(1)
    at.selectbox("a_head").set_value(3).run()
    assert figure(at, "Attention before and after compression — layer 1, head 3")


def test_attention_shows_the_prediction_for_the_typed_text(app, tiny_env):
    """The Attention page showed maps but not what the model predicts for the typed text, and
    its drift caption said 'bright cells' for the cells it draws darkest."""
    at = app.run()
    at.switch_page("pages/attention.py").run()
    text = "an entirely new sentence typed by a visitor"
    at.text_area("a_text").set_value(text).run()
    assert not at.exception, at.exception
    loaded = llmopt.load_model(str(tiny_env["model"]))
    label, probability = attention_maps(loaded, text).prediction
    shown = table(at, "model")
    assert list(shown["model"]) == ["uncompressed"]
    assert (shown["prediction"][0], shown["probability"][0]) == (label, pytest.approx(probability))

    [b for b in at.button if b.label.startswith("Compress with")][0].click().run()
    assert not at.exception, at.exception
    model, _ = compress(loaded, at.session_state["compressed"]["config"])
    other_label, other_probability = attention_maps(model, text).prediction
    shown = table(at, "model")
    assert list(shown["model"]) == ["uncompressed", "compressed"]
    assert shown["prediction"][1] == other_label
    assert shown["probability"][1] == pytest.approx(other_probability)
    drift = [c.value for c in at.caption if "Jensen" in c.value]
    assert len(drift) == 1 and "darker" in drift[0] and "bright" not in drift[0]


def test_sweep_draws_one_point_per_value(app):
    at = app.run()
    at.switch_page("pages/sweep.py").run()
    values = [0.0, 0.4, 0.8]
    at.multiselect("s_values_sparsity").set_value(values)
    at.multiselect("s_methods_sparsity").set_value(["magnitude"]).run()
    [b for b in at.button if b.label == "Run sweep"][0].click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    frame = table(at, "knob")
    assert sorted(frame["value"]) == values and set(frame["method"]) == {"magnitude"}
    accuracy = [t for t in figure(at, "Sweep over sparsity")["data"] if "Accuracy" in t["name"]]
    assert len(accuracy) == 1
    np.testing.assert_allclose(sorted(decode(accuracy[0]["x"])), values)
    pareto = figure(at, "Size against accuracy")
    points = [t for t in pareto["data"] if t["name"] == "magnitude"]
    assert len(decode(points[0]["x"])) == len(values)
    assert at.get("download_button")


def test_sweep_estimates_its_time_and_shows_one_latency_policy(app):
    """No estimate before a sweep; latencies that contradicted the other pages (a measured
    single pass per pruning point, where everything else says 'same kernels'); no intervals."""
    at = app.run()
    at.switch_page("pages/sweep.py").run()
    at.multiselect("s_values_sparsity").set_value([0.0, 0.3, 0.6])
    at.multiselect("s_methods_sparsity").set_value(["magnitude"]).run()
    [b for b in at.button if b.label == "Estimate the time"][0].click().run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    estimate = [i.value for i in at.info if i.value.startswith("Estimate:")]
    assert len(estimate) == 1 and "for 2 points" in estimate[0] and "magnitude" in estimate[0]
    [b for b in at.button if b.label == "Run sweep"][0].click().run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    frame = table(at, "knob")
    base = at.session_state["sweep"]["frame"].attrs["baseline"]
    assert set(frame["latency_method"]) == {"same kernels"}
    assert (frame["latency_ms_per_sample"] == base["latency_ms_per_sample"]).all()
    accuracy = figure(at, "Sweep over sparsity")["data"][0]
    assert len(decode(accuracy["error_y"]["array"])) == 3  # an interval on every point


def test_a_bad_csv_upload_shows_an_error(app):
    at = app.run()
    at.file_uploader[0].set_value(("bad.csv", b"\xff\xfe\x00not,a\xffcsv", "text/csv")).run()
    assert not at.exception, at.exception
    assert at.error and "UTF-8" in at.error[0].value
    at.file_uploader[0].set_value(("one.csv", b"text,label\nhello,a\nworld,a\n", "text/csv"))
    at.run()
    assert not at.exception, at.exception
    assert at.error and "single class" in at.error[0].value
    assert at.sidebar.radio[0].value  # the sidebar is still there to fix the choice


def test_an_uploaded_csv_offers_its_own_columns(app):
    words = ["great tasty snack", "awful stale bread"]
    rows = "".join(f"{i},{words[i % 2]} {i},{['good', 'bad'][i % 2]}\n" for i in range(30))
    at = app.run()
    at.file_uploader[0].set_value(("mine.csv", f"id,review,score\n{rows}".encode(), "text/csv"))
    at.run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    text_col, label_col = at.sidebar.selectbox
    assert text_col.options == label_col.options == ["id", "review", "score"]
    assert (text_col.value, label_col.value) == ("review", "score")
    selection = at.session_state["selection"]
    assert (selection.data_ref, selection.text_column) == ("mine.csv", "review")
    assert "dataset **mine.csv** · 6 test rows" in at.caption[0].value  # 20 % of 30 rows


def test_csv_columns_are_guessed_by_their_content_and_previewed(app):
    """Names mislead here (no 'text' or 'label' column; a short code column comes first): the
    guess goes by content — the longest texts, the fewest distinct values — and the sidebar
    previews the first rows and the chosen label column's counts."""
    words = ["great tasty snack with fresh bread", "awful stale bread and bland soup"]
    rows = "".join(
        f"P{i:03d},{words[i % 2]} number {i},{['good', 'bad'][i % 2]}\n" for i in range(60)
    )
    at = app.run()
    at.file_uploader[0].set_value(("mine.csv", f"code,comment,stars\n{rows}".encode(), "text/csv"))
    at.run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    assert not at.warning, [w.value for w in at.warning]
    text_col, label_col = at.sidebar.selectbox
    assert (text_col.value, label_col.value) == ("comment", "stars")
    assert at.session_state["selection"].label_column == "stars"
    preview, counts = [d.value for d in at.sidebar.dataframe]
    assert list(preview.columns) == ["code", "comment", "stars"] and len(preview) == 5
    assert counts.set_index("label")["rows"].to_dict() == {"good": 30, "bad": 30}
    assert any("Preview of mine.csv (60 rows)" in e.label for e in at.sidebar.expander)

    label_col.set_value("comment").run()  # 60 distinct values: not a label column
    assert not at.exception, at.exception
    assert [w.value for w in at.warning] == [
        "The Label column 'comment' has 60 distinct values: probably not a label column; "
        "choose another."
    ]
    assert len([d.value for d in at.sidebar.dataframe][1]) == 20  # the 20 most common


def test_a_bad_model_path_shows_an_error_and_the_page_recovers(app, tiny_env):
    at = app.run()
    key = [t.key for t in at.sidebar.text_input if t.key.startswith("src_Local")][0]
    at.text_input(key).set_value(str(tiny_env["model"].parent / "no_such_model")).run()
    assert not at.exception, at.exception
    assert at.error and "not found" in at.error[0].value
    at.text_input(key).set_value(str(tiny_env["model"])).run()
    assert not at.exception and not at.error


def test_an_encoder_gets_a_head_trained_on_the_chosen_dataset(app, tiny_env):
    at = app.run()
    at.sidebar.radio[0].set_value("Encoder + trained head").run()
    key = [t.key for t in at.sidebar.text_input if t.key.startswith("src_Encoder")][0]
    at.text_input(key).set_value(str(tiny_env["model"])).run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    labels = {m.label: m.value for m in at.metric}
    assert labels["Layers"] == "2"
    notes = " ".join(c.value for c in at.caption)
    assert "logistic regression" in notes and "40" in notes  # the CSV's 40 training rows
    assert "labels neg, pos" in notes  # named after the dataset's labels


def test_settings_a_layer_cannot_take_are_reported(app):
    at = app.run()
    at.switch_page("pages/compress.py").run()
    at.slider("c_sparsity").set_value(0.0)
    at.slider("c_rank").set_value(32).run()  # the tiny model's largest rank
    assert not at.exception and not at.error
    at.select_slider("c_bits").set_value(4).run()
    at.selectbox("c_group").set_value(64).run()  # does not divide the layers' widths
    assert not at.exception, at.exception
    assert at.error and "group_size 64" in at.error[0].value
    assert at.slider("c_rank").value == 32  # the controls stay usable


@pytest.mark.integration
def test_compress_page_on_the_bundled_model(monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LLMOPT_DEFAULT_MODEL", "bundled")
    monkeypatch.setenv("LLMOPT_DEFAULT_DATASET", "bundled")
    monkeypatch.setenv("LLMOPT_DEFAULT_ROWS", "24")
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=600).run()
    assert not at.exception, at.exception
    at = evaluate_on_page(at, sparsity=0.5, bits=8, rank=0)
    loaded = llmopt.load_model("bundled")
    data = llmopt.load_dataset("bundled", "test", limit=24)
    model, _ = compress(loaded, CompressionConfig(sparsity=0.5, bits=8))
    base, other = llmopt.evaluate(loaded, data), llmopt.evaluate(model, data)
    metrics = table(at, "metric").set_index("metric")
    assert metrics.loc["Accuracy", "baseline"] == pytest.approx(base.metrics["accuracy"])
    assert metrics.loc["ROC AUC", "compressed"] == pytest.approx(other.metrics["roc_auc"])
    assert metrics.loc["Size (MB)", "compressed"] == pytest.approx(other.size_bytes / 1e6)
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
    st.cache_resource.clear()


def test_visitors_never_see_tracebacks():
    """An uncaught error shows Streamlit's generic notice only (the server log has the rest)."""
    import tomllib
    from pathlib import Path

    from streamlit.config import ShowErrorDetailsConfigOptions

    config = tomllib.loads((Path(__file__).parents[2] / ".streamlit" / "config.toml").read_text())
    value = config["client"]["showErrorDetails"]
    assert value == ShowErrorDetailsConfigOptions.NONE == "none"
