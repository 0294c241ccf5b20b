"""A method's knob (``registry.Knob``) gets its control on the Compress page from the
declaration alone: label, help, range and first value; enabled while its method is picked; the
evaluation the page runs and records carries its value, and a stored config sets it back.
Before, every control was written out in ``dashboard/controls.py``: no ``c_foo`` existed."""

from __future__ import annotations

import streamlit as st
from knob_file import DEFAULT, FIELD, LABEL, METHOD, dummy_knob

from dashboard import controls


def test_a_declared_knob_gets_a_control_on_the_compress_page(app):
    with dummy_knob():
        key = controls.knob_key(FIELD)
        at = app.run()
        at.switch_page("pages/compress.py").run()
        assert not at.exception, at.exception
        slider = at.slider(key)
        assert (slider.label, slider.value, slider.min, slider.max) == (LABEL, DEFAULT, 0.0, 1.0)
        assert "How hard foo pushes." in slider.help and slider.disabled  # magnitude is picked
        at.selectbox("c_method").set_value(METHOD).run()
        assert not at.slider(key).disabled
        at.slider(key).set_value(0.75).run()
        next(b for b in at.button if b.label == "Evaluate").click().run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        config = at.session_state["evaluation"].config
        assert (config.sparsity_method, getattr(config, FIELD)) == (METHOD, 0.75)
        # a stored config (Compare's "open in Compress") sets the control back
        values = controls.values_from_config(config.to_dict())
        assert values[key] == 0.75
        for name, value in values.items():
            st.session_state[name] = value
        assert controls.config_from_state() == config
    assert key not in controls.sync_knobs()
