"""Auto: where compression breaks the model, layer by layer, and the search for the smallest
model within a tolerance (accuracy for a classifier, perplexity for a causal LM)."""

import streamlit as st

from dashboard import auto, loaders, ui
from dashboard.text import plain
from llmopt.figures.sensitivity import sensitivity_figure
from llmopt.sensitivity import correlation_frame, result_frame

st.title("Auto")
st.markdown(
    "**Per-layer sensitivity.** Compress each matrix (or block, or matrix type) alone at a "
    "few levels of one method and measure how much the metric moves on validation rows "
    "taken from the training split, with a paired 95% interval. Cheap proxies sit beside "
    "the measured change, with how well each ranks the layers (Spearman)."
)
sel, loaded, data = loaders.load(causal_lm=True)  # a causal LM: NLL per token
with ui.guard():
    n_train = len(loaders.dataset(sel, "train"))
settings = auto.controls(n_train)
if st.button("Run sensitivity", type="primary"):
    with ui.guard():
        auto.run(sel, loaded, settings)
result = auto.last(sel)
if result is None:
    st.info("Choose a method and levels, then press **Run sensitivity**.")
else:
    st.caption(
        f"{plain(result.method)} · baseline {result.metric} {result.baseline:.4f} on "
        f"{result.n_validation} validation rows · {len(result.layers)} measurements in "
        f"{result.seconds:.1f} s"
    )
    st.plotly_chart(sensitivity_figure(result))
    st.markdown("**How well each proxy ranks the measured loss** (Spearman; 1 = same order)")
    st.dataframe(correlation_frame(result), hide_index=True)
    st.dataframe(result_frame(result), hide_index=True)

from dashboard import search  # noqa: E402 - the Search section closes the page

search.section(sel, loaded, data, n_train)
