"""The one registry of evaluation metrics: what each is, how it is computed, bootstrapped and
shown.

Evaluation (``EvalResult.metrics``, the CLI's JSON), the statistics (bootstrap intervals and
paired differences), the Compare page's axes and table, the sweep's columns, the figures'
titles and the result cards all read this registry, so a new metric is one ``register`` call.

A metric's ``compute(y_true, y_score, y_pred)`` gives its value on the rows (scikit-learn's
definitions). Its ``replicates(sample)`` gives its value on every bootstrap replicate at once
(``Sample`` holds the rows and the replicates' row counts, with shared pieces such as the
weighted confusion cells computed once); a metric without one is bootstrapped by computing it
on each resample of the rows (correct, slower).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

CLASSIFY = "classify"  # the task that produces the classification metrics
ZERO_SHOT = "zero-shot"  # a causal LM classifying by label scoring: the same metrics
PERPLEXITY = "perplexity"  # a causal LM scored on texts: perplexity, bits per byte, fidelity


@dataclass(frozen=True)
class Metric:
    """One metric: its key in results and stores, how to compute, bootstrap and show it."""

    key: str  # e.g. "f1_macro": the key of EvalResult.metrics, the CLI JSON and the store
    title: str  # e.g. "F1 (macro)": axis titles, table rows
    short: str  # e.g. "F1": a narrow table column
    compute: Callable[[np.ndarray, np.ndarray, np.ndarray], float]  # (y_true, y_score, y_pred)
    replicates: Callable[[Sample], np.ndarray] | None = None  # (B,) values; None: resample
    higher_is_better: bool = True
    unit: str = ""  # "" for a fraction in [0, 1]; else e.g. "nats", "bits/byte"
    tasks: tuple[str, ...] = (CLASSIFY,)  # the evaluation tasks that produce it
    headline: bool = False  # shown as a result card, a column of the runs table and the sweep
    digits: int = 3  # decimals of a shown value

    def format(self, value: float | None) -> str:
        """The value as shown, e.g. '0.812' ('n/a' when undefined)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        return f"{value:.{self.digits}f}" + (f" {self.unit}" if self.unit else "")

    def format_delta(self, delta: float | None) -> str:
        """A change as shown: '+1.2 pp' for a fraction, else signed in the metric's unit."""
        if delta is None or (isinstance(delta, float) and math.isnan(delta)):
            return "n/a"
        if not self.unit:
            return f"{100 * delta:+.1f} pp"
        return f"{delta:+.{self.digits}f} {self.unit}"


class Sample:
    """Rows of one model and bootstrap replicates of them, for ``Metric.replicates``.

    ``weights[b, i]`` is how often row i is drawn in replicate b (a row of ones: the rows as
    they are). Shared pieces (confusion cells, per-class precision and recall) are computed
    once, on first use, for every metric that asks.
    """

    def __init__(self, y_true, y_score, weights, y_pred=None) -> None:
        self.y_true = np.asarray(y_true, dtype=np.int64)
        self.y_score = np.asarray(y_score, dtype=np.float64)
        self.y_pred = (
            self.y_score.argmax(1) if y_pred is None else np.asarray(y_pred, dtype=np.int64)
        )
        self.weights = np.asarray(weights, dtype=np.float64)

    @cached_property
    def cells(self) -> np.ndarray:
        """(B, true, predicted) weighted confusion counts per replicate."""
        k = self.y_score.shape[1]
        codes = self.y_true * k + self.y_pred
        return _cells(codes, self.weights, k * k).reshape(-1, k, k)

    @cached_property
    def per_class(self) -> dict[str, np.ndarray]:
        """(B, classes) tp, precision, recall, F1 and ``present`` (in truth or predictions)."""
        cells = self.cells
        tp = np.diagonal(cells, axis1=1, axis2=2)
        truth, predicted = cells.sum(2), cells.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), 0.0)
            recall = np.where(truth > 0, tp / np.where(truth > 0, truth, 1), 0.0)
            f_den = precision + recall
            f1 = np.where(f_den > 0, 2 * precision * recall / np.where(f_den > 0, f_den, 1), 0)
        present = (truth + predicted) > 0
        return {"tp": tp, "precision": precision, "recall": recall, "f1": f1, "present": present}

    def macro(self, name: str) -> np.ndarray:
        """Mean of a per-class value over the classes present in each replicate (sklearn's)."""
        pc = self.per_class
        n_labels = np.maximum(pc["present"].sum(1), 1)
        return (pc[name] * pc["present"]).sum(1) / n_labels

    def resampled(self, metric: Metric) -> np.ndarray:
        """``metric.compute`` on each replicate's rows, drawn again as the weights say."""
        rows = np.arange(len(self.y_true))
        out = np.empty(self.weights.shape[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an undefined replicate is NaN, quietly
            for b, w in enumerate(self.weights.astype(np.int64)):
                idx = np.repeat(rows, w)
                try:
                    out[b] = metric.compute(self.y_true[idx], self.y_score[idx], self.y_pred[idx])
                except ValueError:
                    out[b] = math.nan
        return out


def _cells(codes: np.ndarray, weights: np.ndarray, n_cells: int) -> np.ndarray:
    """Weighted counts of each code in ``range(n_cells)`` per replicate: (B, n_cells)."""
    out = np.zeros((weights.shape[0], n_cells))
    if codes.size == 0:
        return out
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, np.diff(sorted_codes) != 0])
    out[:, sorted_codes[starts]] = np.add.reduceat(weights[:, order], starts, axis=1)
    return out


# --- the built-in classification metrics ------------------------------------------------------


def _skm():
    """scikit-learn's metrics, imported on first use: reading the registry (the CLI's flags and
    help) must not cost scikit-learn's import."""
    from sklearn import metrics as skm

    return skm


_PRF_LATEST: tuple = (None, None)  # (rows, (precision, recall, F1)) of the latest call


def _precision_recall_f1(y_true, y_pred) -> tuple[float, float, float]:
    """Macro precision, recall and F1 from one scikit-learn call, kept for the next metric
    that asks about the same rows (``compute_all`` asks for each of the three in a row)."""
    global _PRF_LATEST
    t, p = np.asarray(y_true), np.asarray(y_pred)
    rows = (t.dtype.str, t.shape, t.tobytes(), p.dtype.str, p.shape, p.tobytes())
    latest_rows, values = _PRF_LATEST  # one read: sessions may call from several threads
    if latest_rows != rows:
        precision, recall, f1, _ = _skm().precision_recall_fscore_support(
            y_true, y_pred, average="macro", zero_division=0
        )
        values = (float(precision), float(recall), float(f1))
        _PRF_LATEST = (rows, values)
    return values


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Binary AUC of class 1 for two classes, macro one-vs-rest for more; NaN if undefined."""
    if len(np.unique(y_true)) < 2:
        return float("nan")
    if y_score.shape[1] == 2:
        return float(_skm().roc_auc_score(y_true, y_score[:, 1]))
    present = np.unique(y_true)
    if len(present) < y_score.shape[1]:  # one-vs-rest over the classes that occur
        scores = y_score[:, present] / y_score[:, present].sum(1, keepdims=True)
        if len(present) == 2:  # both one-vs-rest AUCs equal the binary one (sklearn refuses)
            return float(_skm().roc_auc_score(y_true == present[1], scores[:, 1]))
        return float(_skm().roc_auc_score(y_true, scores, multi_class="ovr", labels=present))
    return float(_skm().roc_auc_score(y_true, y_score, multi_class="ovr", average="macro"))


def _weighted_auc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mann–Whitney AUC (ties count half) of ``score`` for ``positive`` rows, per replicate.

    Equals ``sklearn.metrics.roc_auc_score(positive, score, sample_weight=w)`` for each row w
    of ``weights``; NaN where a replicate has no positive or no negative row.
    """
    order = np.argsort(score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, np.diff(s) != 0])  # one group per distinct score
    w = weights[:, order]
    pos = positive[order]
    p = np.add.reduceat(w * pos, starts, axis=1)  # (B, distinct scores)
    q = np.add.reduceat(w * ~pos, starts, axis=1)
    below = np.cumsum(q, axis=1) - q  # negative weight with a strictly smaller score
    num = (p * (below + 0.5 * q)).sum(1)
    den = p.sum(1) * q.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _auc_replicates(sample: Sample) -> np.ndarray:
    """ROC AUC per replicate, as ``roc_auc`` computes it on the rows."""
    y_true, y_score, weights = sample.y_true, sample.y_score, sample.weights
    if y_score.shape[1] == 2:
        return _weighted_auc(y_true == 1, y_score[:, 1], weights)
    present = np.unique(y_true)
    scores = y_score
    if len(present) < y_score.shape[1]:  # as roc_auc: renormalise over present classes
        scores = y_score[:, present] / y_score[:, present].sum(1, keepdims=True)
    per_class = np.stack(
        [_weighted_auc(y_true == c, scores[:, j], weights) for j, c in enumerate(present)], axis=1
    )
    with warnings.catch_warnings():  # a replicate with no defined class AUC is NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per_class, axis=1)


def _accuracy_replicates(sample: Sample) -> np.ndarray:
    total = sample.cells.sum((1, 2))
    return sample.per_class["tp"].sum(1) / np.where(total > 0, total, 1)


_REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add ``metric`` (a later registration with the same key replaces the earlier one)."""
    if not isinstance(metric, Metric):
        raise TypeError(f"register needs a Metric, got {type(metric).__name__}")
    _REGISTRY[metric.key] = metric
    return metric


def unregister(key: str) -> None:
    """Remove a metric (tests that register one of their own clean up with this)."""
    _REGISTRY.pop(key, None)


def all_metrics(task: str | None = CLASSIFY) -> dict[str, Metric]:
    """{key: Metric} that ``task`` produces (None: every task), in registration order."""
    return {k: m for k, m in _REGISTRY.items() if task is None or task in m.tasks}


def keys(task: str | None = CLASSIFY) -> tuple[str, ...]:
    """The metric keys of ``task``, in registration order (the CLI JSON's order)."""
    return tuple(all_metrics(task))


def headline(task: str | None = CLASSIFY) -> tuple[str, ...]:
    """The metrics shown as result cards, runs-table columns and sweep columns."""
    return tuple(k for k, m in all_metrics(task).items() if m.headline)


def ranked(task: str | None = CLASSIFY) -> tuple[str, ...]:
    """Headline metrics first, then the others: the order of Compare's axes and scores."""
    rest = tuple(k for k in keys(task) if k not in headline(task))
    return headline(task) + rest


def get(key: str) -> Metric:
    """One metric by key (KeyError if unknown)."""
    return _REGISTRY[key]


def compute_all(y_true, y_score, y_pred, task: str = CLASSIFY) -> dict[str, float]:
    """Every metric of ``task`` on the rows."""
    return {k: float(m.compute(y_true, y_score, y_pred)) for k, m in all_metrics(task).items()}


def replicates_all(sample: Sample, task: str = CLASSIFY) -> dict[str, np.ndarray]:
    """Every metric of ``task`` on each replicate of ``sample``."""
    out = {}
    for k, m in all_metrics(task).items():
        out[k] = m.replicates(sample) if m.replicates is not None else sample.resampled(m)
    return out


class LiveList(Sequence):
    """A read-only list computed from the registry on each use (so it sees new metrics)."""

    def __init__(self, build: Callable[[], list]) -> None:
        self._build = build

    def __getitem__(self, i):
        return self._build()[i]

    def __len__(self) -> int:
        return len(self._build())

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, (list, tuple, Sequence)) else False

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._build())


class LiveDict(Mapping):
    """A read-only dict computed from the registry on each use (so it sees new metrics)."""

    def __init__(self, build: Callable[[], dict]) -> None:
        self._build = build

    def __getitem__(self, key):
        return self._build()[key]

    def __iter__(self):
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())

    def __repr__(self) -> str:
        return repr(self._build())


def _macro_metric(index: int, part: str, title: str, short: str) -> Metric:
    """Macro precision, recall or F1 (``index`` 0, 1, 2 of ``_precision_recall_f1``)."""

    def compute(y_true: np.ndarray, y_score: np.ndarray, y_pred: np.ndarray) -> float:
        return _precision_recall_f1(y_true, y_pred)[index]

    def replicates(sample: Sample) -> np.ndarray:
        return sample.macro(part)

    return Metric(
        f"{part}_macro",
        f"{title} (macro)",
        short,
        compute,
        replicates,
        headline=part == "f1",
        tasks=(CLASSIFY, ZERO_SHOT),
    )


for _metric in (
    Metric(
        "accuracy",
        "Accuracy",
        "accuracy",
        lambda t, s, p: float(_skm().accuracy_score(t, p)),
        _accuracy_replicates,
        headline=True,
        tasks=(CLASSIFY, ZERO_SHOT),
    ),
    *(  # macro precision, recall and F1: one scikit-learn call for the three
        _macro_metric(i, part, title, short)
        for i, (part, title, short) in enumerate(
            [
                ("precision", "Precision", "precision"),
                ("recall", "Recall", "recall"),
                ("f1", "F1", "F1"),
            ]  # fmt: skip
        )
    ),
    Metric(
        "roc_auc",
        "ROC AUC",
        "AUC",
        lambda t, s, p: roc_auc(t, s),
        _auc_replicates,
        headline=True,
        tasks=(CLASSIFY, ZERO_SHOT),
    ),
):
    register(_metric)


# --- the causal-LM metrics (task "perplexity") -----------------------------------------------


def _from_token_scores(key: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], float]:
    """LM metrics come from token log-likelihoods (``llmopt.lm``), not from labelled rows."""

    def compute(y_true, y_score, y_pred) -> float:
        raise ValueError(
            f"{key} is computed from token log-likelihoods by llmopt.lm (perplexity, "
            "compare_lms), not from labels and probabilities"
        )

    return compute


for _key, _title, _short, _unit, _higher, _headline, _digits in (
    ("perplexity", "Perplexity (tokens)", "ppl", "ppl", False, True, 3),
    ("bits_per_byte", "Bits per byte", "bits/B", "bits/byte", False, True, 4),
    ("word_perplexity", "Word perplexity", "word ppl", "ppl", False, False, 3),
    ("byte_perplexity", "Byte perplexity", "byte ppl", "ppl", False, False, 4),
    ("top1_agreement", "Next-token top-1 agreement", "top-1 agr.", "", True, False, 4),
    ("mean_kl", "Mean KL(base ‖ compressed) per token", "KL", "nats", False, False, 5),
):
    register(
        Metric(
            _key,
            _title,
            _short,
            _from_token_scores(_key),
            higher_is_better=_higher,
            unit=_unit,
            tasks=(PERPLEXITY,),
            headline=_headline,
            digits=_digits,
        )
    )
