"""The compress -> evaluate -> record flow of the Compress and Sweep pages: this session's
compressed model, its evaluation (made now, or redrawn from the experiment store) and the
run recorded for the Compare page.

A compressed model belongs to one session (``st.session_state``), so other browser sessions
never see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

import llmopt
from dashboard import urlstate
from dashboard.loaders import baseline, dataset, experiment_store, stored_result
from dashboard.sidebar import REVIEWS, Selection
from dashboard.text import plain
from dashboard.ui import progress
from llmopt.errors import LlmoptError

RUN = "run"  # the address's run id of the Compress page's results


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
