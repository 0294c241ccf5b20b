"""Streamlit glue shared by every page: the sidebar choice, process-wide caches, session state.

Environment variables set the sidebar's first values (handy for demos and tests):
``LLMOPT_DEFAULT_MODEL`` (``bundled``, ``encoder:SRC``, a checkpoint directory or a hub id),
``LLMOPT_DEFAULT_DATASET`` (``bundled``, a CSV path or ``hf:NAME[:CONFIG]``) and
``LLMOPT_DEFAULT_ROWS`` (how many test rows to evaluate, default 300).

Paths typed into the sidebar (a CSV, a model or encoder folder, a local ``hf:`` dataset) are read
by the server's account, so only regular files and folders under ``LLMOPT_ROOTS`` (default: the
working directory and ``LLMOPT_HOME``) are read, files up to ``LLMOPT_MAX_FILE_MB`` (default 200):
see ``llmopt.paths``. Uploads are not paths and are not confined.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import streamlit as st

import llmopt
from llmopt.data import MANY_LABELS, display_text, label_counts, preview_table, read_table
from llmopt.errors import LlmoptError
from llmopt.evaluation import label_map
from llmopt.paths import Confinement, read_file

LOG = logging.getLogger(__name__)

ENV_MODEL, ENV_DATASET, ENV_ROWS = (
    "LLMOPT_DEFAULT_MODEL",
    "LLMOPT_DEFAULT_DATASET",
    "LLMOPT_DEFAULT_ROWS",
)
DEFAULT_ROWS = 300  # a few seconds per evaluation of the bundled model on 2 CPU cores
BUNDLED, LOCAL, HUB, ENCODER = (
    "Bundled default",
    "Local directory",
    "Hugging Face hub id",
    "Encoder + trained head",
)
MODEL_KINDS = {  # kind -> (what the text box holds, its first value)
    BUNDLED: ("", ""),
    LOCAL: ("Checkpoint directory", ""),
    HUB: ("Hub id", "distilbert-base-uncased-finetuned-sst-2-english"),
    ENCODER: ("Encoder (bundled, a directory or a hub id)", "bundled"),
}
REVIEWS, CSV, HF = "Bundled reviews", "CSV file", "Hugging Face dataset"
FIRST_RUN = "first run on this machine only (about a minute); afterwards it loads in seconds"
MAX_ROWS = 1_000_000  # the Evaluation rows box's upper limit
PREVIEW_ROWS, PREVIEW_CHARS = 5, 60  # the sidebar's CSV preview: rows, characters per cell
PREVIEW_LABELS = 20  # label counts listed in the preview (the most common ones)
ERROR_CHARS = 200  # of an unexpected error's message shown on the page
LABELS_SHOWN = 8  # label names listed in a page's caption


@dataclass(frozen=True)
class Selection:
    """What the sidebar chose: a model, a dataset and how many test rows to evaluate."""

    model_kind: str
    model_ref: str  # directory, hub id or encoder source; unused for the bundled model
    data_kind: str
    data_ref: str  # CSV name or path, or hf:NAME[:CONFIG]
    csv: bytes | None  # the CSV's bytes (uploaded or read from data_ref)
    text_column: str
    label_column: str
    rows: int
    csv_digest: str | None = None  # identifies ``csv`` (a hash prefix)
    csv_error: Exception | None = field(default=None, compare=False)  # why the CSV is unusable

    @property
    def model_source(self) -> str:
        """The ``load_model`` source string. Raises LlmoptError when the text box is empty."""
        ref = self.model_ref.strip()
        if self.model_kind == BUNDLED:
            return "bundled"
        if not ref:
            raise LlmoptError(
                f"the sidebar's '{MODEL_KINDS[self.model_kind][0]}' box is empty; fill it in"
            )
        return f"encoder:{ref}" if self.model_kind == ENCODER else ref

    @property
    def data_key(self) -> tuple:
        return (self.data_kind, self.data_ref, self.csv_digest, self.text_column, self.label_column)

    @property
    def model_key(self) -> tuple:
        """Identifies a base model: an encoder's head also depends on the training data."""
        source = self.model_source
        return (source, self.data_key if self.model_kind == ENCODER else None)


def confinement() -> Confinement:
    """What this server may read: files and folders under ``$LLMOPT_ROOTS`` (default: the
    working directory and ``$LLMOPT_HOME``), files up to ``$LLMOPT_MAX_FILE_MB``.

    Every path typed into the sidebar is read through it: on a shared server a path is read
    by the server's account, not the visitor's.
    """
    return Confinement.from_env()


# ---------------------------------------------------------------- sidebar


def _env_model() -> tuple[str, str]:
    source = os.environ.get(ENV_MODEL, "").strip() or "bundled"
    if source == "bundled":
        return BUNDLED, ""
    if source.startswith("encoder:"):
        return ENCODER, source[len("encoder:") :]
    if Path(source).expanduser().exists() or source.startswith((".", "/", "~")):
        return LOCAL, source
    return HUB, source


def _env_dataset() -> tuple[str, str]:
    source = os.environ.get(ENV_DATASET, "").strip() or "bundled"
    if source == "bundled":
        return REVIEWS, ""
    return (HF, source) if source.startswith("hf:") else (CSV, source)


def _env_rows() -> int:
    try:
        return min(max(1, int(os.environ.get(ENV_ROWS, DEFAULT_ROWS))), MAX_ROWS)
    except ValueError:
        return DEFAULT_ROWS


def _read_server_csv(path: str) -> tuple[bytes | None, Exception | None]:
    """The bytes of a CSV typed as a path, or why it may not be read: only a regular file
    under the server's roots and within its size cap (never a FIFO, a device, a folder)."""
    try:
        return read_file(path, what="CSV file", confine=confinement()), None
    except LlmoptError as exc:
        return None, exc


def _table(raw: bytes, name: str, digest: str):
    """(``preview_table``, all rows as strings) of a CSV, parsed once per file for everyone.

    Raises:
        LlmoptError: a file that is not a readable CSV (the message never quotes it).
    """

    def make():
        return preview_table(raw, name, n=PREVIEW_ROWS), read_table(raw, name)

    return _store("tables", 3).get((digest, name), make)


def _index(columns: list[str], guess: str | None, fallback: int) -> int:
    return columns.index(guess) if guess in columns else min(fallback, len(columns) - 1)


def _csv_columns(raw: bytes, name: str, digest: str) -> tuple[str, str]:
    """Text and Label column boxes (first guess by content: the longest texts, the fewest
    distinct values), a warning for a label column with too many values, a preview.

    Raises:
        LlmoptError: a file that is not a readable CSV.
    """
    preview, frame = _table(raw, name, digest)
    sb, columns = st.sidebar, preview.columns
    text_col = sb.selectbox(
        "Text column",
        columns,
        index=_index(columns, preview.text_column, 0),
        key=f"tc_{digest}",
        help="The texts to classify. First guess: the column with the longest texts.",
    )
    label_col = sb.selectbox(
        "Label column",
        columns,
        index=_index(columns, preview.label_column, 1),
        key=f"lc_{digest}",
        help="Each text's class. First guess: the other column with the fewest distinct values.",
    )
    counts = label_counts(frame, label_col)
    if len(counts) > MANY_LABELS:
        sb.warning(
            f"The Label column '{label_col}' has {len(counts):,} distinct values: probably not "
            "a label column; choose another."
        )
    with sb.expander(f"Preview of {name} ({preview.n_rows:,} rows)"):
        cells = preview.rows.map(lambda v: display_text(v, PREVIEW_CHARS))
        st.dataframe(cells, hide_index=True)
        shown = f", the {PREVIEW_LABELS} most common" if len(counts) > PREVIEW_LABELS else ""
        st.caption(f"Rows per value of the Label column '{label_col}' ({len(counts):,}{shown}):")
        st.dataframe(counts.head(PREVIEW_LABELS), hide_index=True)
    return text_col, label_col


def sidebar() -> Selection:
    """Draw the model and dataset picker (in app.py, so it survives page switches).

    Returns:
        The choice, also kept in ``st.session_state["selection"]`` for the pages.
    """
    sb = st.sidebar
    env_kind, env_ref = _env_model()
    sb.header("Model")
    kinds = list(MODEL_KINDS)
    kind = sb.radio(
        "Model source",
        kinds,
        index=kinds.index(env_kind),
        key="src_model_kind",
        help="The bundled default works offline: MiniLM sentence encoder + a review classifier "
        "head. A local directory or hub id must hold a sequence-classification checkpoint; "
        "'Encoder + trained head' trains a logistic-regression head on your dataset's "
        "training split.",
    )
    ref = ""
    if kind != BUNDLED:
        label, first = MODEL_KINDS[kind]
        ref = sb.text_input(label, value=env_ref if kind == env_kind else first, key=f"src_{kind}")
    sb.header("Dataset")
    env_data, env_data_ref = _env_dataset()
    data_kinds = [REVIEWS, CSV, HF]
    data_kind = sb.radio(
        "Dataset source",
        data_kinds,
        index=data_kinds.index(env_data),
        key="src_data_kind",
        help="Bundled: 5000 Amazon fine-food reviews labelled great/other. A CSV needs a text "
        "and a label column. Sources without a test split get a fixed, stratified 80/20 split.",
    )
    data_ref, raw, digest, problem = "", None, None, None
    text_col, label_col = "text", "label"
    if data_kind == CSV:
        upload = sb.file_uploader("Upload a CSV", type=["csv", "tsv"], key="src_upload")
        path = sb.text_input(
            "…or a CSV path on this machine",
            value=env_data_ref if env_data == CSV else "",
            key="src_csv_path",
            help="A file on the server, in a folder the server may read.",
        ).strip()
        if upload is not None:
            raw, data_ref = upload.getvalue(), upload.name
        elif path:
            data_ref = path
            raw, problem = _read_server_csv(path)
        if raw is not None:
            digest = hashlib.sha256(raw).hexdigest()[:16]
            try:
                text_col, label_col = _csv_columns(raw, Path(data_ref).name, digest)
            except Exception as exc:  # any parse failure: shown where the page loads the data
                problem = exc
    elif data_kind == HF:
        first = env_data_ref if env_data == HF else "hf:imdb"
        data_ref = sb.text_input("Dataset id (hf:NAME[:CONFIG])", value=first, key="src_hf")
        data_ref = data_ref.strip()
        if data_ref and not data_ref.startswith("hf:"):
            data_ref = f"hf:{data_ref}"
        text_col = sb.text_input("Text column", value="text", key="src_hf_text")
        label_col = sb.text_input("Label column", value="label", key="src_hf_label")
    rows = sb.number_input(
        "Evaluation rows",
        min_value=1,
        max_value=MAX_ROWS,
        value=_env_rows(),
        step=50,
        key="src_rows",
        help="Evaluate on the first N rows of the test split: fewer rows answer faster, more "
        "rows give steadier numbers.",
    )
    selection = Selection(
        kind, ref, data_kind, data_ref, raw, text_col, label_col, int(rows), digest, problem
    )
    st.session_state["selection"] = selection
    return selection


# ---------------------------------------------------------------- process-wide caches


class _Store:
    """Values computed once per key for all sessions; a lock per key so only one session works."""

    def __init__(self, max_items: int):
        self._items: OrderedDict = OrderedDict()
        self._locks: dict = {}
        self._guard = threading.Lock()
        self._max = max_items

    def get(self, key, make: Callable):
        with self._guard:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                if key in self._items:
                    return self._items[key]
            value = make()
            with self._guard:
                self._items[key] = value
                while len(self._items) > self._max:
                    self._items.popitem(last=False)
            return value


@st.cache_resource(show_spinner=False)
def _store(kind: str, max_items: int) -> _Store:
    # A store, not a cached loader: progress bars drawn while loading must not be replayed.
    return _Store(max_items)


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
        st.error(exc.render("app"))
        return
    LOG.error("dashboard error", exc_info=exc)  # not a user mistake: details for the admin
    first = (str(exc).strip().splitlines() or [""])[0]
    if len(first) > ERROR_CHARS:
        first = first[: ERROR_CHARS - 1] + "…"
    what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
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

    return _store("datasets", 16).get((sel.data_key, split, rows), make)


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

    return _store("models", 3).get(sel.model_key, make)


def _run_through_app() -> None:
    """Make sure app.py (page setup, navigation, sidebar) ran for this run, not a page file on
    its own. The one place that works around Streamlit's folder-based page mode.

    A ``pages/`` folder starts Streamlit in that old mode, which runs a page file directly when
    a fresh server is opened on the page's address; ``st.navigation`` in app.py switches the
    mode off for good. The mode is one flag for the whole process
    (``PagesManager.uses_pages_directory``), but sessions run side by side: when two visitors
    open a page of a fresh server at once, the first one to switch it off is not the only one
    that started in it, and the other finds the flag off while running its page file without
    app.py's sidebar. So decide by this session's own state: no ``selection`` yet means app.py
    has not run in this session. Switch the mode off and run again, through app.py.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory or "selection" not in st.session_state:
        PagesManager.uses_pages_directory = False
        st.rerun()


def _labels(names: list[str]) -> str:
    """Label names for a caption: all of a few, the first ones and a count of many."""
    if len(names) <= LABELS_SHOWN:
        return ", ".join(names)
    return f"{', '.join(names[:LABELS_SHOWN])}, … ({len(names)} in all)"


def load() -> tuple[Selection, llmopt.LoadedModel, llmopt.TextDataset]:
    """The sidebar's choice, its base model and its evaluation rows; errors end the run."""
    _run_through_app()
    sel = st.session_state["selection"]
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
    return _store("facts", 8).get(sel.model_key, lambda: llmopt.model_facts(loaded))


def baseline(sel: Selection, loaded: llmopt.LoadedModel, data) -> llmopt.EvalResult:
    """The base model's evaluation, once per (model, dataset rows) for all sessions."""

    def make():
        with progress("the uncompressed model, once per model and rows") as report:
            return llmopt.evaluate(loaded, data, progress=report)

    return _store("baselines", 16).get((sel.model_key, data.fingerprint, len(data)), make)


# ---------------------------------------------------------------- per-session compression


def compressed(sel: Selection, loaded: llmopt.LoadedModel, config):
    """This session's compressed copy of the base model for ``config`` (made once per setting).

    Returns:
        ``(LoadedModel, CompressionReport)``; kept in ``st.session_state``, so other browser
        sessions never see it. Only the latest one is kept, to bound memory.
    """
    from llmopt.compression import compress

    key = (sel.model_key, config)  # frozen, so hashable and comparable
    if config.prunes and config.sparsity_method == "wanda":  # calibrated on this dataset
        key = (*key, sel.data_key)
    hit = st.session_state.get("compressed")
    if hit is not None and hit["key"] == key:
        return hit["model"], hit["report"]
    st.session_state.pop("compressed", None)  # free the previous copy before making a new one
    calibration = dataset(sel, "train") if config.sparsity_method == "wanda" else None
    with progress("compressing a copy; the shared base model is left untouched") as report:
        model, rep = compress(loaded, config, calibration=calibration, progress=report)
    st.session_state["compressed"] = {"key": key, "config": config, "model": model, "report": rep}
    return model, rep


def session_compressed(sel: Selection) -> dict | None:
    """The compressed model this session made for the current base model, if any."""
    hit = st.session_state.get("compressed")
    return hit if hit is not None and hit["key"][0] == sel.model_key else None


def evaluate_compressed(sel: Selection, loaded: llmopt.LoadedModel, data, config) -> dict:
    """Baseline (cached for everyone) and compressed evaluation on the same rows.

    Returns:
        The evaluation, also kept in ``st.session_state["evaluation"]``.
    """
    base = baseline(sel, loaded, data)
    model, report = compressed(sel, loaded, config)
    with progress("the compressed model") as bar:
        other = llmopt.evaluate(model, data, progress=bar)
    evaluation = {
        "key": (sel.model_key, data.fingerprint),
        "config": config,
        "base": base,
        "other": other,
        "fidelity": llmopt.compare(base, other),
        "report": report,
        "notes": list(model.notes),
        "texts": list(data.texts),
    }
    st.session_state["evaluation"] = evaluation
    return evaluation


def last_evaluation(sel: Selection, data) -> dict | None:
    """This session's latest evaluation if it was made on the current model and rows."""
    ev = st.session_state.get("evaluation")
    return ev if ev is not None and ev["key"] == (sel.model_key, data.fingerprint) else None


def attention(sel: Selection, loaded: llmopt.LoadedModel, text: str, tag: str):
    """Attention maps of ``text`` (baseline shared, compressed per session), reused on reruns."""
    from llmopt.attention import attention_maps

    if tag == "baseline":
        key = (sel.model_key, text)
        return _store("attention", 32).get(key, lambda: attention_maps(loaded, text))
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


# ---------------------------------------------------------------- compression settings

# Widget key -> first value of the Compress page's controls; kept for the whole session, so the
# Attention page can compress with them too.
CONTROLS = {
    "c_method": "magnitude",
    "c_pattern": "unstructured",
    "c_sparsity": 0.5,
    "c_bits": "off",
    "c_group": "per-channel",
    "c_int8": False,
    "c_rank": 0,
}


def config_from_state():
    """The Compress page's settings (its widgets or their first values) as a CompressionConfig.

    Raises:
        LlmoptError: a combination the engine rejects.
    """
    from llmopt.compression import CompressionConfig

    s = {key: st.session_state.get(key, first) for key, first in CONTROLS.items()}
    bits = None if s["c_bits"] == "off" else int(s["c_bits"])
    group = None if bits is None or s["c_group"] == "per-channel" else int(s["c_group"])
    return CompressionConfig(
        sparsity=float(s["c_sparsity"]) if s["c_pattern"] == "unstructured" else 0.0,
        sparsity_method=s["c_method"],
        sparsity_pattern=s["c_pattern"],
        bits=bits,
        group_size=group,
        rank=int(s["c_rank"]) or None,
        int8_dynamic=bool(s["c_int8"]) and bits is None,
    )


# ---------------------------------------------------------------- sweeps


def run_sweep(sel: Selection, loaded, data, knob: str, values: list, methods: list) -> None:
    """Run a sweep with a progress bar; the result is kept for this session only."""
    from llmopt.sweep import run_sweep as sweep

    base = baseline(sel, loaded, data)
    calibration = dataset(sel, "train") if "wanda" in methods else None
    with progress("each point compresses a copy and evaluates it") as report:
        frame = sweep(
            loaded, data, knob, values, methods,
            base_result=base, calibration=calibration, progress=report,
        )  # fmt: skip
    st.session_state["sweep"] = {"key": (sel.model_key, data.fingerprint), "frame": frame}


def last_sweep(sel: Selection, data) -> pd.DataFrame | None:
    """This session's latest sweep if it was run on the current model and rows."""
    hit = st.session_state.get("sweep")
    return hit["frame"] if hit and hit["key"] == (sel.model_key, data.fingerprint) else None
