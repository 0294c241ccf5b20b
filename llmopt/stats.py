"""Honest statistics for comparing models on the same rows: bootstrap intervals, exact McNemar,
and the Pareto front of any two metrics.

Every interval here is a percentile bootstrap over the evaluated rows: each replicate draws the
n rows again with replacement (multinomial weights, so one array of weights serves every metric
and, for paired comparisons, both models at once). Metrics are those of the metric
registry (``llmopt.metrics``), each computed as its ``compute`` does on the rows
(scikit-learn's definitions) but vectorised over all replicates by its ``replicates``, so 1,000
replicates of 1,000 rows take milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from llmopt import metrics as registry

_weighted_auc = registry._weighted_auc  # the vectorised AUC lives with its metric

N_BOOT = 1000  # replicates: percentile ends of a 95% interval settle to ~0.005 at this count
LEVEL = 0.95  # two-sided coverage of every interval
SEED = 0  # fixed, so a recipe re-run reproduces the recorded intervals exactly
ALPHA = 0.05  # a McNemar p-value below this calls an accuracy difference significant

# Which way is better for each column a scatter can show (the Pareto front keeps the best):
# every registered metric (its ``higher_is_better``) and these measurements.
_MEASURED = {
    "agreement": True,
    "mean_kl": False,
    "size_mb": False,
    "size_bytes": False,
    "latency_ms": False,
    "latency_ratio": False,
    "params_nonzero": False,
    "mean_rel_error": False,
}
HIGHER_IS_BETTER = registry.LiveDict(
    lambda: {
        **{k: m.higher_is_better for k, m in registry.all_metrics(None).items()},
        **_MEASURED,
    }
)

__all__ = [
    "HIGHER_IS_BETTER",
    "McNemar",
    "bootstrap_intervals",
    "bootstrap_weights",
    "excludes_zero",
    "mcnemar_exact",
    "metric_replicates",
    "paired_delta_intervals",
    "pareto_mask",
]


def bootstrap_weights(n: int, *, n_boot: int = N_BOOT, seed: int = SEED) -> np.ndarray:
    """How often each of ``n`` rows is drawn in each replicate.

    Returns:
        (n_boot, n) integer counts; every row sums to ``n`` (one resample with replacement).
    """
    draws = np.random.default_rng(seed).integers(0, max(n, 1), size=(n_boot, n))  # row numbers
    flat = (draws + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n)


def metric_replicates(
    y_true: np.ndarray,
    y_score: np.ndarray,
    weights: np.ndarray,
    *,
    y_pred: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Every registered metric (``llmopt.metrics``) on each weighted replicate.

    Args:
        y_true: (n,) labels.
        y_score: (n, classes) probabilities.
        weights: (B, n) row counts per replicate (``bootstrap_weights``); a row of ones gives
            the metrics of the rows as they are.
        y_pred: (n,) predictions; default ``y_score.argmax(1)``.

    Returns:
        {metric: (B,) values}. Macro averages run over the labels present in the replicate's
        truth or predictions (as scikit-learn's); ROC AUC is binary for two classes, else the
        macro one-vs-rest mean over classes with both outcomes (NaN if none has); a metric
        registered without a vectorised form is computed on each resample of the rows.
    """
    return registry.replicates_all(registry.Sample(y_true, y_score, weights, y_pred))


def percentile_interval(reps: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval at ``level`` of bootstrap replicates, ignoring the non-finite
    ones (NaN when none is finite)."""
    finite = reps[np.isfinite(reps)]
    if finite.size == 0:
        return (math.nan, math.nan)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return (float(lo), float(hi))


def bootstrap_intervals(
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every metric of one model on its rows.

    Args:
        y_true: (n,) labels.
        y_score: (n, classes) probabilities (predictions are their argmax).
        level: coverage, e.g. 0.95.
        n_boot: replicates.
        seed: of the resampling, so intervals are reproducible.

    Returns:
        {metric: (low, high)}; (nan, nan) where no replicate defines the metric.
    """
    weights = bootstrap_weights(len(y_true), n_boot=n_boot, seed=seed)
    reps = metric_replicates(y_true, y_score, weights)
    return {m: percentile_interval(reps[m], level) for m in reps}


def paired_delta_intervals(
    y_true: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    *,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> dict[str, tuple[float, float]]:
    """Intervals of each metric's difference b − a, the two models resampled on the same rows.

    Pairing matters: both models see the same hard and easy rows in every replicate, so the
    interval of the difference is far narrower than two separate intervals would suggest.

    Returns:
        {metric: (low, high)} of metric(b) − metric(a); a difference whose interval contains 0
        is within the noise of these rows (``excludes_zero``).

    Raises:
        ValueError: the two score arrays do not cover the same rows and classes.
    """
    return paired_intervals(y_true, score_a, score_b, level=level, n_boot=n_boot, seed=seed)[2]


def paired_intervals(
    y_true: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    *,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> tuple[dict, dict, dict]:
    """Intervals of a's metrics, of b's, and of their differences b − a, from one set of
    replicates (each equals what ``bootstrap_intervals`` / ``paired_delta_intervals`` give).

    Raises:
        ValueError: the two score arrays do not cover the same rows and classes.
    """
    score_a, score_b = np.asarray(score_a), np.asarray(score_b)
    if score_a.shape != score_b.shape or len(score_a) != len(y_true):
        raise ValueError("paired intervals need both models' scores on the same rows")
    weights = bootstrap_weights(len(y_true), n_boot=n_boot, seed=seed)
    a = metric_replicates(y_true, score_a, weights)
    b = metric_replicates(y_true, score_b, weights)
    return (
        {m: percentile_interval(a[m], level) for m in a},
        {m: percentile_interval(b[m], level) for m in b},
        {m: percentile_interval(b[m] - a[m], level) for m in a},
    )


def excludes_zero(interval) -> bool:
    """Whether an interval of a difference lies wholly on one side of 0 (not noise)."""
    if interval is None:
        return False
    lo, hi = interval
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return False
    return lo > 0 or hi < 0


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two models' accuracy on the same rows."""

    only_a: int  # rows model a gets right and b gets wrong
    only_b: int  # rows b gets right and a gets wrong
    p_value: float  # two-sided, exact (binomial on the discordant rows)

    @property
    def significant(self) -> bool:
        """Whether the accuracy difference is unlikely under 'both are equally accurate'."""
        return self.p_value < ALPHA

    def to_dict(self) -> dict:
        return {"only_a": self.only_a, "only_b": self.only_b, "p_value": self.p_value}


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Exact two-sided McNemar test on paired right/wrong outcomes.

    Under the null hypothesis each discordant row (one model right, the other wrong) is equally
    likely to favour either model, so ``only_a`` ~ Binomial(only_a + only_b, 1/2); the p-value
    is twice the smaller tail, capped at 1.

    Args:
        correct_a: (n,) bool, model a's prediction equals the label.
        correct_b: (n,) bool, the same for model b, on the same rows.

    Raises:
        ValueError: arrays of different lengths.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("McNemar needs both models' outcomes on the same rows")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    if n == 0:
        return McNemar(only_a, only_b, 1.0)
    from scipy.stats import binom

    p = min(1.0, 2.0 * float(binom.cdf(min(only_a, only_b), n, 0.5)))
    return McNemar(only_a, only_b, p)


def pareto_mask(x: np.ndarray, y: np.ndarray, *, x_higher: bool, y_higher: bool) -> np.ndarray:
    """Which points no other point beats on both metrics (at least as good, better on one).

    Args:
        x, y: the two metrics of each point.
        x_higher, y_higher: whether larger values are better (``HIGHER_IS_BETTER``).

    Returns:
        (n,) bool; points with NaN are never on the front.
    """
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    xs = -xs if x_higher else xs  # from here on: smaller x and larger y are better
    ys = ys if y_higher else -ys
    front = np.zeros(len(xs), dtype=bool)
    valid = np.flatnonzero(~(np.isnan(xs) | np.isnan(ys)))
    order = valid[np.lexsort((-ys[valid], xs[valid]))]  # by x ascending, then y descending
    best = -np.inf  # best y among points with strictly smaller x
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and xs[order[j]] == xs[order[i]]:
            j += 1
        group = order[i:j]
        top = ys[group].max()
        if top > best:
            front[group[ys[group] == top]] = True
        best = max(best, top)
        i = j
    return front
