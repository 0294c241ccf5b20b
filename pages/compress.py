"""Compress & Evaluate: set the knobs, see an instant estimate, evaluate against the baseline."""

import streamlit as st

from dashboard import controls, explainers, layout, lm, results, state

st.title("Compress & Evaluate")
layout.readable_columns()  # 900 px with the sidebar open to wide screens
state.run_through_app()
if lm.is_causal_lm(st.session_state["selection"]):
    lm.show_compress_page(st.session_state["selection"])  # perplexity, fidelity, generation
    st.stop()
sel, loaded, data = state.load()
state.show_recipe_note()
hidden = int(state.facts(sel, loaded)["hidden_size"] or 768)
controls.show(hidden)  # every knob; the method selectors list the registered methods

with state.guard():
    config = controls.config_from_state()
    results.show_estimate(loaded, config)
clicked = st.button(
    "Evaluate",
    type="primary",
    help="Compress a copy of the model with these settings; evaluate both on the same rows.",
)
if clicked:
    with state.inline_errors():  # the previous results and the explainers stay on the page
        state.evaluate_compressed(sel, loaded, data, config)
evaluation = state.shown_evaluation(sel, loaded, data)
if evaluation is None:
    st.info(
        "Press **Evaluate** to compress a copy of the model and compare it with the original "
        f"on {len(data)} test rows."
    )
else:
    results.show_results(evaluation, config)
explainers.show_explainers(loaded, config, lambda: state.dataset(sel, "train").texts)
