"""Train: fine-tune, recover a compressed model, prune gradually or distil; live curves, Cancel.

The tasks and their controls come from the task registry (``llmopt.tasks``)."""

import streamlit as st

from dashboard import loaders, training, ui
from dashboard.text import plain
from llmopt import figures, tasks

st.title("Train")
sel, loaded, data = loaders.load()
layers = int(loaders.facts(sel, loaded)["layers"] or 1)
known = tasks.training()
task = st.radio("Task", list(known), format_func=lambda t: known[t].title, horizontal=True,
                key="t_task", persist_state="session")  # fmt: skip
left, mid, right = st.columns(3)
params = {"epochs": left.number_input("Epochs", 0.25, 20.0, None, 0.25, key=f"t_epochs_{task}",
                                      placeholder="task default")}  # fmt: skip
rows = training.config(task, {}).train_limit or 2000
params["train_limit"] = mid.number_input("Training rows", 2, 1_000_000, rows, 100,
                                         key=f"t_rows_{task}")  # fmt: skip
params.update(training.controls(task, layers, (left, mid, right)))
job = training.current(sel)
running = job is not None and job.running
if not running:
    with ui.guard():
        est = training.estimate(sel, loaded, task, params, len(data))
        points = training.schedule_points(sel, loaded, task, params)
        if points:
            st.plotly_chart(figures.schedule_figure(points))
    st.caption(training.estimate_text(est, len(data)))
go, stop = st.columns([1, 5])
if go.button("Start training", type="primary", disabled=running, key="t_start"):
    with ui.inline_errors():
        job = training.start(sel, loaded, data, task, params)
        running = True
if running and stop.button("Cancel", key="t_cancel", help="Stop after this step; save nothing."):
    job.cancel.set()
if running:
    training.live(job)
elif job is not None:
    training.record(sel, loaded, data, job)  # once, into the experiment store, with its parent
    training.show(job, data)
    if job.status == "done":
        with st.form("t_save"):
            folder = st.text_input("Save to folder (on the server)", key="t_folder")
            overwrite = st.checkbox("Overwrite", key="t_overwrite")
            if st.form_submit_button("Save model"):
                with ui.inline_errors():
                    training.save(job, folder, overwrite)
                    st.success(f"Saved to {plain(folder.strip())}")  # as typed, not resolved
