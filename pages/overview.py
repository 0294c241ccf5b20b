"""Overview: the chosen model and dataset at a glance, and how to use the dashboard."""

import streamlit as st

from dashboard import layout, loaders, ui
from dashboard.text import plain
from llmopt.data import label_balance
from llmopt.figures import facts_table
from llmopt.figures.results import FACT_LIST_ITEMS

LONG_LABEL = 24  # class names longer than this: the label table takes the page's width
FACT_VALUE_CHARS = 40  # a longer list of labels is named below the facts table, not in it

st.title("llmopt — how far can this model be squeezed?")
layout.readable_columns()  # 900 px with the sidebar open to wide screens
st.markdown(
    "Pick a **model** and a **labelled dataset** in the sidebar, then:\n"
    "1. **Compress & Evaluate** — set sparsity, bit-width and rank, press *Evaluate*, and "
    "compare accuracy, ROC, size and latency with the uncompressed model.\n"
    "2. **Attention** — see how compression changed what each head looks at.\n"
    "3. **Sweep** — run one knob over many values and find the best size/accuracy trade-offs.\n"
    "4. **Compare** — every evaluation is recorded: put any of them side by side, with "
    "intervals that say which differences are noise.\n\n"
    "The uncompressed model and its evaluation are computed once and shared; your compressed "
    "model and settings belong to your browser session only."
)
sel, loaded, data = loaders.load()
with ui.guard():
    facts = loaders.facts(sel, loaded)
    balance = label_balance(loaders.dataset(sel, "train"), loaders.dataset(sel, "test"))

st.subheader("Model")
cols = st.columns(5)
cols[0].metric("Parameters", f"{facts['params_total'] / 1e6:.2f} M")
cols[1].metric("Size", f"{facts['size_bytes'] / 1e6:.1f} MB", help="Dense float32 tensors.")
cols[2].metric("Layers", facts["layers"] if facts["layers"] is not None else "n/a")
cols[3].metric("Heads per layer", facts["heads"] if facts["heads"] is not None else "n/a")
cols[4].metric("Max length", f"{facts['max_length']} tokens")
left, right = st.columns([3, 2], gap="large")
# Long class names do not fit the value column (a table cell never wraps): named below it.
names = [str(n) for n in facts.get("labels") or []]
named_below = len(", ".join(names[:FACT_LIST_ITEMS])) > FACT_VALUE_CHARS
table = facts_table({**facts, "labels": f"{len(names)}, named below"} if named_below else facts)
left.dataframe(table, hide_index=True, width="stretch", height=35 * len(table) + 38)
if named_below:
    more = f", … ({len(names)} in all)" if len(names) > FACT_LIST_ITEMS else ""
    left.caption("Labels: " + ", ".join(plain(n) for n in names[:FACT_LIST_ITEMS]) + more)
right.markdown("**Notes**")
for note in loaded.notes or ["none"]:
    right.caption(plain(note))

st.subheader("Dataset")
st.markdown(
    f"**{plain(data.name)}** — {int(balance['train'].sum())} training rows, "
    f"{int(balance['test'].sum())} test rows; the dashboard evaluates the first **{len(data)}** "
    "test rows (change *Evaluation rows* in the sidebar)."
)
if note := data.dropped_note():
    st.caption(plain(note))
# Long class names get the table's full width (a narrow column cut them to "categ…").
longest = int(balance["label"].astype(str).str.len().max()) if len(balance) else 0
wide = longest > LONG_LABEL
left, right = (st.container(), st.container()) if wide else st.columns([2, 3])
left.dataframe(
    balance,
    hide_index=True,
    width="stretch",
    column_config={
        "label": st.column_config.TextColumn(
            "label", width=min(max(8 * longest + 24, 120), 900) if wide else None
        ),
    },
)
right.bar_chart(
    balance,
    x="label",
    y=["train", "test"],
    stack=False,
    horizontal=True,
    height=max(200, 24 * len(balance) + 80),  # a readable pair of bars per label
    x_label="label",
    y_label="rows",
)
st.caption(
    "Label balance: a model that always predicts the largest class gets its share as "
    "accuracy — compare the metrics with that."
)
