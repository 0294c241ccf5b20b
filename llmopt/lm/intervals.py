"""Bootstrap intervals of perplexity-type metrics over windows or documents, and paired
intervals of the difference between two models scored on the same units."""

from __future__ import annotations

import math

import numpy as np

from llmopt.errors import LlmoptError
from llmopt.stats import percentile_interval as _ends  # one percentile rule for all metrics

FLOOR = 1e-300  # keeps a replicate that drew only zero-length units finite


def _replicates(result, metric: str, weights: np.ndarray) -> np.ndarray:
    """``metric`` of ``result`` on each weighted replicate of its units: (B,)."""
    nll = weights @ result.nll
    if metric == "perplexity":
        den = weights @ result.tokens
    elif metric in ("bits_per_byte", "byte_perplexity"):
        den = weights @ result.bytes
    elif metric == "word_perplexity" and result.words is not None:
        den = weights @ result.words
    else:
        raise ValueError(f"{metric!r} is not a metric of the {result.protocol} protocol")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(den > 0, nll / np.maximum(den, FLOOR), np.nan)
    return ratio / math.log(2) if metric == "bits_per_byte" else np.exp(ratio)


def _weights(n: int, n_boot: int | None, seed: int | None) -> tuple[np.ndarray, float]:
    from llmopt.stats import LEVEL, N_BOOT, SEED, bootstrap_weights

    w = bootstrap_weights(n, n_boot=n_boot or N_BOOT, seed=SEED if seed is None else seed)
    return w.astype(np.float64), LEVEL


def perplexity_interval(
    result,
    metric: str = "perplexity",
    *,
    level: float | None = None,
    n_boot: int | None = None,
    seed: int | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval (95% by default) of a metric, resampling the result's
    units (paper protocol: windows; document protocol: documents) with replacement.

    Each replicate is the ratio of resampled sums (e.g. exp(Σ NLL / Σ tokens)), the same
    estimator as the point value.
    """
    weights, default_level = _weights(len(result.nll), n_boot, seed)
    return _ends(_replicates(result, metric, weights), level or default_level)


def paired_interval(
    base,
    other,
    metric: str = "perplexity",
    *,
    level: float | None = None,
    n_boot: int | None = None,
    seed: int | None = None,
) -> tuple[float, float]:
    """Interval of ``metric(other) − metric(base)``, both resampled on the same units in each
    replicate (so the noise both share cancels); an interval containing 0 is noise.

    Raises:
        LlmoptError: the results are not on the same units (protocol, window length, texts;
            for token perplexity also the same tokens).
    """
    same = (
        base.protocol == other.protocol
        and base.seq_len == other.seq_len
        and len(base.nll) == len(other.nll)
        and np.array_equal(base.bytes, other.bytes)
    )
    if same and metric == "perplexity":
        same = np.array_equal(base.tokens, other.tokens)
    if not same:
        raise LlmoptError(
            "the two results were not scored on the same windows or documents, so their "
            "difference cannot be paired (token perplexity pairs only models with one tokenizer; "
            "compare bits per byte of the document protocol across tokenizers)"
        )
    weights, default_level = _weights(len(base.nll), n_boot, seed)
    delta = _replicates(other, metric, weights) - _replicates(base, metric, weights)
    return _ends(delta, level or default_level)
