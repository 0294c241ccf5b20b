"""Train: fine-tune, recover a compressed model, prune gradually or distil; live curves, Cancel."""

import streamlit as st

from dashboard import state, training
from dashboard.text import plain
from llmopt import figures

st.title("Train")
sel, loaded, data = state.load()
layers = int(state.facts(sel, loaded)["layers"] or 1)
task = st.radio("Task", list(training.TASKS), format_func=training.TASKS.get, horizontal=True,
                key="t_task", persist_state="session")  # fmt: skip
left, mid, right = st.columns(3)
params = {"epochs": left.number_input("Epochs", 0.25, 20.0, None, 0.25, key=f"t_epochs_{task}",
                                      placeholder="task default")}  # fmt: skip
rows = training.config(task, {}).train_limit or 2000
params["train_limit"] = mid.number_input("Training rows", 2, 1_000_000, rows, 100,
                                         key=f"t_rows_{task}")  # fmt: skip
if task == "finetune":
    params["train_layers"] = right.selectbox(
        "Layers that train", ["head", *range(1, layers + 1), "all"], index=min(4, layers + 1),
        key="t_layers",
        help="The classifier head only, the head and the top K transformer blocks, or all.",
    )  # fmt: skip
elif task == "recover":
    params["method"] = right.selectbox("Method", ["head", "finetune"], key="t_recover",
                                       help="Re-fit the head (seconds), or a short fine-tune "
                                       "that keeps masks, grids and factors.")  # fmt: skip
elif task == "prune":
    params["final_sparsity"] = right.slider("Final sparsity", 0.05, 0.95, 0.7, 0.05, key="t_fs")
    params["schedule"] = left.selectbox("Schedule", ["polynomial", "constant"], key="t_sched")
    params["method"] = mid.selectbox("Pruning method", ["magnitude", "wanda"], key="t_pmethod")
else:
    params["n_layers"] = right.slider("Student layers", 1, layers, max(1, layers // 2),
                                      key="t_student")  # fmt: skip
    params["temperature"] = left.slider("Temperature", 1.0, 8.0, 2.0, 0.5, key="t_temp")
    params["alpha"] = mid.slider("α (weight of the true labels)", 0.0, 1.0, 0.5, 0.1, key="t_a")
job = training.current(sel)
running = job is not None and job.running
if not running:
    with state.guard():
        est = training.estimate(sel, loaded, task, params, len(data))
        if task == "prune":
            st.plotly_chart(figures.schedule_figure(training.schedule_points(sel, loaded, params)))
    st.caption(f"Estimated time: about {training.duration(est['seconds'])} ({est['steps']} "
               f"steps; from one timed step on this machine, plus evaluating {len(data)} rows "
               "before and after).")  # fmt: skip
go, stop = st.columns([1, 5])
if go.button("Start training", type="primary", disabled=running, key="t_start"):
    with state.inline_errors():
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
                with state.inline_errors():
                    training.save(job, folder, overwrite)
                    st.success(
                        f"Saved to {plain(folder.strip())}"
                    )  # as typed: not the server's path
