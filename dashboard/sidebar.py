"""The sidebar: which model, which dataset, how many rows (drawn in app.py for every page).

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

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from dashboard.cache import shared_cache
from dashboard.text import plain
from llmopt import sources
from llmopt.data import MANY_LABELS, display_text, label_counts, preview_table, read_table
from llmopt.errors import LlmoptError
from llmopt.paths import Confinement, read_file
from llmopt.sources import model_source

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
_KIND_LABELS = {
    sources.BUNDLED: BUNDLED,
    sources.LOCAL: LOCAL,
    sources.HUB: HUB,
    sources.ENCODER: ENCODER,
}
MODEL_KINDS = {  # kind -> (what the text box holds, its first value)
    BUNDLED: ("", ""),
    LOCAL: ("Checkpoint directory", ""),
    HUB: ("Hub id", "distilbert-base-uncased-finetuned-sst-2-english"),
    ENCODER: ("Encoder (bundled, a directory or a hub id)", "bundled"),
}
REVIEWS, CSV, HF = "Bundled reviews", "CSV file", "Hugging Face dataset"
# No fixed time: it took 1 minute on one machine and 6.6 on a busy one. The bar's own text
# gives the time left, measured on this machine as the texts are encoded (llmopt.head).
FIRST_RUN = (
    "first run on this machine only, and how long it takes depends on the machine; "
    "afterwards it loads in seconds"
)
MAX_ROWS = 1_000_000  # the Evaluation rows box's upper limit
PREVIEW_ROWS, PREVIEW_CHARS = 5, 60  # the sidebar's CSV preview: rows, characters per cell
PREVIEW_LABELS = 20  # label counts listed in the preview (the most common ones)
LABELS_SHOWN = 8  # label names listed in a page's caption
URL_COLUMNS = "url_csv_columns"  # (text, label) columns a link asks for, until a CSV is read
UPLOADED = "upload"  # a link's dataset when it was an uploaded CSV (the file cannot travel)
UPLOAD_LOST = "url_upload_lost"  # a link (a reload) named an upload this session does not have


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


def _env_model() -> tuple[str, str]:
    return classify_model(os.environ.get(ENV_MODEL, ""))


def classify_model(source: str) -> tuple[str, str]:
    """(model kind, text for its box) of a ``load_model`` source string."""
    kind, ref = model_source(source.strip() or "bundled")  # the loader's parser
    return _KIND_LABELS[kind], ref


def _env_dataset() -> tuple[str, str]:
    return classify_dataset(os.environ.get(ENV_DATASET, ""))


def classify_dataset(source: str) -> tuple[str, str]:
    """(dataset kind, text for its box) of a ``load_dataset`` source string."""
    source = source.strip() or "bundled"
    if source == "bundled":
        return REVIEWS, ""
    if source == UPLOADED:  # the file itself is not in the link: the upload box, empty
        return CSV, ""
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

    return shared_cache("tables", 3).get((digest, name), make)


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
    # Columns a link named (dashboard.urlstate) win over the guess, once, for a new file.
    text_guess, label_guess = st.session_state.pop(URL_COLUMNS, None) or (None, None)
    if text_guess not in columns:
        text_guess = preview.text_column
    if label_guess not in columns:
        label_guess = preview.label_column
    text_col = sb.selectbox(
        "Text column",
        columns,
        index=_index(columns, text_guess, 0),
        key=f"tc_{digest}",
        help="The texts to classify. First guess: the column with the longest texts.",
    )
    label_col = sb.selectbox(
        "Label column",
        columns,
        index=_index(columns, label_guess, 1),
        key=f"lc_{digest}",
        help="Each text's class. First guess: the other column with the fewest distinct values.",
    )
    counts = label_counts(frame, label_col)
    if len(counts) > MANY_LABELS:
        sb.warning(
            f"The Label column '{plain(label_col)}' has {len(counts):,} distinct values: "
            "probably not a label column; choose another."
        )
    with sb.expander(f"Preview of {plain(name)} ({preview.n_rows:,} rows)"):
        cells = preview.rows.map(lambda v: display_text(v, PREVIEW_CHARS))
        st.dataframe(cells, hide_index=True)
        shown = f", the {PREVIEW_LABELS} most common" if len(counts) > PREVIEW_LABELS else ""
        st.caption(
            f"Rows per value of the Label column '{plain(label_col)}' ({len(counts):,}{shown}):"
        )
        st.dataframe(counts.head(PREVIEW_LABELS), hide_index=True)
    return text_col, label_col


def _first_value(key: str, value) -> None:
    """Give the widget ``key`` its first value through the session state, where a link's
    value (``dashboard.urlstate.restore``) may already be: a widget given a value both ways
    makes Streamlit warn in the server log."""
    st.session_state.setdefault(key, value)


def sidebar() -> Selection:
    """Draw the model and dataset picker (in app.py, so it survives page switches).

    Returns:
        The choice, also kept in ``st.session_state["selection"]`` for the pages.
    """
    sb = st.sidebar
    env_kind, env_ref = _env_model()
    sb.header("Model")
    kinds = list(MODEL_KINDS)
    _first_value("src_model_kind", env_kind)
    kind = sb.radio(
        "Model source",
        kinds,
        key="src_model_kind",
        help="The bundled default works offline: MiniLM sentence encoder + a review classifier "
        "head. A local directory or hub id holds a sequence-classification checkpoint or a "
        "causal language model (GPT-2, OPT, Llama, Qwen2, …: scored by perplexity on the "
        "Compress & Evaluate page); "
        "'Encoder + trained head' trains a logistic-regression head on your dataset's "
        "training split.",
    )
    ref = ""
    if kind != BUNDLED:
        label, first = MODEL_KINDS[kind]
        _first_value(f"src_{kind}", env_ref if kind == env_kind else first)
        ref = sb.text_input(label, key=f"src_{kind}")
    sb.header("Dataset")
    env_data, env_data_ref = _env_dataset()
    data_kinds = [REVIEWS, CSV, HF]
    _first_value("src_data_kind", env_data)
    data_kind = sb.radio(
        "Dataset source",
        data_kinds,
        key="src_data_kind",
        help="Bundled: 5000 Amazon fine-food reviews labelled great/other. A CSV needs a text "
        "and a label column. Sources without a test split get a fixed, stratified 80/20 split.",
    )
    data_ref, raw, digest, problem = "", None, None, None
    text_col, label_col = "text", "label"
    if data_kind == CSV:
        upload = sb.file_uploader("Upload a CSV", type=["csv", "tsv"], key="src_upload")
        _first_value("src_csv_path", env_data_ref if env_data == CSV else "")
        path = sb.text_input(
            "…or a CSV path on this machine",
            key="src_csv_path",
            help="A file on the server, in a folder the server may read.",
        ).strip()
        if upload is not None or path:
            st.session_state.pop(UPLOAD_LOST, None)
        elif st.session_state.get(UPLOAD_LOST):
            sb.warning(
                "This link's dataset was an uploaded CSV file, and an upload is not part of a "
                "link (a reload or a shared link cannot bring it back): upload the file again "
                "above, or choose another dataset source."
            )
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
    else:
        st.session_state.pop(UPLOAD_LOST, None)
    if data_kind == HF:
        _first_value("src_hf", env_data_ref if env_data == HF else "hf:imdb")
        data_ref = sb.text_input("Dataset id (hf:NAME[:CONFIG])", key="src_hf")
        data_ref = data_ref.strip()
        if data_ref and not data_ref.startswith("hf:"):
            data_ref = f"hf:{data_ref}"
        _first_value("src_hf_text", "text")
        _first_value("src_hf_label", "label")
        text_col = sb.text_input("Text column", key="src_hf_text")
        label_col = sb.text_input("Label column", key="src_hf_label")
    _first_value("src_rows", _env_rows())
    rows = sb.number_input(
        "Evaluation rows",
        min_value=1,
        max_value=MAX_ROWS,
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
