"""The Train page's side: one training job per session in a background thread, its live
progress (a fragment that refreshes every second), Cancel, results and saving; for a causal
LM, perplexity before and after; and the *Pre-train* section (a new small LM from a text
column, which is not a registry task: it starts from no model).

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
from dashboard.results import score_metric, timed_apart
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
    lm_eval: object = None  # a causal LM's LMTrainingEvaluation (pre-training: its perplexity)
    protocol: str = "paper"  # how a causal LM's perplexity is scored before and after
    seq_len: int | None = None  # ... and in windows of how many tokens (None: the default)
    pretrained: object = None  # pre-training's PretrainResult
    eval_error: str | None = None  # why a pre-trained model could not be scored (still saved)
    lm: bool = False  # a causal LM trains (its curves are losses in nats per token)

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
    """The thread's body: run the task, keep its result or its error; a causal LM's result is
    then scored (perplexity of the starting and the trained model on the same windows)."""
    from llmopt.training.lm import evaluate_lm_training, is_lm

    task = tasks.get(job.task)
    lm = is_lm(loaded)
    hooks = tasks.Hooks(eval_data=None if lm else data, progress=job.progress,
                        cancel=job.cancel, on_history=job.record)  # fmt: skip
    start_model = compressed if task.starts_from == "compressed" else loaded
    try:
        run = task.run(start_model, train, job.params, config(job.task, job.params), hooks)
        job.run = run
        if lm and not run.cancelled:
            job.progress(0.0, "evaluating: perplexity before and after, on the same windows")
            job.lm_eval = evaluate_lm_training(
                start_model, run.model, data.texts, base=loaded, protocol=job.protocol,
                seq_len=job.seq_len, progress=job.progress,
            )  # fmt: skip
        job.status = "cancelled" if run.cancelled else "done"
    except Exception as exc:  # shown on the page in the dashboard's words
        job.error, job.status = exc, "failed"


def compressed_model(sel: Selection, loaded):
    """This session's compressed model (from the Compress page) for the chosen base, or None."""
    hit = loaders.session_compressed(sel, loaded)
    return None if hit is None else hit["model"]


def layers(sel: Selection, loaded) -> int:
    """The base model's number of transformer blocks (at least 1)."""
    if loaders.is_lm(loaded):
        from llmopt.training.loop import layer_groups

        return len(layer_groups(loaded.model)[0]) or 1
    return int(loaders.facts(sel, loaded)["layers"] or 1)


def lm_scoring(sel: Selection, data) -> tuple[str, int | None]:
    """(protocol, window) to score a causal LM before and after training: those of this
    session's latest evaluation of it on these rows (a recovery's parent is that run), else
    the paper protocol in the default window."""
    from dashboard.lm import LM_RESULT

    result = st.session_state.get(LM_RESULT)
    if result is not None and result["key"][:2] == (sel.model_source, data.fingerprint):
        return result["key"][2], result["key"][3]
    return "paper", None


def start(sel: Selection, loaded, data, task: str, params: dict) -> Job:
    """Start ``task`` in a background thread owned by this session.

    Raises:
        LlmoptError: a job is already running, or recovery without a compressed model.
    """
    _check_idle()
    from_compressed = tasks.get(task).starts_from == "compressed"
    compressed = compressed_model(sel, loaded) if from_compressed else None
    if from_compressed and compressed is None:
        raise LlmoptError(
            "there is no compressed model to recover yet",
            fix=Fix(cli="", app="compress the model on the Compress & Evaluate page first"),
        )
    config(task, params)  # bad settings fail here, on the page, not in the thread
    train = loaders.dataset(sel, "train")
    job = Job(task, (sel.model_key, data.fingerprint), dict(params), start_model=compressed)
    if loaders.is_lm(loaded):
        job.lm = True
        job.protocol, job.seq_len = lm_scoring(sel, data)
    memo = st.session_state.get("train_estimate")
    job.estimated = memo[1] if memo is not None else None
    job.thread = threading.Thread(
        target=_work, args=(job, loaded, train, data, compressed), daemon=True,
        name=f"llmopt-train-{task}",
    )  # fmt: skip
    st.session_state["train_job"] = job
    job.thread.start()
    return job


def _check_idle() -> None:
    old = st.session_state.get("train_job")
    if old is not None and old.running:
        raise LlmoptError("a training run is in progress; wait for it or press Cancel")


def current(sel: Selection, task: str | None = None) -> Job | None:
    """This session's latest training job, if it was made on the chosen model and dataset
    (and, with ``task``, if it is a pre-training exactly when ``task`` is)."""
    job = st.session_state.get("train_job")
    if job is None or job.key[0] != sel.model_key:
        return None
    if task is not None and (job.task == PRETRAIN) != (task == PRETRAIN):
        return None
    return job


PACE_LIMITS = (0.25, 20.0)  # a last run's actual/estimated time outside this is not a pace


def estimate(sel: Selection, loaded, task: str, params: dict, eval_rows: int) -> dict:
    """The estimated run time of a task from training steps timed now (once per settings in
    this session), scaled by how the last finished run here compared with its own estimate."""
    from llmopt.training.timing import estimate_seconds

    spec = tasks.get(task)
    cfg = config(task, params)
    model = compressed_model(sel, loaded) if spec.starts_from == "compressed" else loaded
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


# Settings a causal LM takes one way only: recovery fine-tunes (no classifier head to re-fit).
LM_FIXED = {("recover", "method"): "finetune"}


def controls(task: str, layers: int, columns, *, lm: bool = False) -> dict:
    """The task's own settings as page controls (from its ``Param`` list), in ``columns``."""
    params = {}
    for p in tasks.get(task).params:
        if lm and (task, p.key) in LM_FIXED:
            params[p.key] = LM_FIXED[(task, p.key)]
            continue
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
    if job.history and job.lm:
        from llmopt.figures.training import lm_loss_figure

        st.plotly_chart(lm_loss_figure(job.history), key="live_curves")
    elif job.history:
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
    if loaders.is_lm(loaded):
        _record_lm(sel, loaded, data, job, where)
        return
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


def _record_lm(sel: Selection, loaded, data, job: Job, where: dict) -> None:
    """Record a causal LM's training run as a perplexity variant of the base LM; a recovery's
    parent is the compressed run it started from (recorded first when this session never
    evaluated it on these rows and windows)."""
    from llmopt.lm.load import lm_size
    from llmopt.recording import record_lm_evaluation
    from llmopt.training.lm import record_lm_training

    ev = job.lm_eval
    try:
        store = loaders.experiment_store()
        parent = None
        if tasks.get(job.task).starts_from == "compressed":
            parent = _compressed_lm_run(sel, data, job)
            if parent is None:
                compression = job.start_model.compression or {}
                parent = record_lm_evaluation(
                    store, lm=loaded, dataset=data, base=ev.base, base_size=lm_size(loaded),
                    other=ev.before, other_size=lm_size(job.start_model),
                    config=compression.get("config"), **where,
                ).run_id  # fmt: skip
        done = record_lm_training(store, job.run, ev, base_lm=loaded, dataset=data,
                                  parent=parent, **where)  # fmt: skip
        job.run_id = done.run_id
    except (LlmoptError, OSError) as exc:
        why = exc.render("app") if isinstance(exc, LlmoptError) else str(exc)
        st.warning(f"This training run was not recorded for the Compare page: {plain(why)}")


def _compressed_lm_run(sel: Selection, data, job: Job) -> int | None:
    """The stored run of the compressed LM a recovery started from, when this session
    evaluated it on these rows, scored as the recovery's before and after are."""
    from dashboard.lm import LM_RESULT

    result = st.session_state.get(LM_RESULT)
    compression = job.start_model.compression or {}
    before = job.lm_eval.before
    if (
        result
        and result.get("run_id")
        and result["config"] is not None
        and result["key"] == (sel.model_source, data.fingerprint, before.protocol, before.seq_len)
        and result["config"].to_dict() == compression.get("config")
    ):
        return result["run_id"]
    return None


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
    apart = timed_apart(base, other)  # the Compress page's verdict, from one place
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
    if job.lm:
        show_lm(job)  # a causal LM: perplexity, not accuracy
        return
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


def _fmt(value: float | None) -> str:
    import math

    return "—" if value is None or not math.isfinite(value) else f"{value:,.3f}"


def _interval(pair) -> str:
    return f"95% interval {_fmt(pair[0])} – {_fmt(pair[1])}" if pair else ""


def perplexity_cards(before, after, stats: dict, labels: tuple[str, str]) -> None:
    """Perplexity and bits per byte of two LMs (or of one, ``after`` None) with their 95%
    intervals and, for two, the paired difference's verdict."""
    for name, title in (("perplexity", "Perplexity"), ("bits_per_byte", "Bits per byte")):
        left, right = st.columns(2)
        left.metric(f"{title} · {labels[0]}", _fmt(before.metric(name)))
        left.caption(_interval(stats["baseline_intervals"].get(name)))
        if after is None:
            continue
        paired = stats.get("delta_intervals", {}).get(name)
        noise = paired is None or paired[0] <= 0 <= paired[1]
        delta = after.metric(name) - before.metric(name)
        right.metric(f"{title} · {labels[1]}", _fmt(after.metric(name)),
                     f"{delta:+.3f}" + (" · noise" if noise else ""),
                     delta_color="off" if noise else "inverse")  # fmt: skip
        right.caption(_interval(stats["intervals"].get(name)))
        if paired:
            verdict = "noise (the interval holds 0)" if noise else "a real change"
            right.caption(f"Paired difference: 95% interval {paired[0]:+.3f} – "
                          f"{paired[1]:+.3f}: {verdict}")  # fmt: skip


def show_lm(job: Job) -> None:
    """A causal LM's training result: perplexity before and after with intervals, agreement
    with the starting model, the loss curve."""
    from llmopt.figures.training import lm_loss_figure

    run, ev = job.run, job.lm_eval
    labels = tasks.get(job.task).labels
    if ev is not None:
        st.subheader("Result")
        perplexity_cards(ev.before, ev.after, ev.stats, labels)
        st.caption(
            f"{ev.before.protocol} protocol · windows of {ev.before.seq_len} tokens · "
            f"{ev.before.n_tokens} test tokens scored by both models"
        )
        a, b, c = st.columns(3)
        a.metric(f"Top-1 agreement with {labels[0]}", f"{ev.fidelity.top1_agreement:.1%}")
        b.metric(f"Mean KL ({labels[0]} ‖ {labels[1]}), nats/token", _fmt(ev.fidelity.mean_kl))
        c.metric("Training time", duration(run.seconds))
    st.plotly_chart(lm_loss_figure(run.history), key="done_curves")
    for note in run.model.notes[-2:]:
        st.caption(plain(note))
    if job.run_id is not None:
        st.caption(f"Recorded as run #{job.run_id}: see it in its lineage on the Compare page.")


def confined_folder(folder: str) -> Path:
    """The folder a visitor typed, resolved, if it lies under the server's roots.

    Raises:
        LlmoptError: no folder, or a folder outside the roots.
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
    return target


def save(job: Job, folder: str, overwrite: bool) -> Path:
    """Save a finished job's model as a checkpoint in a folder under the server's roots
    (a pre-training's as ``llmopt pretrain --save-model`` saves it).

    Raises:
        LlmoptError: no folder, a folder outside the roots, or what ``save_model`` refuses.
    """
    target = confined_folder(folder)
    if job.task == PRETRAIN:
        from llmopt.cli.pretrain import save_result
        from llmopt.compression.save import check_save_target

        check_save_target(target, overwrite=overwrite)
        return save_result(job.pretrained, target, *job.params["source"])
    return llmopt.save_model(job.run.model, target, overwrite=overwrite)


# --- pre-training ------------------------------------------------------------------------------
# Not a registry ``TrainTask`` (see llmopt.tasks): it starts from no model, is budgeted in
# minutes, and makes a new base model. Its recipe is ``llmopt.lm.pretrain``'s, as ``llmopt
# pretrain`` runs it; the page picks the texts (the sidebar's dataset and text column), the
# budget and the training window.

PRETRAIN = "pretrain"
PRETRAIN_TITLE = "Pre-train a small LM"
LM_CAPTION = (
    "A causal LM trains on the next-token loss of its texts (distillation: the token-level KL "
    "to the teacher); the progress bar shows an ETA once it runs."
)


def pretrain_caption(sel: Selection, data) -> str:
    """What pre-training reads and builds."""
    return (
        f"Texts: the training split of **{plain(data.name)}**, column "
        f"**{plain(sel.text_column or 'text')}** (choose both in the sidebar). The model: "
        "a 4-block GPT-2-style LM with a byte-level BPE tokenizer trained on those texts; "
        "saved, it loads as a model on every page."
    )


def pretrain_config(minutes: float, window: int):
    """``llmopt pretrain``'s recipe with the page's budget and training window.

    Raises:
        LlmoptError: a budget or window that cannot train.
    """
    from dataclasses import replace

    from llmopt.lm import pretrain as recipe

    config = replace(recipe.with_budget(recipe.BUNDLED_CONFIG, float(minutes)), seq_len=int(window))
    config.check()
    return config


def start_pretrain(sel: Selection, data, minutes: float, window: int) -> Job:
    """Pre-train in a background thread on the training split's texts of the sidebar's dataset.

    Raises:
        LlmoptError: a job already running, or bad settings.
    """
    _check_idle()
    cfg = pretrain_config(minutes, window)
    texts = loaders.dataset(sel, "train").texts
    source = (flow.dataset_source(sel), sel.text_column or "text")
    params = {"minutes": float(minutes), "window": int(window), "source": source}
    job = Job(PRETRAIN, (sel.model_key, data.fingerprint), params, lm=True)
    job.thread = threading.Thread(target=_pretrain_work, args=(job, texts, cfg, data),
                                  daemon=True, name="llmopt-pretrain")  # fmt: skip
    st.session_state["train_job"] = job
    job.thread.start()
    return job


def _pretrain_work(job: Job, texts: list[str], cfg, data) -> None:
    """The thread's body: pre-train (live loss, Cancel), then score the test texts."""
    from llmopt.lm import perplexity
    from llmopt.lm import pretrain as recipe
    from llmopt.lm.load import LoadedLM
    from llmopt.recording import lm_statistics

    def step(number: int, loss: float) -> None:
        job.record({"step": number, "loss": loss})

    try:
        result = recipe.pretrain(texts, cfg, progress=job.progress, on_step=step,
                                 should_stop=job.cancel.is_set)  # fmt: skip
        job.pretrained = result
        if job.cancel.is_set():
            job.status = "cancelled"
            return
        lm = LoadedLM(model=result.model, tokenizer=result.tokenizer, name="pre-trained here",
                      source="", dtype="fp32", device="cpu", max_length=cfg.seq_len)  # fmt: skip
        job.progress(0.0, "evaluating: perplexity of the test texts")
        try:
            scored = perplexity(lm, data.texts, progress=job.progress)
            job.lm_eval = (scored, lm_statistics(scored))
        except LlmoptError as exc:  # e.g. test texts shorter than one window: keep the model
            job.eval_error = exc.render("app")
        job.status = "done"
    except Exception as exc:  # shown on the page in the dashboard's words
        job.error, job.status = exc, "failed"


def show_pretrain(job: Job) -> None:
    """A finished pre-training: the held-out perplexity with its interval, the loss curve."""
    from llmopt.figures.training import lm_loss_figure

    if job.status == "failed":
        with ui.inline_errors():
            raise job.error
        return
    if job.status == "cancelled":
        st.warning(f"Cancelled after {len(job.history)} steps. Nothing was saved.")
    else:
        st.subheader("Result")
        s = job.pretrained.stats
        text = (f"{s['params'] / 1e6:.1f} M parameters · {s['steps']} steps in "
                f"{s['seconds']:.0f} s · {s['tokens_per_second']:,.0f} tokens/s")  # fmt: skip
        if job.lm_eval is None:
            st.warning(f"The test texts could not be scored: {plain(job.eval_error or '')}")
        else:
            scored, stats = job.lm_eval
            perplexity_cards(scored, None, stats, ("test texts", ""))
            text += (f" · {scored.protocol} protocol, windows of {scored.seq_len} tokens, "
                     f"{scored.n_tokens} test tokens")  # fmt: skip
        st.caption(text)
    st.plotly_chart(lm_loss_figure(job.history), key="done_curves")
