"""The Compress and Sweep pages list the registered methods: one added in a test appears."""

from __future__ import annotations

import pytest

from llmopt.compression import registry
from llmopt.compression.methods.magnitude import METHOD as MAGNITUDE


@pytest.fixture()
def dummy_prune():
    import dataclasses

    method = dataclasses.replace(MAGNITUDE, name="dummy", label="Dummy pruning", position=100)
    registry.register(method)
    yield method
    registry.unregister("prune", "dummy")


def test_a_registered_method_appears_in_the_page_selectors(app, dummy_prune):
    at = app.run()
    at.switch_page("pages/compress.py").run()
    assert not at.exception, at.exception
    method = at.selectbox("c_method")
    assert list(method.options)[-1] == "Dummy pruning"
    assert [o for o in at.selectbox("c_quant").options] == ["Round to nearest", "GPTQ"]
    assert [o for o in at.selectbox("c_lowrank").options] == ["SVD", "Activation-aware SVD"]
    method.set_value("dummy").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["c_method"] == "dummy"
    titles = [e.label for e in at.expander]
    assert any("pruning works — Dummy pruning" in t for t in titles), titles
    at.switch_page("pages/sweep.py").run()
    assert "dummy" in at.multiselect("s_methods_sparsity").options
    at.selectbox("s_knob").set_value("bits").run()
    assert "gptq per-channel" in at.multiselect("s_methods_bits").options


def test_calibrated_pictures_and_controls_on_the_compress_page(app):
    at = app.run()
    at.switch_page("pages/compress.py").run()
    from llmopt.compression import CompressionConfig

    first = CompressionConfig()  # the page starts from the library's (and the CLI's) defaults
    assert at.number_input("c_samples").value == first.calibration_samples
    assert at.selectbox("c_calibration").value == first.calibration
    assert "c_samples" not in at.query_params  # nothing changed, nothing in the address
    at.select_slider("c_bits").set_value(3).run()
    at.selectbox("c_quant").set_value("gptq").run()
    at.selectbox("c_lowrank").set_value("activation-aware").run()
    at.slider("c_rank").set_value(8).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    titles = [e.label for e in at.expander]
    assert "How quantization works — GPTQ" in titles
    assert "How low rank works — Activation-aware SVD" in titles
    captions = " ".join(c.value for c in at.caption)
    assert "round to nearest" in captions and "activation-aware" in captions
    assert not at.checkbox("c_act_order").disabled
    assert at.checkbox("c_int8").disabled  # int8 kernels and simulated bits: one or the other
    at.select_slider("c_bits").set_value("off").run()
    at.checkbox("c_int8").check().run()
    at.checkbox("c_smooth").check().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "How kernels work — SmoothQuant int8" in [e.label for e in at.expander]


def test_a_method_file_brings_its_picture_to_the_compress_page(app, tmp_path):
    """A method added as one file (found by discovery) is in the selector, and its expander
    draws the picture its file defines."""
    from app_data import figures, title
    from method_file import NAME, TITLE, method_file

    with method_file(tmp_path):
        at = app.run()
        at.switch_page("pages/compress.py").run()
        at.selectbox("c_method").set_value(NAME).run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert any("pruning works — Dummy file method" in e.label for e in at.expander)
        assert any(title(f).startswith(TITLE) for f in figures(at))
