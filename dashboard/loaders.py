"""Cached loaders: the chosen dataset and base model, its facts and baseline evaluation,
attention maps, the experiment store and stored results.

Base models and their evaluations are shared by every browser session (computed once per key,
under a lock); attention of a compressed model belongs to one session (``st.session_state``).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import llmopt
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
from dashboard.ui import guard, inline_errors, progress
from llmopt.errors import LlmoptError
from llmopt.evaluation import label_map


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
        return ", ".join(plain(n) for n in names)
    return f"{', '.join(plain(n) for n in names[:LABELS_SHOWN])}, … ({len(names)} in all)"


def load(causal_lm: bool = False) -> tuple[Selection, llmopt.LoadedModel, llmopt.TextDataset]:
    """The sidebar's choice, its base model and its evaluation rows; errors end the run.

    Args:
        causal_lm: the page also takes a causal LM (then the model is a ``LoadedLM``: test
            with ``is_lm``); otherwise a causal LM ends the run with a notice.
    """
    run_through_app()
    sel = st.session_state["selection"]
    from dashboard import lm  # deliberately late: lm imports this module

    if causal_lm and lm.is_causal_lm(sel):
        with guard():
            data = dataset(sel, "test", sel.rows)
            loaded = lm.base_lm(sel)
        st.caption(
            f"Causal LM **{plain(sel.model_source)}** · dataset **{plain(data.name)}** · "
            f"{len(data)} test texts"
        )
        return sel, loaded, data
    lm.stop_on_classifier_page(sel)  # a causal LM: this page's classifier views do not apply
    with guard():
        data = dataset(sel, "test", sel.rows)
        loaded = base_model(sel)
    st.caption(
        f"Model **{plain(loaded.name)}** · dataset **{plain(data.name)}** · {len(data)} test rows "
        f"· labels {_labels(loaded.label_names)}"
    )
    with inline_errors():  # say now that labels do not match; facts and attention still work
        label_map(loaded, data)
    return sel, loaded, data


def is_lm(loaded) -> bool:
    """Whether ``loaded`` (from ``load(causal_lm=True)``) is a causal LM."""
    from llmopt.training.lm import is_lm as causal

    return causal(loaded)


def session_compressed(sel: Selection, loaded) -> dict | None:
    """This session's compressed model of the chosen base model (made on the Compress page),
    a classifier's or a causal LM's; None when there is none."""
    from dashboard import flow

    if not is_lm(loaded):
        return flow.session_compressed(sel)
    hit = st.session_state.get("compressed")
    return hit if hit is not None and hit["key"][:2] == (sel.model_source, "causal-lm") else None


def facts(sel: Selection, loaded: llmopt.LoadedModel) -> dict:
    """``model_facts`` of the base model, computed once (it counts every parameter)."""
    return shared_cache("facts", 8).get(sel.model_key, lambda: llmopt.model_facts(loaded))


def baseline(sel: Selection, loaded: llmopt.LoadedModel, data) -> llmopt.EvalResult:
    """The base model's evaluation, once per (model, dataset rows) for all sessions."""

    def make():
        with progress("the uncompressed model, once per model and rows") as report:
            return llmopt.evaluate(loaded, data, progress=report)

    return shared_cache("baselines", 16).get((sel.model_key, data.fingerprint, len(data)), make)


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


def stored_result(runs_db, run):
    """A stored run's predictions as an ``EvalResult``, read once per process (runs never
    change their predictions, and deleted ids are never reused)."""
    from llmopt.recording import run_result

    return shared_cache("stored results", 64).get(
        (str(runs_db.path), run.id), lambda: run_result(runs_db, run)
    )
