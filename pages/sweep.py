"""Sweep: run one compression knob over many values and find the best size/accuracy trade-offs."""

import streamlit as st

from dashboard import flow, jobs, lm, lm_sweep, loaders, ui
from dashboard.legacy import run_through_app
from llmopt import figures
from llmopt.sweep import (
    SWEEP_KNOBS,
    duration,
    estimate_sweep,
    knob_values,
    pareto_front,
    sweep_needs_calibration,
)

st.title("Sweep")
st.markdown(
    "Turn one knob through many values, compress and evaluate at each, and see where accuracy "
    "(a causal LM's perplexity) starts to suffer and which settings give the best size for it."
)
run_through_app()
if lm.is_causal_lm(st.session_state["selection"]):  # perplexity against the knob
    lm_sweep.show_sweep_page(st.session_state["selection"])
    st.stop()
sel, loaded, data = loaders.load()
knob = st.selectbox(
    "Knob",
    list(SWEEP_KNOBS),
    format_func=lambda k: SWEEP_KNOBS[k]["label"],
    key="s_knob",
    persist_state="session",
)
spec = SWEEP_KNOBS[knob]
st.caption(spec["help"])
with ui.guard():
    choices, defaults = knob_values(loaded, knob)
left, right = st.columns([3, 2])
values = left.multiselect(
    "Values", choices, defaults, key=f"s_values_{knob}", persist_state="session"
)
methods = right.multiselect(
    "Methods",
    list(spec["methods"]),
    list(spec["methods"])[:2],
    key=f"s_methods_{knob}",
    persist_state="session",
)
points = len(values) * len(methods)
st.caption(f"{points} points on {len(data)} rows; each compresses a copy and evaluates it.")
run, estimate = st.columns([1, 4])
if estimate.button(
    "Estimate the time",
    help="Runs one point of each method now, as the sweep would, and multiplies its time by "
    "that method's number of points.",
):
    with ui.guard(), st.spinner("Timing one point of each method…"):
        base = loaders.baseline(sel, loaded, data)
        needs = sweep_needs_calibration(knob, methods)
        est = estimate_sweep(
            loaded, data, knob, values, methods, base_result=base,
            calibration=loaders.dataset(sel, "train") if needs else None,
        )  # fmt: skip
        each = ", ".join(f"{m} {t:.1f} s" for m, t in est.per_method.items())
        st.info(
            f"Estimate: about {duration(est.seconds)} for {est.points} points (one point timed "
            f"now per method: {each}). Times vary with the value and the machine's load."
        )
if run.button("Run sweep", type="primary"):
    with ui.guard():
        flow.run_sweep(sel, loaded, data, knob, values, methods)
jobs.submit_button(sel, data, knob, values, methods)  # a detached job, followed below
jobs.panel()
frame = flow.last_sweep(sel, data)
if frame is None:
    st.info(
        "Choose values and methods, then press **Run sweep** (in this tab) or **Run as a job** "
        "(keeps running when the tab is closed; its points appear on the Compare page)."
    )
else:
    st.plotly_chart(figures.sweep_figure(frame))
    left, right = st.columns([3, 2], gap="large")
    left.plotly_chart(figures.pareto_figure(frame))
    right.markdown("**Pareto frontier**: nothing else is both smaller and more accurate.")
    front = frame[pareto_front(frame, x="size_bytes", y="accuracy")].sort_values("size_mb")
    right.dataframe(front[["method", "value", "size_mb", "accuracy", "agreement"]], hide_index=True)
    st.dataframe(frame, hide_index=True)
    st.caption(
        "Latency: a point that runs the baseline's kernels (pruning, simulated quantization) "
        "has the baseline's latency (same kernels), as on the Compress and Compare pages; "
        "int8 kernels and low-rank factors are timed together with the baseline (paired)."
    )
    st.download_button(
        "Download CSV",
        frame.to_csv(index=False),
        file_name=f"sweep_{frame['knob'].iloc[0]}.csv",
        mime="text/csv",
        icon=":material/download:",
    )
