"""The Auto page: per-layer sensitivity on the tiny model, drawn as the heatmap of the same
analysis run with llmopt directly, with the proxy tables; user strings stay text."""

from __future__ import annotations

import numpy as np
from app_data import decode, figure, table

import llmopt
from llmopt.figures.sensitivity import sensitivity_figure
from llmopt.sensitivity import sensitivity


def test_auto_page_runs_sensitivity_and_draws_the_heatmap(app, tiny_env):
    at = app.run()
    at.switch_page("pages/auto.py").run()
    assert not at.exception, at.exception
    assert any("Run sensitivity" in i.value for i in at.info)
    at.selectbox("a_kind").set_value("quantize").run()
    at.text_input("a_levels_quantize").set_value("2,8").run()
    at.radio("a_granularity").set_value("block").run()
    at.number_input("a_rows").set_value(12).run()
    next(b for b in at.button if b.label == "Run sensitivity").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]

    loaded = llmopt.load_model(str(tiny_env["model"]))
    train = llmopt.load_dataset(str(tiny_env["csv"]), "train")
    direct = sensitivity(loaded, train, kind="quantize", method="rtn", levels=[2, 8],
                         granularity="block", validation_rows=12)  # fmt: skip
    shown = figure(at, "Sensitivity")
    z = decode(shown["data"][0]["z"])
    assert z.shape == (2, 2)
    np.testing.assert_allclose(z, sensitivity_figure(direct).data[0].z)
    assert shown["data"][0]["y"] == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    assert "95%" in shown["data"][0]["customdata"][0][0]
    proxies = table(at, "proxy")
    assert set(proxies["proxy"]) == {"output_error", "weight_error", "fisher", "fisher_trace"}
    rows = table(at, "unit")
    assert len(rows) == 4 and set(rows["level"]) == {2, 8}


def test_bad_levels_are_one_error_line(app, tiny_env):
    at = app.run()
    at.switch_page("pages/auto.py").run()
    at.selectbox("a_kind").set_value("prune").run()
    at.text_input("a_levels_prune").set_value("0.5,<b>x</b>").run()
    next(b for b in at.button if b.label == "Run sensitivity").click().run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and "not a sparsity" in at.error[0].value


def test_heatmap_escapes_unit_names():
    """A unit name with markup shows as text in ticks and hover (as the other figures)."""
    from llmopt.sensitivity import LayerSensitivity, SensitivityResult

    rows = [LayerSensitivity("<b>x</b>{y}", 0.5, -0.1, (-0.2, 0.0), {"fisher": 1.0})]
    result = SensitivityResult("magnitude", "prune", [0.5], "accuracy", "matrix", 1.0, 0.9, 10,
                               rows, {})  # fmt: skip
    fig = sensitivity_figure(result).to_plotly_json()
    assert "<b>x" not in str(fig["data"][0]["y"]) and "&lt;b&gt;x" in fig["data"][0]["y"][0]
    assert "&lt;b&gt;x&lt;/b&gt;&#123;y}" in fig["data"][0]["customdata"][0][0]
