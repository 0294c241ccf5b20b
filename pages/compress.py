"""Compress & Evaluate: set the knobs, see an instant estimate, evaluate against the baseline."""

import streamlit as st

from dashboard import controls, explainers, results, state

st.title("Compress & Evaluate")
sel, loaded, data = state.load()
state.show_recipe_note()
hidden = int(state.facts(sel, loaded)["hidden_size"] or 768)
first, control = controls.CONTROLS, controls.control

prune, quant, lowrank = st.columns(3, gap="large")
with prune:
    st.subheader("Pruning")
    control(st.selectbox, "Method", "c_method", ["magnitude", "wanda"])
    pattern = control(st.selectbox, "Pattern", "c_pattern", controls.PATTERNS)
    nm = pattern != "unstructured"
    control(st.slider, "Sparsity", "c_sparsity", 0.0, 0.95, first["c_sparsity"], 0.05, disabled=nm)
    if nm:
        n, m = map(int, pattern.split(":"))
        st.caption(
            f"{pattern} keeps {n} of every {m} weights, so the pattern fixes the sparsity at "
            f"{1 - n / m:.0%}: the slider is not used."
        )
with quant:
    st.subheader("Quantization")
    bits = control(st.select_slider, "Bit-width", "c_bits", controls.BIT_OPTIONS, first["c_bits"])
    control(st.selectbox, "Group size", "c_group", controls.GROUP_OPTIONS, disabled=bits == "off")
    control(st.checkbox, "Real int8 kernels", "c_int8", disabled=bits != "off")
with lowrank:
    st.subheader("Low rank")
    control(st.slider, "Rank", "c_rank", 0, hidden, first["c_rank"])
    st.caption(f"0 = off. A {hidden}×{hidden} layer saves memory only below rank {hidden // 2}.")

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
explainers.show_explainers(loaded, config)
