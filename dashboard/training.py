"""The Train page's side: one training job per session in a background thread, its live
progress (a fragment that refreshes every second), Cancel, results and saving.

The job runs an ``llmopt.training`` function in a thread owned by this session; the thread
only writes plain values into the ``Job`` (no Streamlit call), and the page reads them.
Cancel sets an event the training loop checks after every step: the run stops at once with
the best model so far, and nothing is written to disk unless the user saves it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

import llmopt
from dashboard import flow, loaders, ui
from dashboard.results import score_metric
from dashboard.sidebar import Selection, confinement
from dashboard.text import plain
from llmopt import figures, tasks
from llmopt.errors import Fix, LlmoptError

REFRESH_S = 1.0  # how often the live view redraws while a job runs


@dataclass
class Job:
    """A training run in a background thread and what it has reported so far."""

    task: str
    key: tuple  # (model, dataset rows): results are shown only for the same choice
    params: dict
    cancel: threading.Event = field(default_factory=threading.Event)
    status: str = "running"  # running | done | cancelled | failed
    fraction: float = 0.0
    message: str = "starting"
    history: list = field(default_factory=list)
    run: object = None  # the TrainingRun when done
    error: Exception | None = None
    started: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None
    start_model: object = None  # the compressed model a recovery starts from
    run_id: int | None = None  # the finished run's id in the experiment store
    stored: object = None  # ... and its stored record (latency measured beside the base)
    recorded: bool = False
    tested: dict | None = None  # statistics of the result against its starting point
    estimated: dict | None = None  # the time estimate shown when it started

    @property
    def running(self) -> bool:
        return self.status == "running"

    def progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = min(max(float(fraction), 0.0), 1.0), message

    def record(self, entry: dict) -> None:
        self.history = [*self.history, entry]  # a new list: the page may be reading the old one


def config(task: str, params: dict):
    """The ``TrainConfig`` of a task's controls (its defaults for anything not set)."""
    return (
        tasks.get(task)
        .defaults()
        .with_(
            epochs=params.get("epochs"),
            train_layers=params.get("train_layers"),
            train_limit=params.get("train_limit"),
            learning_rate=params.get("learning_rate"),
        )
    )


def _work(job: Job, loaded, train, data, compressed) -> None:
    """The thread's body: run the task, keep its result or its error."""
    task = tasks.get(job.task)
    hooks = tasks.Hooks(eval_data=data, progress=job.progress, cancel=job.cancel,
                        on_history=job.record)  # fmt: skip
    start_model = compressed if task.starts_from == "compressed" else loaded
    try:
        run = task.run(start_model, train, job.params, config(job.task, job.params), hooks)
        job.run = run
        job.status = "cancelled" if run.cancelled else "done"
    except Exception as exc:  # shown on the page in the dashboard's words
        job.error, job.status = exc, "failed"


def compressed_model(sel: Selection):
    """This session's compressed model (from the Compress page) for the chosen base, or None."""
    hit = flow.session_compressed(sel)
    return None if hit is None else hit["model"]


def start(sel: Selection, loaded, data, task: str, params: dict) -> Job:
    """Start ``task`` in a background thread owned by this session.

    Raises:
        LlmoptError: a job is already running, or recovery without a compressed model.
    """
    old = current(sel)
    if old is not None and old.running:
        raise LlmoptError("a training run is in progress; wait for it or press Cancel")
    from_compressed = tasks.get(task).starts_from == "compressed"
    compressed = compressed_model(sel) if from_compressed else None
    if from_compressed and compressed is None:
        raise LlmoptError(
            "there is no compressed model to recover yet",
            fix=Fix(cli="", app="compress the model on the Compress & Evaluate page first"),
        )
    config(task, params)  # bad settings fail here, on the page, not in the thread
    train = loaders.dataset(sel, "train")
    job = Job(task, (sel.model_key, data.fingerprint), dict(params), start_model=compressed)
    memo = st.session_state.get("train_estimate")
    job.estimated = memo[1] if memo is not None else None
    job.thread = threading.Thread(
        target=_work, args=(job, loaded, train, data, compressed), daemon=True,
        name=f"llmopt-train-{task}",
    )  # fmt: skip
    st.session_state["train_job"] = job
    job.thread.start()
    return job


def current(sel: Selection) -> Job | None:
    """This session's latest training job, if it was made on the chosen model and dataset."""
    job = st.session_state.get("train_job")
    return job if job is not None and job.key[0] == sel.model_key else None


PACE_LIMITS = (0.25, 20.0)  # a last run's actual/estimated time outside this is not a pace


def estimate(sel: Selection, loaded, task: str, params: dict, eval_rows: int) -> dict:
    """The estimated run time of a task from training steps timed now (once per settings in
    this session), scaled by how the last finished run here compared with its own estimate."""
    from llmopt.training.timing import estimate_seconds

    spec = tasks.get(task)
    cfg = config(task, params)
    model = compressed_model(sel) if spec.starts_from == "compressed" else loaded
    fraction = 1.0  # the share of the blocks that trains (a distillation student's)
    if spec.student_fraction is not None:
        fraction = spec.student_fraction(params, loaders.facts(sel, loaded)["layers"] or 1)
    # the training rows, the evaluated rows and the model trained all change the estimate
    key = (sel.model_key, sel.data_key, task, cfg, fraction, eval_rows, id(model))
    memo = st.session_state.get("train_estimate")
    if memo is None or memo[0] != key:
        train = loaders.dataset(sel, "train")
        memo = (key, estimate_seconds(model or loaded, train, cfg, eval_rows=eval_rows,
                                      student_fraction=fraction))  # fmt: skip
        st.session_state["train_estimate"] = memo
    pace = st.session_state.get("train_pace")
    if pace is None:
        return memo[1]
    return {**memo[1], "seconds": memo[1]["seconds"] * pace, "pace": pace}


def learn_pace(job: Job) -> None:
    """Keep how long a finished run took against its estimate: later estimates scale by it."""
    est, run = job.estimated, job.run
    if job.status != "done" or not est or not est.get("seconds") or run is None:
        return
    unscaled = est["seconds"] / est.get("pace", 1.0)
    pace = run.seconds / unscaled
    if PACE_LIMITS[0] <= pace <= PACE_LIMITS[1]:
        st.session_state["train_pace"] = pace


def estimate_text(est: dict, eval_rows: int) -> str:
    """The caption of an estimate: the figure and how it was made."""
    samples = est.get("step_samples") or []
    text = (
        f"Estimated time: about {duration(est['seconds'])} ({est['steps']} steps of "
        f"{est['step_seconds']:.2g} s: the median of {len(samples)} training steps timed on "
        f"this machine just now; plus validation and evaluating {eval_rows} rows before and "
        "after)."
    )
    pace = est.get("pace")
    if pace is not None:
        text += (f" Scaled by {pace:.2g}×: the last run in this session took {pace:.2g}× its "
                 "estimate.")  # fmt: skip
    return text


def schedule_points(sel: Selection, loaded, task: str, params: dict) -> list[dict] | None:
    """The schedule a task will follow, per step (to plot before starting), or None."""
    spec = tasks.get(task)
    if spec.preview is None:
        return None
    return spec.preview(loaded, loaders.dataset(sel, "train"), params, config(task, params))


def controls(task: str, layers: int, columns) -> dict:
    """The task's own settings as page controls (from its ``Param`` list), in ``columns``."""
    params = {}
    for p in tasks.get(task).params:
        if not p.page:
            continue
        col = columns[p.column]
        if p.kind == "choice":
            options = list(p.resolve(p.options, layers))
            default = p.resolve(p.default, layers)
            index = options.index(default) if default in options else 0
            params[p.key] = col.selectbox(p.label, options, index=index, key=p.widget,
                                          help=p.help)  # fmt: skip
        else:
            low, high = p.resolve(p.low, layers), p.resolve(p.high, layers)
            default = p.resolve(p.default, layers)
            params[p.key] = col.slider(p.label, low, high, default, p.step, key=p.widget,
                                       help=p.help)  # fmt: skip
    return params


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


@st.fragment(run_every=REFRESH_S)
def live(job: Job) -> None:
    """Progress and curves of a running job, redrawn every second; a full rerun when it ends."""
    if not job.running:
        st.rerun(scope="app")
    st.progress(job.fraction, text=job.message)
    st.caption(f"Running for {duration(time.monotonic() - job.started)}.")
    if job.history:
        st.plotly_chart(figures.training_curves_figure(job.history), key="live_curves")


def record(sel: Selection, loaded, data, job: Job) -> None:
    """Record a finished job in the experiment store once, with its parent (a recovery's parent
    is the compressed run it started from); a store that cannot be written is a warning."""
    if job.recorded or job.status != "done":
        return
    job.recorded = True
    learn_pace(job)
    from llmopt.recording import record_evaluation, record_training

    where = {
        "origin": "app",
        "model_source": sel.model_source,
        "dataset_source": flow.dataset_source(sel),
        "rows": flow.rows_spec(sel, data),
    }
    try:
        store = loaders.experiment_store()
        # fine-tune, gradual pruning and distillation evaluated the base model on these rows
        # already; a recovery's "before" is the compressed model, so it needs the baseline
        from_compressed = tasks.get(job.task).starts_from == "compressed"
        base = loaders.baseline(sel, loaded, data) if from_compressed else job.run.before
        parent = None
        if from_compressed:
            parent = _compressed_run(sel, data, job)
            if parent is None:  # compressed but never evaluated on these rows: record it first
                compression = job.start_model.compression or {}
                parent = record_evaluation(
                    store, base_model=loaded, dataset=data, base=base, other=job.run.before,
                    variant=job.start_model, config=compression.get("config"), **where,
                ).run_id  # fmt: skip
        with st.spinner("Recording the run (a smaller model is timed beside the base)…"):
            done = record_training(store, job.run, base_model=loaded, dataset=data, base=base,
                                   parent=parent, **where)  # fmt: skip
        job.run_id, job.stored = done.run_id, store.get(done.run_id)
    except (LlmoptError, OSError) as exc:
        why = exc.render("app") if isinstance(exc, LlmoptError) else str(exc)
        st.warning(f"This training run was not recorded for the Compare page: {plain(why)}")


def _compressed_run(sel: Selection, data, job: Job) -> int | None:
    """The stored run of the compressed model a recovery started from, when this session
    evaluated it on these rows."""
    evaluation = st.session_state.get("evaluation")
    compression = job.start_model.compression or {}
    if (
        evaluation
        and evaluation.get("run_id")
        and evaluation["key"] == (sel.model_key, data.fingerprint)
        and evaluation["config"].to_dict() == compression.get("config")
    ):
        return evaluation["run_id"]
    return None


def _statistics(job: Job) -> dict:
    """Intervals and the exact McNemar test of the result against its starting point (once)."""
    if getattr(job, "tested", None) is None:
        from llmopt.recording import statistics

        job.tested = statistics(job.run.before, job.run.after)
    return job.tested


def _speed(job: Job) -> tuple[str, str | None, str | None]:
    """The speed-up metric (value, noise verdict, how it was measured): measured beside the
    base (paired) or 'same kernels'."""
    stored = job.stored
    if stored is None:
        return "not measured", None, "the run was not recorded"
    if stored.latency_simulated:
        how = "same layers and shapes as the base: no speed change"
        return "1.00× (same kernels)", None, how
    return speedup(stored.latency or {})


def speedup(latency: dict) -> tuple[str, str | None, str | None]:
    """(speed-up, verdict, how) of a stored paired latency record, with the Compress page's
    noise check: a change counts as real only when the two models' timed passes do not
    overlap; otherwise the verdict is "noise" (None when real)."""
    ratio = latency.get("ratio")
    if not ratio:
        return "not measured", None, None
    base = (latency.get("baseline") or {}).get("samples_ms") or []
    other = (latency.get("compressed") or {}).get("samples_ms") or []
    apart = bool(base and other) and (max(other) < min(base) or min(other) > max(base))
    how = (f"Base and trained model timed together, interleaved, {len(other)} passes each: "
           f"base {min(base, default=0):.3g}–{max(base, default=0):.3g} ms, trained "
           f"{min(other, default=0):.3g}–{max(other, default=0):.3g} ms per text. A change "
           "counts as real only when the passes' ranges do not overlap.")  # fmt: skip
    return f"{1 / ratio:.2f}×", None if apart else "noise: the timed passes overlap", how


def show(job: Job, data) -> None:
    """A finished (or failed, or cancelled) job: the result beside its starting point."""
    if job.status == "failed":
        with ui.inline_errors():  # in the dashboard's words; the server log keeps details
            raise job.error
        return
    run = job.run
    if job.status == "cancelled":
        st.warning(
            f"Cancelled after {run.history[-1]['step'] if run.history else 0} steps: the result "
            "below is the best model validated before the stop. Nothing was saved."
        )
    st.subheader("Result")
    labels = tasks.get(job.task).labels
    results = {labels[0]: run.before, labels[1]: run.after}
    table = figures.metrics_table(results)  # latency: the paired measurement below, not these
    st.dataframe(table.drop(columns=["latency_ms_per_sample"], errors="ignore"))
    fidelity = llmopt.compare(run.before, run.after)
    cols = st.columns(4)
    acc_b, acc_a = run.before.metrics["accuracy"], run.after.metrics["accuracy"]
    tested = _statistics(job)
    score_metric(
        cols[0], "Accuracy", acc_a, acc_a - acc_b, tested["delta_intervals"]["accuracy"],
        tested["mcnemar"], names=(f"{labels[0]} model", f"{labels[1]} model"),
    )  # fmt: skip
    cols[1].metric(f"Agreement with {labels[0]}", f"{fidelity['agreement']:.3f}")
    speed, verdict, how = _speed(job)
    cols[2].metric("Speed-up vs the base", speed, verdict, help=how, delta_color="off",
                   delta_arrow="off")  # fmt: skip
    cols[3].metric("Training time", duration(run.seconds))
    left, right = st.columns(2)
    left.plotly_chart(figures.training_curves_figure(run.history), key="done_curves")
    if run.schedule:
        right.plotly_chart(figures.schedule_figure(run.schedule), key="done_schedule")
    else:
        right.plotly_chart(figures.roc_figure(results), key="done_roc")
    for note in run.model.notes[-2:]:
        st.caption(plain(note))
    if job.run_id is not None:
        st.caption(f"Recorded as run #{job.run_id}: see it in its lineage on the Compare page.")


def save(job: Job, folder: str, overwrite: bool) -> Path:
    """Save a finished job's model as a checkpoint in a folder under the server's roots.

    Raises:
        LlmoptError: no folder, a folder outside the roots, or what ``save_model`` refuses.
    """
    folder = folder.strip()
    if not folder:
        raise LlmoptError("type a folder to save the model in")
    target = Path(folder).expanduser()
    if not target.is_absolute():
        target = Path.cwd() / target
    roots = confinement()
    with contextlib.suppress(OSError, RuntimeError):
        target = target.resolve(strict=False)
    if not roots.contains(target):
        raise LlmoptError(
            f"folder {folder!r} is outside the folders this server may write",
            # visitors of a shared server are not told the server's folder names
            fix=Fix(cli="", app="ask whoever runs this server which folder to save in"),
        )
    return llmopt.save_model(job.run.model, target, overwrite=overwrite)
