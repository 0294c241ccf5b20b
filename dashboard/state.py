"""Dashboard state: process-wide caches of base models and baselines, this session's
compressed model and results, and the error display every page uses.

Base models and their evaluations are shared by every browser session (computed once per key,
under a lock); a compressed model belongs to one session (``st.session_state``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

import llmopt
from dashboard import urlstate
from dashboard.cache import shared_cache
from dashboard.legacy import run_through_app
from dashboard.sidebar import (
    ENCODER,
    FIRST_RUN,
    HF,
    LABELS_SHOWN,
    REVIEWS,
    Selection,
    confinement,
)
from dashboard.text import plain
from llmopt.errors import LlmoptError
from llmopt.evaluation import label_map

LOG = logging.getLogger(__name__)
RUN = "run"  # the address's run id of the Compress page's results
ERROR_CHARS = 200  # of an unexpected error's message shown on the page


@dataclass
class Evaluation:
    """What the Compress page shows of one evaluation (made now, or redrawn from the store)."""

    key: tuple  # (model key, rows fingerprint) it was made on
    config: Any  # CompressionConfig
    base: Any  # EvalResult of the base model
    other: Any  # EvalResult of the compressed model
    fidelity: dict  # llmopt.compare(base, other)
    report: Any  # CompressionReport
    notes: list[str]
    texts: list[str]
    stats: dict  # recording.statistics(base, other): intervals, paired differences, McNemar
    latency: dict | None  # paired latency, when the kernels differ
    simulated: bool  # no real kernels: latency not measured
    run_id: int | None = None  # its run in the experiment store

    def __getitem__(self, name: str):  # the views read it as a mapping too
        return getattr(self, name)

    def get(self, name: str, default=None):
        return getattr(self, name, default)


@contextlib.contextmanager
def progress(intro: str = "") -> Iterator[Callable[[float, str], None]]:
    """A ``progress(fraction, message)`` callback drawing one bar, removed when done."""
    slot = st.empty()

    def report(fraction: float, message: str) -> None:
        text = f"{message} — {intro}" if intro else message
        slot.progress(min(max(float(fraction), 0.0), 1.0), text=text)

    try:
        yield report
    finally:
        slot.empty()


def _show_error(exc: Exception) -> None:
    """One line in the dashboard's words; never a traceback (the server log keeps it)."""
    if isinstance(exc, LlmoptError):  # a user mistake: its message says the fix
        st.error(plain(exc.render("app")))
        return
    LOG.error("dashboard error", exc_info=exc)  # not a user mistake: details for the admin
    first = (str(exc).strip().splitlines() or [""])[0]
    if len(first) > ERROR_CHARS:
        first = first[: ERROR_CHARS - 1] + "…"
    what = plain(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)
    st.error(f"Something went wrong ({what}). Try other settings; the server's log has details.")


@contextlib.contextmanager
def inline_errors(*, stop: bool = False) -> Iterator[None]:
    """Show an error with st.error (a user mistake's message says the fix) and carry on with
    the rest of the page, or end this run with ``stop``."""
    try:
        yield
    except Exception as exc:
        _show_error(exc)
        if stop:
            st.stop()


def guard():
    """Show an error (a user mistake such as LlmoptError, or any other) and end this run."""
    return inline_errors(stop=True)


def dataset(sel: Selection, split: str = "test", rows: int | None = None) -> llmopt.TextDataset:
    """One split of the chosen dataset (first ``rows`` rows if given), loaded once per process."""

    def make():
        if rows is not None:
            full = dataset(sel, split)
            return full.subset(min(rows, len(full)))
        with st.spinner(f"Loading the {split} split…"):
            return _load_dataset(sel, split)

    return shared_cache("datasets", 16).get((sel.data_key, split, rows), make)


def _load_dataset(sel: Selection, split: str) -> llmopt.TextDataset:
    columns = {"text_column": sel.text_column, "label_column": sel.label_column}
    if sel.data_kind == REVIEWS:
        return llmopt.load_dataset("bundled", split)
    if sel.data_kind == HF:
        if not sel.data_ref:
            raise LlmoptError("type a dataset id such as hf:imdb in the sidebar")
        return llmopt.load_dataset(sel.data_ref, split, confine=confinement(), **columns)
    if sel.csv_error is not None:  # the sidebar could not read or parse the CSV
        raise sel.csv_error
    if sel.csv is not None:
        return llmopt.load_csv(sel.csv, split, name=Path(sel.data_ref).name, **columns)
    raise LlmoptError("upload a CSV file (or type its path) in the sidebar")


def base_model(sel: Selection) -> llmopt.LoadedModel:
    """The chosen uncompressed model, loaded once per process and shared: never modify it."""
    source = sel.model_source

    def make():
        train = dataset(sel, "train") if sel.model_kind == ENCODER else None
        with st.spinner(f"Loading model {source}…"), progress(FIRST_RUN) as report:
            return llmopt.load_model(
                source, train_data=train, progress=report, confine=confinement()
            )

    return shared_cache("models", 3).get(sel.model_key, make)


def _labels(names: list[str]) -> str:
    """Label names for a caption: all of a few, the first ones and a count of many."""
    if len(names) <= LABELS_SHOWN:
        return ", ".join(names)
    return f"{', '.join(names[:LABELS_SHOWN])}, … ({len(names)} in all)"


def load() -> tuple[Selection, llmopt.LoadedModel, llmopt.TextDataset]:
    """The sidebar's choice, its base model and its evaluation rows; errors end the run."""
    run_through_app()
    sel = st.session_state["selection"]
    from dashboard import lm  # noqa: PLC0415 - lm imports this module

    lm.stop_on_classifier_page(sel)
    with guard():
        data = dataset(sel, "test", sel.rows)
        loaded = base_model(sel)
    st.caption(
        f"Model **{loaded.name}** · dataset **{data.name}** · {len(data)} test rows "
        f"· labels {_labels(loaded.label_names)}"
    )
    with inline_errors():  # say now that labels do not match; facts and attention still work
        label_map(loaded, data)
    return sel, loaded, data


def facts(sel: Selection, loaded: llmopt.LoadedModel) -> dict:
    """``model_facts`` of the base model, computed once (it counts every parameter)."""
    return shared_cache("facts", 8).get(sel.model_key, lambda: llmopt.model_facts(loaded))


def baseline(sel: Selection, loaded: llmopt.LoadedModel, data) -> llmopt.EvalResult:
    """The base model's evaluation, once per (model, dataset rows) for all sessions."""

    def make():
        with progress("the uncompressed model, once per model and rows") as report:
            return llmopt.evaluate(loaded, data, progress=report)

    return shared_cache("baselines", 16).get((sel.model_key, data.fingerprint, len(data)), make)


def compressed(sel: Selection, loaded: llmopt.LoadedModel, config):
    """This session's compressed copy of the base model for ``config`` (made once per setting).

    Returns:
        ``(LoadedModel, CompressionReport)``; kept in ``st.session_state``, so other browser
        sessions never see it. Only the latest one is kept, to bound memory.
    """
    from llmopt.compression import compress, needs_calibration

    calibrated = needs_calibration(config)  # from the method registry
    key = (sel.model_key, config)  # frozen, so hashable and comparable
    if calibrated:  # calibrated on this dataset's training texts
        key = (*key, sel.data_key)
    hit = st.session_state.get("compressed")
    if hit is not None and hit["key"] == key:
        return hit["model"], hit["report"]
    st.session_state.pop("compressed", None)  # free the previous copy before making a new one
    calibration = dataset(sel, "train") if calibrated else None
    with progress("compressing a copy; the shared base model is left untouched") as report:
        model, rep = compress(loaded, config, calibration=calibration, progress=report)
    st.session_state["compressed"] = {"key": key, "config": config, "model": model, "report": rep}
    return model, rep


def session_compressed(sel: Selection) -> dict | None:
    """The compressed model this session made for the current base model, if any."""
    hit = st.session_state.get("compressed")
    return hit if hit is not None and hit["key"][0] == sel.model_key else None


def evaluate_compressed(sel: Selection, loaded: llmopt.LoadedModel, data, config) -> Evaluation:
    """Baseline (cached for everyone) and compressed evaluation on the same rows, their paired
    latency (when the kernels differ), intervals and tests; recorded in the experiment store.

    Returns:
        The evaluation, also kept in ``st.session_state["evaluation"]``.
    """
    from llmopt.latency import paired_if_kernels_differ

    base = baseline(sel, loaded, data)
    model, report = compressed(sel, loaded, config)
    with progress("the compressed model") as bar:
        other = llmopt.evaluate(model, data, progress=bar)
    with st.spinner("Timing both models together, interleaved, if their kernels differ…"):
        latency = paired_if_kernels_differ(loaded, model, data.texts)
    evaluation = _evaluation(sel, data, config, base, other, report, model.notes, latency)
    evaluation.run_id = _record(
        sel,
        loaded,
        data,
        base,
        other,
        config,
        report,
        variant=model,
        latency=latency,
        computed=evaluation.stats,
    )
    st.session_state["evaluation"] = evaluation
    urlstate.page_param(RUN, evaluation.run_id)  # a reload shows this run again
    return evaluation


def experiment_store():
    """The experiment store, opened once per process (a notice of a file moved aside is shown
    once per session)."""
    from llmopt.experiments import ExperimentStore, store_path

    path = store_path()
    opened = shared_cache("experiments", 4).get(str(path), lambda: ExperimentStore(path))
    if opened.notice and not st.session_state.get("store_notice_shown"):
        st.session_state["store_notice_shown"] = True
        st.warning(f"Note: {plain(opened.notice)}.")
    return opened


def rows_spec(sel: Selection, data) -> dict:
    return {
        "split": data.split,
        "limit": sel.rows,
        "seed": None,
        "text_column": sel.text_column,
        "label_column": sel.label_column,
    }


def dataset_source(sel: Selection) -> str:
    return "bundled" if sel.data_kind == REVIEWS else sel.data_ref


def _record(
    sel: Selection,
    loaded,
    data,
    base,
    other,
    config,
    report,
    *,
    variant=None,
    latency: dict | None = None,
    origin: str = "app",
    computed: dict | None = None,
) -> int | None:
    """Record an evaluation (or a sweep point); a store that cannot be written is a warning,
    never a reason to lose the results on the page."""
    from llmopt.recording import record_evaluation

    try:
        done = record_evaluation(
            experiment_store(),
            base_model=loaded,
            dataset=data,
            base=base,
            other=other,
            variant=variant,
            config=config,
            report=report,
            latency=latency,
            origin=origin,
            model_source=sel.model_source,
            dataset_source=dataset_source(sel),
            rows=rows_spec(sel, data),
            computed=computed,
        )
    except (LlmoptError, OSError) as exc:
        why = exc.render("app") if isinstance(exc, LlmoptError) else str(exc)
        st.warning(f"This evaluation was not recorded for the Compare page: {plain(why)}")
        return None
    return done.run_id


def shown_evaluation(sel: Selection, loaded, data) -> Evaluation | None:
    """The evaluation the Compress page shows: this session's latest on these rows, or after
    a reload the run the address names (redrawn from the experiment store)."""
    evaluation = last_evaluation(sel, data)
    run = urlstate.link_id(RUN)  # None for a value that is not a run id (with a notice)
    if evaluation is None and run is not None:
        evaluation = restore_evaluation(sel, loaded, data, run)
    return evaluation


def show_recipe_note() -> None:
    """Say what of a recipe loaded from the Compare page the controls could not take."""
    note = st.session_state.pop("cmp_recipe_note", None)
    if note:
        st.warning(plain(note))


def restore_evaluation(sel: Selection, loaded, data, run_id) -> Evaluation | None:
    """A stored run of this model on these rows, redrawn as this session's evaluation (after a
    reload, from the address's ``run``); None if it is not one."""
    from llmopt.recording import model_fingerprint
    from llmopt.restore import run_config, run_latency, run_report

    try:
        runs_db = experiment_store()
        run = runs_db.get(run_id)
        config = run_config(run)
    except LlmoptError:  # no such run, or a recipe this llmopt cannot read
        return None
    if (
        run.kind != "variant"
        or run.rows_fingerprint != data.fingerprint
        or run.model_fingerprint != model_fingerprint(loaded)
    ):
        return None
    base_id = runs_db.find_base(run.model_fingerprint, run.rows_fingerprint)
    if base_id is None:
        return None
    base = stored_result(runs_db, runs_db.get(base_id))  # no model runs for a reload
    other = stored_result(runs_db, run)
    if base is None or other is None:
        return None
    report, latency = run_report(run), run_latency(run)
    evaluation = _evaluation(sel, data, config, base, other, report, run.notes, latency)
    evaluation.simulated, evaluation.run_id = bool(run.latency_simulated), run.id
    st.session_state["evaluation"] = evaluation
    return evaluation


def _evaluation(sel: Selection, data, config, base, other, report, notes, latency) -> Evaluation:
    """What the Compress page shows of an evaluation (made now, or redrawn from the store)."""
    from llmopt.recording import statistics

    return Evaluation(
        key=(sel.model_key, data.fingerprint),
        config=config,
        base=base,
        other=other,
        fidelity=llmopt.compare(base, other),
        report=report,
        notes=list(notes),
        texts=list(data.texts),
        stats=statistics(base, other),
        latency=latency,
        simulated=latency is None,
    )


def last_evaluation(sel: Selection, data) -> Evaluation | None:
    """This session's latest evaluation if it was made on the current model and rows."""
    ev = st.session_state.get("evaluation")
    return ev if ev is not None and ev.key == (sel.model_key, data.fingerprint) else None


def attention(sel: Selection, loaded: llmopt.LoadedModel, text: str, tag: str):
    """Attention maps of ``text`` (baseline shared, compressed per session), reused on reruns."""
    from llmopt.attention import attention_maps

    if tag == "baseline":
        key = (sel.model_key, text)
        return shared_cache("attention", 32).get(key, lambda: attention_maps(loaded, text))
    memo = st.session_state.setdefault("attention_memo", {})
    key = (tag, text)
    if key not in memo:
        memo.clear()
        memo[key] = attention_maps(loaded, text)
    return memo[key]


def drift(sel: Selection, base: llmopt.LoadedModel, hit: dict, texts: list[str]):
    """Mean JS divergence per (layer, head) between base and this session's compressed model."""
    from llmopt.attention import attention_drift

    key = (hit["key"], tuple(texts))
    memo = st.session_state.get("drift_memo")
    if memo is None or memo[0] != key:
        with st.spinner(f"Comparing attention on {len(texts)} texts…"):
            memo = (key, attention_drift(base, hit["model"], texts))
        st.session_state["drift_memo"] = memo
    return memo[1]


def run_sweep(sel: Selection, loaded, data, knob: str, values: list, methods: list) -> None:
    """Run a sweep with a progress bar; the result is kept for this session only."""
    from llmopt.sweep import run_sweep as sweep
    from llmopt.sweep import sweep_needs_calibration

    base = baseline(sel, loaded, data)
    calibration = dataset(sel, "train") if sweep_needs_calibration(knob, methods) else None

    def record(config, result, report, _fidelity, latency) -> None:  # each point is stored
        if config.is_identity:  # the "off" point is the base model's own run, stored already
            return
        _record(sel, loaded, data, base, result, config, report, latency=latency, origin="sweep")

    with progress("each point compresses a copy and evaluates it") as report:
        frame = sweep(
            loaded,
            data,
            knob,
            values,
            methods,
            base_result=base,
            calibration=calibration,
            progress=report,
            on_point=record,
        )
    st.session_state["sweep"] = {"key": (sel.model_key, data.fingerprint), "frame": frame}


def last_sweep(sel: Selection, data) -> pd.DataFrame | None:
    """This session's latest sweep if it was run on the current model and rows."""
    hit = st.session_state.get("sweep")
    return hit["frame"] if hit and hit["key"] == (sel.model_key, data.fingerprint) else None


def stored_result(runs_db, run):
    """A stored run's predictions as an ``EvalResult``, read once per process (runs never
    change their predictions, and deleted ids are never reused)."""
    from llmopt.recording import run_result

    return shared_cache("stored results", 64).get(
        (str(runs_db.path), run.id), lambda: run_result(runs_db, run)
    )
