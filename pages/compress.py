"""Compress & Evaluate: set the knobs, see an instant estimate, evaluate against the baseline."""

import streamlit as st

from dashboard import controls, explainers, flow, layout, lm, loaders, results, ui
from dashboard.legacy import run_through_app

st.title("Compress & Evaluate")
layout.readable_columns()  # 900 px with the sidebar open to wide screens
run_through_app()
if lm.is_causal_lm(st.session_state["selection"]):
    lm.show_compress_page(st.session_state["selection"])  # perplexity, fidelity, generation
    st.stop()
sel, loaded, data = loaders.load()
ui.show_recipe_note()
hidden = int(loaders.facts(sel, loaded)["hidden_size"] or 768)
controls.show(hidden)  # every knob; the method selectors list the registered methods

with ui.guard():
    config = controls.config_from_state()
    results.show_estimate(loaded, config)
clicked = st.button(
    "Evaluate",
    type="primary",
    help="Compress a copy of the model with these settings; evaluate both on the same rows.",
)
if clicked:
    with ui.inline_errors():  # the previous results and the explainers stay on the page
        flow.evaluate_compressed(sel, loaded, data, config)
evaluation = flow.shown_evaluation(sel, loaded, data)
if evaluation is None:
    st.info(
        "Press **Evaluate** to compress a copy of the model and compare it with the original "
        f"on {len(data)} test rows."
    )
else:
    results.show_results(evaluation, config)
explainers.show_explainers(loaded, config, lambda: loaders.dataset(sel, "train").texts)
