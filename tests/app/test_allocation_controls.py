"""The Compress page sets the non-uniform bits and rank allocations: a Bits allocation choice
whose Sensitivity makes Bit-width an average in quarter steps, and a Rank allocation choice.
Evaluate compresses as ``llmopt.compress`` does for the same config (the per-layer table shows
each matrix's bits or rank), a link or a loaded recipe sets the controls exactly, and a
combination the config refuses is its one-line error.

Fails on the code before: the page had no ``c_bits_allocation`` / ``c_rank_allocation``
controls, Bit-width took whole bits only (3.5 was not a choice; a link's 3.5 was text), and
Compare's "Load its recipe" note named bits_allocation and rank_allocation as not settable.
"""

from __future__ import annotations

import numpy as np
import pytest
import streamlit as st
from app_settings import APP, TIMEOUT

from dashboard import compare, controls
from llmopt.compression import CompressionConfig

SENSITIVITY = CompressionConfig(bits=3.5, bits_allocation="sensitivity")
ENERGY = CompressionConfig(rank=8, rank_allocation="energy")


@pytest.fixture()
def empty_state():
    """A bare session state (no app run), emptied before and after."""
    for key in list(st.session_state):
        del st.session_state[key]
    yield st.session_state
    for key in list(st.session_state):
        del st.session_state[key]


def _evaluate(at) -> dict:
    next(b for b in at.button if b.label == "Evaluate").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at.session_state["evaluation"]


def _backend(env, config: CompressionConfig) -> dict:
    """``{matrix: row}`` of the report ``llmopt.compress`` makes for ``config`` on the page's
    model, calibrated (if it needs it) on the same CSV's training split."""
    import llmopt
    from llmopt.compression import needs_calibration

    loaded = llmopt.load_model(str(env["model"]))
    train = llmopt.load_dataset(str(env["csv"]), "train") if needs_calibration(config) else None
    _, report = llmopt.compress(loaded, config, calibration=train)
    return {r["name"]: r for r in report.rows}


def _shown(at, column: str) -> dict:
    """``{matrix: value}`` of ``column`` in the per-layer table the results show."""
    (frame,) = [d.value for d in at.main.dataframe if {"name", column} <= set(d.value.columns)]
    return dict(zip(frame["name"], frame[column], strict=True))


@pytest.mark.parametrize("config", [SENSITIVITY, ENERGY], ids=["sensitivity", "energy"])
def test_allocated_configs_map_both_ways(config, empty_state):
    for key, value in controls.values_from_config(config.to_dict()).items():
        st.session_state[key] = value
    assert controls.config_from_state() == config
    values = controls.values_from_config(config.to_dict())
    allocation = config.bits_allocation
    assert values[controls.bits_key(allocation)] in controls.bit_options(allocation)


def test_sensitivity_average_bits_evaluate_as_the_backend_and_a_link_restores_them(app, tiny_env):
    at = app.run()
    at.switch_page("pages/compress.py").run()
    at.slider("c_sparsity").set_value(0.0)
    at.select_slider("c_bits").set_value(4).run()
    at.selectbox("c_bits_allocation").set_value("sensitivity").run()
    assert not at.exception, at.exception
    bits = at.select_slider("c_bits_average")  # shown instead of the whole-bits control
    assert bits.label == "Average bit-width" and "c_bits" not in [s.key for s in at.select_slider]
    assert bits.value == 4  # the whole value carries over to the averages
    assert bits.options == ["off"] + [f"{2 + 0.25 * i:g}" for i in range(25)]
    bits.set_value(3.5).run()
    evaluation = _evaluate(at)
    assert evaluation["config"] == SENSITIVITY

    shown = _shown(at, "bits")
    rows = {r["name"]: r for r in evaluation["report"].rows}
    sizes = {n: int(np.prod(r["shape"])) for n, r in rows.items()}
    average = sum(shown[n] * sizes[n] for n in rows) / sum(sizes.values())
    assert average <= 3.5 + 1e-9
    backend = _backend(tiny_env, SENSITIVITY)
    assert shown == {n: r["bits"] for n, r in backend.items()}
    assert len(set(shown.values())) > 1  # allocated: the matrices differ

    params = dict(at.query_params)
    assert (params["c_bits_average"], params["c_bits_allocation"]) == ("3.5", "sensitivity")
    from streamlit.testing.v1 import AppTest

    reloaded = AppTest.from_file(APP, default_timeout=TIMEOUT)  # a reload of that address
    reloaded.query_params.update(params)
    reloaded.switch_page("pages/compress.py").run()
    assert not reloaded.exception and not reloaded.error
    assert not reloaded.warning, [w.value for w in reloaded.warning]
    assert reloaded.select_slider("c_bits_average").value == 3.5
    assert reloaded.selectbox("c_bits_allocation").value == "sensitivity"

    # back to uniform: the average becomes the whole bits below it, not "off"
    at.selectbox("c_bits_allocation").set_value("uniform").run()
    assert at.select_slider("c_bits").value == 3
    assert at.select_slider("c_bits").options == ["off", *map(str, range(2, 9))]

    # Compare's "Load its recipe" puts the run's allocation and average back, with no note
    at.switch_page("pages/compare.py").run()
    at.multiselect("cmp_runs").set_value([evaluation["run_id"]]).run()
    at.selectbox("cmp_export").set_value(evaluation["run_id"]).run()
    next(b for b in at.button if b.label.startswith("Load its recipe")).click().run()
    assert not at.exception, at.exception
    assert not any("cannot set" in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.selectbox("c_bits_allocation").value == "sensitivity"
    assert at.select_slider("c_bits_average").value == 3.5
    assert at.session_state["evaluation"]["config"] == SENSITIVITY  # the run, shown again


def test_energy_ranks_evaluate_as_the_backend(app, tiny_env):
    at = app.run()
    at.switch_page("pages/compress.py").run()
    assert at.selectbox("c_rank_allocation").disabled  # Rank 0: nothing to allocate
    at.slider("c_sparsity").set_value(0.0)
    at.slider("c_rank").set_value(8).run()
    at.selectbox("c_rank_allocation").set_value("energy").run()
    evaluation = _evaluate(at)
    assert evaluation["config"] == ENERGY
    shown = _shown(at, "rank")
    assert shown == {n: r["rank"] for n, r in _backend(tiny_env, ENERGY).items()}
    assert len(set(shown.values())) > 1  # allocated: the matrices differ


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"c_bits": 4, "c_group": 64, "c_rank": 8, "c_rank_allocation": "energy"},
            "leave group_size unset",
        ),
        (
            {"c_bits_allocation": "sensitivity", "c_bits_average": 3.5, "c_rank": 8},
            "needs no rank",
        ),
    ],
    ids=["energy-with-group", "sensitivity-with-rank"],
)
def test_a_combination_the_config_refuses_is_one_line(app, settings, message):
    at = app.run()
    at.switch_page("pages/compress.py").run()
    for key, value in settings.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0], errors


def test_too_few_training_rows_for_sensitivity_is_one_line(app, tmp_path, monkeypatch):
    """A CSV of 2 rows leaves 1 training row: nothing to carve validation rows from. The
    message named the command line's --validation-rows, which the page does not have."""
    import pandas as pd

    path = tmp_path / "two.csv"
    pd.DataFrame({"text": ["good food", "bad food"], "label": ["pos", "neg"]}).to_csv(
        path, index=False
    )
    monkeypatch.setenv("LLMOPT_DEFAULT_DATASET", str(path))
    at = app.run()
    at.switch_page("pages/compress.py").run()
    at.session_state["c_sparsity"] = 0.0
    at.session_state["c_bits_allocation"] = "sensitivity"
    at.session_state["c_bits_average"] = 3.5
    at.run()
    next(b for b in at.button if b.label == "Evaluate").click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "2 training rows or more" in errors[0], errors
    assert "--" not in errors[0] and "\n" not in errors[0]


@pytest.mark.parametrize("config", [SENSITIVITY, ENERGY], ids=["sensitivity", "energy"])
def test_loading_an_allocated_recipe_sets_the_controls_without_a_note(config, empty_state):
    compare._load_recipe(config.to_dict())
    assert "cmp_recipe_note" not in st.session_state
    assert controls.config_from_state() == config


def test_the_note_stays_for_what_the_controls_cannot_set(empty_state):
    config = CompressionConfig(
        sparsity=0.5, sparsity_scope="global", bits=3.5, bits_allocation="sensitivity"
    )
    compare._load_recipe(config.to_dict())
    note = st.session_state["cmp_recipe_note"]
    assert "sparsity_scope" in note
    assert "bits" not in note and "rank" not in note, note


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"c_bits_allocation": "sensitivity", "c_bits_average": "3.3"}, "c_bits_average"),
        ({"c_bits": "3.5"}, "c_bits"),  # an average, but uniform bits are whole
        ({"c_bits_average": "abc"}, "c_bits_average"),  # text the config would never read
    ],
    ids=["average-off-the-quarter-steps", "fractional-uniform-bits", "text-average"],
)
def test_a_link_bit_width_its_control_lacks_is_ignored_with_a_warning(tiny_env, params, key):
    """A select slider falls back to its first choice (off) without a word for a value it
    lacks: the link's value is dropped with a notice instead."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(params)
    at.switch_page("pages/compress.py").run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    assert all(s.value == "off" for s in at.select_slider if s.key == key)
    assert key not in at.query_params  # the address no longer carries it
    warnings = [w.value for w in at.warning]
    assert any("partly ignored" in w and key in w for w in warnings), warnings


def test_a_recipe_average_between_the_quarter_steps_is_named_in_the_note(empty_state):
    """The command line takes any average (3.3, 3.4); the control shows the quarter step at
    or below it (3.4 to 3.5 would make a bigger model than the recipe's), and the note says
    the controls could not set the recipe's bits (only those)."""
    compare._load_recipe(CompressionConfig(bits=3.4, bits_allocation="sensitivity").to_dict())
    assert st.session_state["c_bits_average"] == 3.25
    compare._load_recipe(CompressionConfig(bits=3.3, bits_allocation="sensitivity").to_dict())
    assert st.session_state["c_bits_average"] == 3.25
    note = st.session_state["cmp_recipe_note"]
    assert note.startswith("The Compress page's controls cannot set bits of this recipe"), note


@pytest.mark.parametrize("key", ["c_bits_allocation", "c_rank_allocation", "c_allocation"])
def test_a_link_allocation_its_control_lacks_is_ignored_with_a_warning(tiny_env, key):
    """With its knob off the config never reads an allocation, so a link's unknown one passed
    every check and its select box silently showed 'uniform': it is now dropped with a
    notice that lists the choices."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({key: "<b>foo</b>"})
    at.switch_page("pages/compress.py").run()
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    assert next(s for s in at.selectbox if s.key == key).value == "uniform"
    assert key not in at.query_params
    warnings = [w.value for w in at.warning]
    assert any("partly ignored" in w and key in w and "uniform" in w for w in warnings), warnings
