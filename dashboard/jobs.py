"""The Sweep page's jobs: a sweep submitted as a detached ``llmopt sweep`` process, followed
from the experiment store, so closing the tab (or restarting the server) does not stop it and
reopening the page shows its progress."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import streamlit as st

from dashboard import flow, loaders
from dashboard.sidebar import Selection
from dashboard.text import plain
from llmopt.errors import LlmoptError
from llmopt.paths import llmopt_home

REFRESH_S = 2.0
SHOWN = 5  # the latest jobs listed on the page


def executors() -> list[str]:
    """The executors this server can offer (Ray only where it is installed)."""
    found = ["inline", "local"]
    if importlib.util.find_spec("ray") is not None:
        found.append("ray")
    return found


def argv(sel: Selection, data, knob: str, values: list, methods: list, executor: str) -> list:
    """The ``llmopt sweep`` command line of the page's settings."""
    rows = flow.rows_spec(sel, data)
    line = [
        sys.executable, "-m", "llmopt", "sweep", "--knob", knob,
        "--values", ",".join("off" if v is None else str(v) for v in values),
        "--methods", ",".join(methods), "--model", sel.model_source,
        "--dataset", flow.dataset_source(sel), "--split", rows["split"],
        "--text-column", rows["text_column"], "--label-column", rows["label_column"],
        "--executor", executor,
    ]  # fmt: skip
    if rows["limit"]:
        line += ["--limit", str(rows["limit"])]
    return line


def submit(command: list[str]) -> int:
    """Start ``command`` detached from this server (its own session, output to a log file
    under ``$LLMOPT_HOME/jobs``); the process id."""
    folder = llmopt_home() / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments, no shell
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
    return process.pid


def _store():
    from llmopt.jobs.store import JobStore

    return JobStore(loaders.experiment_store())


def submit_button(sel: Selection, data, knob: str, values: list, methods: list) -> None:
    """'Run as a job': where it runs, and the button that starts it."""
    left, right = st.columns([1, 3])
    executor = right.selectbox(
        "Where the job runs", executors(), key="s_job_executor",
        help="inline: one process; local: a process pool; ray: a local Ray, or the cluster "
        "at LLMOPT_RAY_ADDRESS",
    )  # fmt: skip
    if left.button("Run as a job", help="Keeps running when the tab is closed; every point is "
                   "recorded for the Compare page as it finishes."):  # fmt: skip
        if not values or not methods:
            st.warning("Choose at least one value and one method.")
            return
        submit(argv(sel, data, knob, values, methods, executor))
        st.session_state["s_job_submitted"] = time.time()
        st.toast("Sweep job started; its progress shows below.")


@st.fragment(run_every=REFRESH_S)
def panel() -> None:
    """The latest jobs with their progress, redrawn from the store; Cancel for running ones."""
    try:
        jobs = _store().list()[:SHOWN]
    except LlmoptError as exc:
        st.warning(f"The jobs cannot be read: {plain(exc.render('app'))}")
        return
    if not jobs:
        if st.session_state.get("s_job_submitted"):
            st.caption("Starting the job (loading the model)…")
        return
    st.markdown("**Sweep jobs** (they keep running when the tab is closed)")
    for job in jobs:
        spec = job.spec
        what = (
            f"#{job.id} {spec.get('knob')}: {len(spec.get('values', []))} values × "
            f"{', '.join(spec.get('methods', []))} — {job.status}, {job.done}/{job.total}"
        )
        text, button = st.columns([5, 1])
        text.progress(job.done / job.total if job.total else 0.0, text=plain(what))
        if job.error:
            text.caption(plain(job.error))
        if job.status in ("queued", "running") and button.button("Cancel", key=f"cancel{job.id}"):
            cancel(job.id)


def cancel(job_id: int) -> None:
    try:
        _store().request_cancel(job_id)
    except LlmoptError as exc:
        st.warning(plain(exc.render("app")))
    else:
        st.toast(f"Job {job_id}: cancel asked for; it stops after the tasks running now.")
