"""Attention: what each head looks at, before and after compression."""

import streamlit as st

from dashboard import controls, flow, loaders, results, ui
from llmopt import figures
from llmopt.attention import DEFAULT_WINDOW, attention_predictions, attention_window
from llmopt.data import display_text
from llmopt.explain import FORMULAS

st.title("Attention")
st.markdown(FORMULAS["attention"])
sel, loaded, data = loaders.load(causal_lm=True)
lm = loaders.is_lm(loaded)  # a causal LM: no labels; its next-token prediction instead
text = st.text_area(
    "Text",
    value=display_text(data.texts[0]),
    key="a_text",
    persist_state="session",
    help="Any text; it starts as the first text of the evaluation rows (HTML tags removed). Long "
    "texts are cut to the model's maximum length.",
)
with ui.guard():
    base = loaders.attention(sel, loaded, text, "baseline")
left, right = st.columns(2)
layer = left.selectbox("Layer", range(base.n_layers), key="a_layer", persist_state="session")
head = right.selectbox("Head", range(base.n_heads), key="a_head", persist_state="session")
st.caption(
    f"{len(base.tokens)} tokens. Rows: the token that looks; columns: where it looks. Long "
    "texts label every few tokens; hover over a cell for its tokens."
)

hit = loaders.session_compressed(sel, loaded)
other = None
if hit is not None:
    with ui.guard():
        other = loaders.attention(sel, hit["model"], text, hit["key"])
full = base
if base.causal and base.n_tokens > DEFAULT_WINDOW:  # long inputs: a window the user moves
    start = st.slider(
        "Window start (token position)",
        0,
        base.n_tokens - DEFAULT_WINDOW,
        0,
        key="a_start",
        help=f"The maps show {DEFAULT_WINDOW} tokens from this position; the upper triangle "
        "is blank because each token sees only itself and the tokens before it.",
    )
    base = attention_window(base, start, DEFAULT_WINDOW)
    other = None if other is None else attention_window(other, start, DEFAULT_WINDOW)
st.markdown("**Likeliest next tokens after this text**" if lm else "**Prediction for this text**")
st.dataframe(
    attention_predictions(full, other),
    hide_index=True,
    column_config={"probability": st.column_config.NumberColumn(format="%.3f")},
)
if hit is None:
    st.info(
        "Nothing is compressed in this session yet, so only the uncompressed model is shown. "
        "Compress with the settings of the *Compress & Evaluate* page (their first values if you "
        "have not been there: 50 % magnitude pruning) to compare."
        + (" For a causal LM, press *Evaluate* there with a compression set." if lm else "")
    )
    if not lm and st.button("Compress with those settings", type="primary"):
        with ui.guard():
            flow.compressed(sel, loaded, controls.config_from_state())
        st.rerun()
    st.plotly_chart(figures.attention_figure(base, layer, head))
else:
    st.caption(f"Compressed model of this session: **{hit['config'].describe()}**.")
    st.plotly_chart(results.attention_compare(base, other, layer, head))

which = st.radio(
    "All heads of this layer for",
    ["uncompressed", "compressed"] if hit is not None else ["uncompressed"],
    horizontal=True,
    key="a_grid",
)
grid = other if which == "compressed" else base
st.plotly_chart(figures.attention_heads_figure(grid, layer))

if hit is not None:
    st.subheader("Attention drift")
    texts = data.texts[:8]
    with ui.guard():
        drift = loaders.drift(sel, loaded, hit, texts)
    st.caption(
        f"Mean Jensen–Shannon divergence between the two models' attention rows over "
        f"{len(texts)} evaluation texts: the darker the red, the more compression disturbed "
        "that head (white = unchanged)."
    )
    st.plotly_chart(figures.drift_figure(drift))
    with st.expander("How drift is measured"):
        st.markdown(FORMULAS["js"])
