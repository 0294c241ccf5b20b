"""Evaluate a classifier on a dataset: scikit-learn metrics, ROC data, measured latency."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn import metrics as skm

from llmopt import metrics as registry
from llmopt.attention import attention_implementation
from llmopt.batching import accepts_token_types, encode, iter_batches
from llmopt.data import TextDataset, display_text
from llmopt.errors import LlmoptError, train_head_fix
from llmopt.loaded import LoadedModel, Progress, count_params, size_bytes
from llmopt.metrics import roc_auc  # noqa: F401 - its home was here; callers import it from here

# The built-in classification metrics (the CLI JSON contract); registered ones: metrics.keys()
METRIC_KEYS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc")


@dataclass
class EvalResult:
    """Predictions and measurements of one model on one dataset, in the dataset's row order."""

    y_true: np.ndarray  # (n,) labels in the model's label space
    y_score: np.ndarray  # (n, classes) probabilities
    y_pred: np.ndarray  # (n,)
    label_names: list[str]
    metrics: dict[str, float]
    confusion: np.ndarray  # (classes, classes): rows true, columns predicted
    roc: dict[str, dict[str, np.ndarray | float]]  # class -> {"fpr", "tpr", "auc"}
    latency_ms_per_sample: float
    size_bytes: int
    params_total: int
    params_nonzero: int
    n_truncated: int = 0
    name: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The RESULT object of the CLI's ``--json`` (docs/design.md); NaN becomes null."""
        return {
            "metrics": {k: _json_float(self.metrics.get(k)) for k in registry.keys()},
            "confusion_matrix": self.confusion.astype(int).tolist(),
            "latency_ms_per_sample": _json_float(self.latency_ms_per_sample),
            "size_bytes": int(self.size_bytes),
            "params_total": int(self.params_total),
            "params_nonzero": int(self.params_nonzero),
        }


def _json_float(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def label_map(loaded: LoadedModel, dataset: TextDataset) -> np.ndarray:
    """For each dataset label index, the model's label index.

    Names are matched (case-insensitively) when both sides have meaningful names; a model
    with ``LABEL_0``-style names, or a dataset with integer labels, is matched by position.

    Raises:
        LlmoptError: if a dataset label has no counterpart in the model.
    """
    model_names = list(loaded.label_names)
    data_names = list(dataset.label_names)
    data_numeric = all(n.lstrip("-").isdigit() for n in data_names)
    if loaded.named_labels and not data_numeric:
        lookup = {n.lower(): i for i, n in enumerate(model_names)}
        unknown = [n for n in data_names if n.lower() not in lookup]
        if unknown:
            raise LlmoptError(
                f"dataset labels {_names(unknown)} are not labels of model {loaded.name!r} "
                f"(it knows: {_names(model_names)}); rename the labels in your data, or train a "
                "head",
                fix=train_head_fix(),
            )
        return np.array([lookup[n.lower()] for n in data_names])
    if data_numeric:
        values = [int(n) for n in data_names]
        if min(values) >= 0 and max(values) < len(model_names):
            return np.array(values)
    if len(data_names) > len(model_names) or (data_numeric and not loaded.named_labels):
        raise LlmoptError(
            f"the dataset has {len(data_names)} labels ({_names(data_names)}) but model "
            f"{loaded.name!r} has {len(model_names)} ({_names(model_names)})",
            fix=train_head_fix(),
        )
    return np.arange(len(data_names))


def _names(names: list[str], limit: int = 10) -> str:
    """Label names for a message: the first ``limit``, each cut to 30 characters."""
    shown = [n if len(n) <= 30 else n[:29] + "…" for n in map(str, names[:limit])]
    return ", ".join(shown) + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _check_inputs(loaded, dataset, batch_size) -> None:
    """Public-API argument checks, with the CLI's kind of message (not a bare TypeError)."""
    if not isinstance(loaded, LoadedModel):
        raise LlmoptError(
            f"evaluate needs a LoadedModel (from llmopt.load_model), got {type(loaded).__name__}"
        )
    if not isinstance(dataset, TextDataset):
        raise LlmoptError(
            f"evaluate needs a TextDataset (from llmopt.load_dataset), got {type(dataset).__name__}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise LlmoptError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if batch_size < 1:
        raise LlmoptError(f"batch_size must be >= 1, got {batch_size}")


def compute_metrics(y_true: np.ndarray, y_score: np.ndarray, y_pred: np.ndarray) -> dict:
    """Every registered classification metric (``llmopt.metrics``): accuracy, macro
    precision/recall/F1, ROC-AUC (binary, or macro one-vs-rest) and any added since."""
    return registry.compute_all(y_true, y_score, y_pred)


def roc_curves(y_true: np.ndarray, y_score: np.ndarray, label_names: list[str]) -> dict:
    """One-vs-rest ROC curve of every class that occurs with both outcomes."""
    curves = {}
    for c, name in enumerate(label_names):
        positive = y_true == c
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = skm.roc_curve(positive, y_score[:, c])
        curves[name] = {"fpr": fpr, "tpr": tpr, "auc": float(skm.auc(fpr, tpr))}
    return curves


@torch.inference_mode()
def predict_proba(
    loaded: LoadedModel,
    texts: list[str],
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
    sort: bool = True,
    fused: bool = True,
) -> tuple[np.ndarray, float, int]:
    """Class probabilities of ``texts`` in their order.

    With ``fused`` (the default) attention runs as fused scaled-dot-product attention where the
    model supports it: no attention maps are needed here (``fused=False``: the eager path).
    The model runs in the precision its weights have (a model
    compressed with ``precision="bf16"`` runs bf16 kernels); probabilities are computed in
    float64 from its logits.

    Returns:
        (probabilities (n, classes), model milliseconds per text after a warm-up,
        number of texts truncated to the model's maximum length).
    """
    model = loaded.model
    encoded = encode(
        loaded.tokenizer, texts, loaded.max_length, token_types=accepts_token_types(model)
    )
    batches = list(iter_batches(encoded, batch_size, sort=sort))
    probs = np.zeros((len(texts), len(loaded.label_names)), dtype=np.float64)
    seconds = 0.0
    with attention_implementation(model, "sdpa" if fused else "eager"):
        if batches:  # warm-up: first-call allocations and kernel selection are not latency
            model(**{k: v[:1] for k, v in batches[-1][1].items()})
        for i, (rows, inputs) in enumerate(batches):
            start = time.perf_counter()
            logits = model(**inputs).logits
            seconds += time.perf_counter() - start
            probs[rows] = torch.softmax(logits.double(), dim=-1).numpy()
            if progress:
                progress((i + 1) / len(batches), f"evaluating {loaded.name}")
    return probs, 1000.0 * seconds / max(len(texts), 1), encoded.n_truncated


def evaluate(
    loaded: LoadedModel,
    dataset: TextDataset,
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> EvalResult:
    """Evaluate ``loaded`` on ``dataset``.

    Args:
        loaded: the classifier.
        dataset: texts and labels; labels are matched to the model's (see ``label_map``).
        batch_size: texts per forward pass (length-sorted, padded per batch).
        progress: called with (fraction, message) after each batch.

    Returns:
        Probabilities, predictions, scikit-learn metrics, confusion matrix, ROC curves,
        latency per sample (model time only), size and parameter counts.

    Raises:
        LlmoptError: empty dataset, or labels the model does not know.
    """
    _check_inputs(loaded, dataset, batch_size)
    if progress is not None and not callable(progress):
        raise LlmoptError("progress must be a callable taking (fraction, message)")
    if len(dataset) == 0:
        raise LlmoptError("the dataset has no rows to evaluate")
    mapping = label_map(loaded, dataset)
    y_true = mapping[dataset.labels]
    y_score, latency_ms, n_truncated = predict_proba(
        loaded, dataset.texts, batch_size=batch_size, progress=progress
    )
    y_pred = y_score.argmax(1)
    k = len(loaded.label_names)
    total, nonzero = count_params(loaded.model)
    return EvalResult(
        y_true=y_true,
        y_score=y_score,
        y_pred=y_pred,
        label_names=list(loaded.label_names),
        metrics=compute_metrics(y_true, y_score, y_pred),
        confusion=skm.confusion_matrix(y_true, y_pred, labels=list(range(k))),
        roc=roc_curves(y_true, y_score, loaded.label_names),
        latency_ms_per_sample=latency_ms,
        size_bytes=size_bytes(loaded),
        params_total=total,
        params_nonzero=nonzero,
        n_truncated=n_truncated,
        name=loaded.name,
        notes=list(loaded.notes),
    )


def compare(base: EvalResult, other: EvalResult) -> dict:
    """Fidelity of ``other`` to ``base`` on the same rows.

    Returns:
        ``{"agreement": fraction of equal predictions, "mean_kl": mean KL(base || other) in
        nats, "flipped": row positions whose prediction changed}``.
    """
    if not isinstance(base, EvalResult) or not isinstance(other, EvalResult):
        raise LlmoptError("compare needs two EvalResults (from llmopt.evaluate)")
    if base.y_score.shape != other.y_score.shape or not np.array_equal(base.y_true, other.y_true):
        raise LlmoptError("compare needs two results on the same rows and labels")
    eps = 1e-12
    p = np.clip(base.y_score, eps, 1.0)
    q = np.clip(other.y_score, eps, 1.0)
    kl = (p * (np.log(p) - np.log(q))).sum(1)
    return {
        "agreement": float((base.y_pred == other.y_pred).mean()),
        "mean_kl": float(kl.mean()),
        "flipped": np.flatnonzero(base.y_pred != other.y_pred).tolist(),
    }


def flipped_table(base: EvalResult, other: EvalResult, texts: list[str]):
    """The texts whose predicted label changed, with both models' probability of the label.

    Args:
        base: the uncompressed model's result.
        other: the compressed model's result on the same rows.
        texts: the texts of those rows, in the same order.

    Returns:
        A pandas DataFrame, one row per flipped text.
    """
    import pandas as pd

    fid = compare(base, other)
    if len(texts) != len(base.y_true):
        raise LlmoptError(f"flipped_table needs one text per row: {len(texts)} texts, "
                          f"{len(base.y_true)} rows")  # fmt: skip
    rows = np.asarray(fid["flipped"], dtype=int)
    names = base.label_names
    truth = base.y_true[rows]
    return pd.DataFrame(
        {
            "text": [display_text(texts[i]) for i in rows],
            "label": [names[t] for t in truth],
            "baseline says": [names[p] for p in base.y_pred[rows]],
            "compressed says": [names[p] for p in other.y_pred[rows]],
            "P(label) baseline": base.y_score[rows, truth],
            "P(label) compressed": other.y_score[rows, truth],
        }
    )
