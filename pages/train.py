"""Train: fine-tune, recover a compressed model, prune gradually or distil; live curves, Cancel;
for a causal LM perplexity before and after; and pre-train a small LM from a text column.

The tasks and their controls come from the task registry (``llmopt.tasks``)."""

import streamlit as st

from dashboard import loaders, training, ui
from dashboard.text import plain
from llmopt import figures, tasks

st.title("Train")
sel, loaded, data = loaders.load(causal_lm=True)
lm = loaders.is_lm(loaded)
layers = training.layers(sel, loaded)
known = {n: t.title for n, t in tasks.training("causal-lm" if lm else None).items()}
known[training.PRETRAIN] = training.PRETRAIN_TITLE  # no base model: not a registry task
task = st.radio("Task", list(known), format_func=known.get, horizontal=True, key="t_task",
                persist_state="session")  # fmt: skip
job = training.current(sel, task)
running = job is not None and job.running
left, mid, right = st.columns(3)
if task == training.PRETRAIN:
    st.caption(training.pretrain_caption(sel, data))
    minutes = left.number_input("Time budget (minutes)", 0.05, 120.0, 4.0, 0.5, key="t_minutes")
    window = mid.number_input("Training window (tokens)", 8, 2048, 256, 8, key="t_window")
else:
    params = {"epochs": left.number_input("Epochs", 0.25, 20.0, None, 0.25, key=f"t_epochs_{task}",
                                          placeholder="task default")}  # fmt: skip
    rows = training.config(task, {}).train_limit or 2000
    params["train_limit"] = mid.number_input("Training rows", 2, 1_000_000, rows, 100,
                                             key=f"t_rows_{task}")  # fmt: skip
    params.update(training.controls(task, layers, (left, mid, right), lm=lm))
    if not running and lm:
        st.caption(training.LM_CAPTION)
    elif not running:
        with ui.guard():
            est = training.estimate(sel, loaded, task, params, len(data))
            points = training.schedule_points(sel, loaded, task, params)
            if points:
                st.plotly_chart(figures.schedule_figure(points))
        st.caption(training.estimate_text(est, len(data)))
go, stop = st.columns([1, 5])
if go.button("Start training", type="primary", disabled=running, key="t_start"):
    with ui.inline_errors():
        if task == training.PRETRAIN:
            job = training.start_pretrain(sel, data, minutes, window)
        else:
            job = training.start(sel, loaded, data, task, params)
        running = True
if running and stop.button("Cancel", key="t_cancel", help="Stop after this step; save nothing."):
    job.cancel.set()
if running:
    training.live(job)
elif job is not None and job.task == training.PRETRAIN:
    training.show_pretrain(job)
elif job is not None:
    training.record(sel, loaded, data, job)  # once, into the experiment store, with its parent
    training.show(job, data)
if not running and job is not None and job.status == "done":
    with st.form("t_save"):
        folder = st.text_input("Save to folder (on the server)", key="t_folder")
        overwrite = st.checkbox("Overwrite", key="t_overwrite")
        if st.form_submit_button("Save model"):
            with ui.inline_errors():
                training.save(job, folder, overwrite)
                st.success(f"Saved to {plain(folder.strip())}: type this folder as the model in "
                           "the sidebar to load it on every page.")  # fmt: skip
