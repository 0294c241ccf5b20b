"""The Compress page's per-layer table: its rows become the config's ``layers``/``skip`` (one
mapping, in dashboard/controls.py, both directions), Evaluate compresses each matrix with its
own settings, a stored recipe's rules come back into the table, and a bad rule is one error
naming its pattern.

Fails on the code before per-layer rules: there was no table and no ``layers`` field."""

from __future__ import annotations

import pytest
import streamlit as st

from dashboard import compare, controls
from llmopt.compression import CompressionConfig

L = "bert.encoder.layer"
ROWS = [
    {"pattern": "*.layer.0.*", "sparsity": None, "bits": 8, "group_size": None, "rank": None,
     "skip": False},
    {"pattern": "*.query", "sparsity": 0.25, "bits": 0, "group_size": None, "rank": None,
     "skip": False},
    {"pattern": "*.output.dense", "sparsity": None, "bits": None, "group_size": None,
     "rank": None, "skip": True},
]  # fmt: skip
CONFIG = CompressionConfig(
    sparsity=0.5,
    bits=4,
    layers={"*.layer.0.*": {"bits": 8}, "*.query": {"sparsity": 0.25, "bits": None}},
    skip=("*.output.dense",),
)


def test_rows_and_config_map_both_ways():
    assert controls.layer_rules(ROWS) == {"layers": CONFIG.rules, "skip": CONFIG.skip}
    assert controls.layer_rows_from_config(CONFIG.to_dict()) == ROWS
    for key, value in compare.control_values(CONFIG.to_dict()).items():
        st.session_state[key] = value
    assert controls.config_from_state() == CONFIG


def test_table_rows_that_cannot_be_used_are_refused():
    with pytest.raises(Exception, match="pattern '\\*.query' twice"):
        controls.layer_rules([ROWS[1], ROWS[1]])
    empty = {**ROWS[0], "bits": None}
    with pytest.raises(Exception, match="pattern '\\*.layer.0.\\*' sets nothing"):
        controls.layer_rules([empty])
    assert controls.layer_rules([{**ROWS[0], "pattern": "  "}]) == {"layers": {}, "skip": ()}


def _table(at):
    """The per-layer table's rows as shown: (pattern, rank, skip) of each."""
    expander = next(e for e in at.expander if e.label.startswith("Per-layer settings"))
    frame = next(iter(expander.dataframe)).value
    return [(r["pattern"], r["rank"], bool(r["skip"])) for r in frame.to_dict("records")]


def test_table_feeds_evaluate_and_restores_a_recipe(app):
    at = app.run()
    at.switch_page("pages/compress.py").run()
    assert not at.exception, at.exception
    assert any(e.label.startswith("Per-layer settings") for e in at.expander)
    at.select_slider("c_bits").set_value(4).run()
    at.slider("c_sparsity").set_value(0.5).run()
    at.session_state[controls.LAYER_ROWS] = [dict(r) for r in ROWS]  # as the editor would
    at.run()
    assert not at.exception, at.exception
    assert any(e.label == "Per-layer settings (3 rules)" for e in at.expander)
    assert [p for p, _, _ in _table(at)] == ["*.layer.0.*", "*.query", "*.output.dense"]
    next(b for b in at.button if b.label == "Evaluate").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    evaluation = at.session_state["evaluation"]
    assert evaluation.config == CONFIG
    rows = {r["name"]: r for r in evaluation.report.rows}
    assert not any(n.endswith(".output.dense") for n in rows)
    assert rows[f"{L}.0.attention.self.query"]["bits"] == 8
    assert rows[f"{L}.1.attention.self.query"]["bits"] is None
    assert rows[f"{L}.1.attention.self.query"]["sparsity"] == 0.25
    assert rows[f"{L}.1.attention.self.key"]["bits"] == 4

    # a stored run's recipe (Compare's "Load its recipe…") puts its rules back in the table
    other = CompressionConfig(sparsity=0.3, layers={"*.key": {"rank": 4}}).to_dict()
    for key, value in compare.control_values(other).items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    assert at.session_state[controls.LAYER_ROWS] == controls.layer_rows_from_config(other)
    assert _table(at) == [("*.key", 4, False)]  # the editor shows the recipe's rules
    next(b for b in at.button if b.label == "Evaluate").click().run()
    assert not at.exception, at.exception
    assert at.session_state["evaluation"].config == CompressionConfig.from_dict(other)


def test_a_bad_rule_is_one_error_naming_its_pattern(app):
    at = app.run()
    at.switch_page("pages/compress.py").run()
    at.session_state[controls.LAYER_ROWS] = [{**ROWS[0], "pattern": "*.attn.*"}]
    at.run()
    errors = [e.value.replace("\\", "") for e in at.error]  # shown as text: * escaped
    assert len(errors) == 1 and "pattern '*.attn.*' matches no layer" in errors[0], errors
    at.session_state[controls.LAYER_ROWS] = [{**ROWS[0], "bits": 9}]
    at.run()
    errors = [e.value.replace("\\", "") for e in at.error]
    assert len(errors) == 1 and "layer pattern '*.layer.0.*': bits 9" in errors[0], errors


def test_owl_allocation_maps_both_ways_and_evaluates(app):
    owl = CompressionConfig(
        sparsity=0.5, sparsity_method="wanda", sparsity_allocation="owl", owl_lambda=0.05,
        owl_m=3.0, layers={"*.query": {"bits": 8}},
    )  # fmt: skip
    for key, value in compare.control_values(owl.to_dict()).items():
        st.session_state[key] = value
    assert controls.config_from_state() == owl
    at = app.run()
    at.switch_page("pages/compress.py").run()
    at.slider("c_sparsity").set_value(0.5).run()
    at.selectbox("c_allocation").set_value("owl").run()
    assert not at.number_input("c_owl_lambda").disabled
    at.number_input("c_owl_lambda").set_value(0.05).run()
    next(b for b in at.button if b.label == "Evaluate").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    evaluation = at.session_state["evaluation"]
    assert (evaluation.config.sparsity_allocation, evaluation.config.owl_lambda) == ("owl", 0.05)
    notes = [r["note"] for r in evaluation.report.rows]
    assert notes and all("OWL: block outlier ratio" in n for n in notes)


def test_owl_inputs_start_at_the_papers_values(app):
    """The OWL inputs showed their minimums (λ 0.00, M 1.00) instead of the defaults the
    config uses (0.08 and 5), so picking OWL started from a λ that spreads nothing."""
    at = app.run()
    at.switch_page("pages/compress.py").run()
    assert not at.exception, at.exception
    assert at.number_input("c_owl_lambda").value == CompressionConfig.owl_lambda == 0.08
    assert at.number_input("c_owl_m").value == CompressionConfig.owl_m == 5.0
