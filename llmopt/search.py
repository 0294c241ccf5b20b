"""Accuracy-aware search: the smallest (or fastest) compressed model whose loss on validation rows
is, with 95% confidence, at most a tolerance; then that recipe on the untouched test rows.

The space: uniform settings of the given methods, and per-layer variants of each method that
start from the most compressed uniform setting the tolerance rejects and fall back its most
sensitive layers first (``llmopt.sensitivity`` orders them; for quantization, the knapsack bit
allocation of ``llmopt.allocation`` at decreasing average-bits budgets). Each ordered sequence is
bisected, so a method costs a few evaluations, not one per setting.

The exit is statistical (``accepts``): a candidate is accepted only when the upper end of the
paired 95% bootstrap interval of its loss on the validation rows is within the tolerance. For a
classifier the loss is base minus candidate accuracy (``llmopt.stats``); for a causal LM it is
the rise of the mean NLL per token (nats, = the log of the perplexity ratio) on the paper
protocol's windows of the validation texts, resampled over windows (``sensitivity.nll_delta``).
Validation rows are carved from the end of the training split
(``sensitivity.split_validation``); the test rows are read only for the pick.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from llmopt.errors import LlmoptError
from llmopt.loaded import LoadedModel

if TYPE_CHECKING:
    from llmopt.lm.load import LoadedLM

OBJECTIVES = ("size", "latency")
KINDS = ("prune", "quantize", "lowrank")  # kinds with a level to search (kernels have none)
DEFAULT_METHODS = ("magnitude", "rtn")  # need no calibration: the cheapest space to search
MAX_EVALUATIONS = 24  # ~4 bisection steps per method and ~6 per per-layer sequence
# The interval's resolution decides what can pass: a candidate that changes f of the n rows'
# predictions has an interval about ±1.96·sqrt(f/n) wide, so a 1-point tolerance needs ~1,000
# rows once 2-3% of the predictions move (256 rows accepted near-lossless settings only)
VALIDATION_ROWS = 1000  # at most half the training split (the rest calibrates)
SENSITIVITY_ROWS = 128  # of the validation rows: they only order the per-layer fallbacks
SPARSITIES = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)  # most compression first
BITS = (2, 3, 4, 5, 6, 8)  # the config's range, most compression first
RANK_SHARES = (1 / 16, 1 / 8, 1 / 4, 3 / 8)  # of the narrowest matrix; above ~1/2 no saving
BUDGET_STEP = 0.25  # average-bits step between knapsack budgets
NOISE_PER_BIT = 4.0  # RTN's error variance shrinks 4x per bit (step 2^-b): the loss scale
TIE_BREAK = 1e-9  # per weight-share and bit: far below one row's accuracy step (1/rows)
FISHER_ROWS = 8  # the sensitivity's Fisher proxy is not used here: keep its gradients cheap


# ---------------------------------------------------------------- the exit rule


def allowed_loss(
    tolerance: float,
    *,
    relative: bool = False,
    baseline: float | None = None,
    metric: str = "accuracy",
) -> float:
    """The largest loss the tolerance allows: ``tolerance`` itself, or relative: for accuracy
    ``tolerance * baseline`` (0.01 keeps 99% of it); for ``metric="nll"`` (a causal LM, loss in
    nats per token) ``log(1 + tolerance)``, so the perplexity rises by at most that share.

    Raises:
        LlmoptError: a tolerance that is not a finite number >= 0, or a relative tolerance
            without a finite baseline.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
        raise LlmoptError(f"--tolerance must be a number, got {tolerance!r}")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise LlmoptError(f"--tolerance must be a finite number >= 0, got {tolerance!r}")
    if not relative:
        return float(tolerance)
    if metric == "nll":
        return math.log1p(float(tolerance))
    if baseline is None or not math.isfinite(baseline):
        raise LlmoptError("a relative tolerance needs the baseline metric")
    return float(tolerance) * abs(float(baseline))


def accepts(
    loss_interval: Sequence[float],
    tolerance: float,
    *,
    relative: bool = False,
    baseline: float | None = None,
    metric: str = "accuracy",
) -> bool:
    """Whether a candidate meets the tolerance with 95% confidence: the upper end of the paired
    interval of its loss (positive = worse than the base model) is at most the allowed loss.

    An interval that is undefined (NaN) or reversed is never accepted.
    """
    lo, hi = (float(x) for x in loss_interval)
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        return False
    return hi <= allowed_loss(tolerance, relative=relative, baseline=baseline, metric=metric)


def loss_interval(y_true, base_score, other_score) -> tuple[float, float, float]:
    """(loss, low, high): base accuracy minus the candidate's on the same rows, and the paired
    95% bootstrap interval of that loss (``llmopt.stats``)."""
    from llmopt.stats import paired_delta_intervals

    loss = float((base_score.argmax(1) == y_true).mean() - (other_score.argmax(1) == y_true).mean())
    lo, hi = paired_delta_intervals(y_true, base_score, other_score)["accuracy"]  # other − base
    return loss, -hi, -lo


# ---------------------------------------------------------------- the space


def parse_methods(text: str | Sequence[str]) -> list[tuple[str, str]]:
    """``"magnitude,rtn"`` → ``[("prune", "magnitude"), ("quantize", "rtn")]``.

    Raises:
        LlmoptError: an empty list, a repeated or unknown method, or a method without levels.
    """
    from llmopt.compression import registry

    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    parts = [p for p in parts if p]
    if not parts:
        raise LlmoptError("--methods needs at least one method, e.g. magnitude,rtn")
    if len(set(parts)) != len(parts):
        raise LlmoptError(f"--methods {','.join(parts)!r} repeats a method; give each once")
    known = {name: kind for kind in KINDS for name in registry.names(kind)}
    out = []
    for name in parts:
        if name not in known:
            raise LlmoptError(
                f"method {name!r} has no level to search; allowed: {', '.join(sorted(known))}"
            )
        out.append((known[name], name))
    return out


def default_levels(kind: str, model) -> list[float]:
    """The levels searched for a kind, most compression first."""
    if kind == "prune":
        return list(SPARSITIES)
    if kind == "quantize":
        return list(BITS)
    from llmopt.compression.targets import get_weight, select_targets

    narrow = min(min(get_weight(model.get_submodule(n)).shape) for n in select_targets(model))
    return sorted({max(1, int(narrow * s)) for s in RANK_SHARES})


@dataclass
class Candidate:
    """One evaluated setting."""

    number: int  # evaluation order, from 0
    label: str  # e.g. "magnitude 70%" or "magnitude 80%, 5 layers at 70%"
    method: str
    family: str  # "uniform" or "per-layer"
    config: Any  # CompressionConfig
    parent: int | None  # the candidate number it was derived from (None: the base model)
    size_bytes: int = 0
    latency_ms: float = math.nan  # per validation row (a causal LM: per window)
    metric: float = math.nan  # validation accuracy (a causal LM: mean NLL per token)
    loss: float = math.nan
    interval: tuple[float, float] = (math.nan, math.nan)  # of the loss
    accepted: bool = False
    run_id: int | None = None

    def to_dict(self) -> dict:
        from llmopt.sensitivity import _num

        return {
            "number": self.number,
            "label": self.label,
            "method": self.method,
            "family": self.family,
            "config": self.config.to_dict(),
            "parent": self.parent,
            "size_bytes": self.size_bytes,
            "latency_ms": _num(self.latency_ms),
            "metric": _num(self.metric),
            "loss": _num(self.loss),
            "interval": [_num(self.interval[0]), _num(self.interval[1])],
            "accepted": self.accepted,
            "run_id": self.run_id,
        }


@dataclass
class SearchResult:
    """What the search found and how: every candidate, the pick, and the pick on the test rows."""

    tolerance: float
    relative: bool
    objective: str
    allowed: float  # the largest loss accepted, in accuracy (a causal LM: nats per token)
    baseline: float  # validation accuracy of the base model (a causal LM: NLL per token)
    n_validation: int  # validation rows (texts)
    candidates: list[Candidate]
    best: Candidate | None
    uniform_best: Candidate | None
    seconds: float = 0.0
    seconds_to_pick: float = 0.0  # the search itself: before the pick is read on the test rows
    test_baseline: Any = None  # EvalResult (a causal LM: evaluate --json's LM object)
    test_compressed: Any = None  # EvalResult (a causal LM: evaluate --json's LM object)
    run_id: int | None = None  # the pick's run on the test rows
    base_size_bytes: int = 0
    sensitivity_seconds: float = 0.0
    sensitivities: list = field(default_factory=list)  # what ordered each per-layer sequence
    metric: str = "accuracy"  # or "nll" (a causal LM)
    windows: int = 0  # a causal LM's validation windows (the bootstrap's units)

    @property
    def evaluations(self) -> int:
        return len(self.candidates)

    @property
    def recipe(self) -> dict | None:
        return None if self.best is None else self.best.config.to_dict()

    def to_dict(self) -> dict:
        """The ``search --json`` contract (docs/design.md)."""
        from llmopt.sensitivity import _num

        best = self.best

        def side(x) -> dict | None:
            return x if x is None or isinstance(x, dict) else x.to_dict()

        units = {"windows": self.windows} if self.metric == "nll" else {}
        return {
            "tolerance": self.tolerance,
            "relative": self.relative,
            "objective": self.objective,
            "recipe": self.recipe,
            "evaluations": self.evaluations,
            "seconds": self.seconds,
            "validation": {
                "baseline": {
                    "metric": self.metric,
                    "value": _num(self.baseline),
                    "n": self.n_validation,
                    **units,
                    "size_bytes": self.base_size_bytes,
                },
                "best": None
                if best is None
                else {
                    "metric": self.metric,
                    "value": _num(best.metric),
                    "loss": _num(best.loss),
                    "loss_interval": [_num(best.interval[0]), _num(best.interval[1])],
                    "allowed_loss": self.allowed,
                    "size_bytes": best.size_bytes,
                    "label": best.label,
                },
            },
            "test": {
                "baseline": side(self.test_baseline),
                "compressed": side(self.test_compressed),
            },
            "uniform_best": None
            if self.uniform_best is None
            else {
                "recipe": self.uniform_best.config.to_dict(),
                "size_bytes": self.uniform_best.size_bytes,
            },
            "run_id": self.run_id,
        }


def per_layer_rows(config) -> list[dict]:
    """The per-layer table of a recipe: one row per rule (pattern and what it sets)."""
    rows = [{"layer": pattern, **rule} for pattern, rule in config.rules.items()]
    return rows + [{"layer": pattern, "skip": True} for pattern in config.skip]


# ---------------------------------------------------------------- the search


class _Searcher:
    """State shared by the phases: the rows, the base model's scores, the budget, the record.

    A classifier is scored by ``evaluate`` (accuracy); a causal LM by ``lm.perplexity`` on the
    paper protocol's windows of the validation texts (NLL per token)."""

    def __init__(self, loaded, calibration, validation, *, exit_rule, max_evaluations, store,
                 origin, calibration_samples, report, should_stop, batch_size,
                 seq_len=None):  # fmt: skip
        from llmopt.lm.load import LoadedLM

        self.loaded, self.calibration, self.validation = loaded, calibration, validation
        self.exit_rule = exit_rule
        self.max_evaluations = max_evaluations
        self.store, self.origin = store, origin
        self.calibration_samples = calibration_samples
        self.report, self.should_stop, self.batch_size = report, should_stop, batch_size
        self.is_lm = isinstance(loaded, LoadedLM)
        self.seq_len = seq_len
        self.candidates: list[Candidate] = []
        self.base_id: int | None = None
        rows = {"split": "train", "validation_rows": len(validation)}
        if self.is_lm:
            from llmopt.lm.load import lm_size
            from llmopt.lm.perplexity import perplexity

            self.base = perplexity(loaded, validation.texts, seq_len=seq_len)
            self.base_size = lm_size(loaded)
            self.baseline = float(self.base.nll.sum() / self.base.tokens.sum())
            if store is not None:
                from llmopt.recording import record_lm_evaluation

                self.base_id = record_lm_evaluation(
                    store, lm=loaded, dataset=validation, base=self.base,
                    base_size=self.base_size, origin=origin, rows=rows,
                ).base_id  # fmt: skip
            return
        from llmopt.evaluation import evaluate

        self.base = evaluate(loaded, validation, batch_size=batch_size)
        self.base_size = {"size_bytes": int(self.base.size_bytes)}
        self.baseline = float(self.base.metrics["accuracy"])
        if store is not None:
            from llmopt.recording import record_evaluation

            self.base_id = record_evaluation(
                store, base_model=loaded, dataset=validation, base=self.base, origin=origin,
                rows=rows,
            ).base_id  # fmt: skip

    @property
    def left(self) -> int:
        return self.max_evaluations - len(self.candidates)

    def evaluate(self, config, label: str, method: str, family: str, parent: int | None):
        """Compress, evaluate on the validation rows, apply the exit rule, record."""
        from llmopt.compression import compress, needs_calibration

        if self.should_stop is not None and self.should_stop():
            raise LlmoptError("search cancelled")
        number = len(self.candidates)
        self.report(
            min(0.95, number / self.max_evaluations),
            f"search: {label} ({number + 1}/{self.max_evaluations} at most)",
        )
        calibration = self.calibration if needs_calibration(config) else None
        made, creport = compress(self.loaded, config, calibration=calibration,
                                 seq_len=self.seq_len if self.is_lm else None)  # fmt: skip
        parent_run = None
        if self.store is not None:
            parent_run = self.base_id if parent is None else self.candidates[parent].run_id
        rows = {"split": "train", "validation_rows": len(self.validation)}
        if self.is_lm:
            cand = self._score_lm(cast("LoadedLM", made), creport, config, label, method, family,
                                  parent, parent_run, rows)  # fmt: skip
        else:
            cand = self._score(cast(LoadedModel, made), creport, config, label, method, family,
                               parent, parent_run, rows)  # fmt: skip
        self.candidates.append(cand)
        return cand

    def _score_lm(self, made, creport, config, label, method, family, parent, parent_run,
                  rows) -> Candidate:  # fmt: skip
        from llmopt.lm.load import lm_size
        from llmopt.lm.perplexity import perplexity
        from llmopt.sensitivity import nll_delta

        number = len(self.candidates)
        other = perplexity(made, self.validation.texts, seq_len=self.seq_len)
        size = lm_size(made)
        loss, (lo, hi) = nll_delta(self.base.tokens, self.base.nll, other.nll)
        cand = Candidate(
            number=number, label=label, method=method, family=family, config=config,
            parent=parent, size_bytes=int(size["size_bytes"]),
            latency_ms=1000.0 * other.seconds / max(len(other.nll), 1),
            metric=float(other.nll.sum() / other.tokens.sum()), loss=loss, interval=(lo, hi),
            accepted=self.exit_rule((lo, hi)),
        )  # fmt: skip
        if self.store is not None:
            from llmopt.recording import record_lm_evaluation

            cand.run_id = record_lm_evaluation(
                self.store, lm=self.loaded, dataset=self.validation, base=self.base,
                base_size=self.base_size, other=other, other_size=size, config=config,
                report=creport, origin=self.origin, parent=parent_run,
                name=f"search: {label}", rows=rows,
            ).run_id  # fmt: skip
        return cand

    def _score(self, compressed, creport, config, label, method, family, parent, parent_run,
               rows) -> Candidate:  # fmt: skip
        from llmopt.evaluation import evaluate

        number = len(self.candidates)
        other = evaluate(compressed, self.validation, batch_size=self.batch_size)
        loss, lo, hi = loss_interval(self.base.y_true, self.base.y_score, other.y_score)
        cand = Candidate(
            number=number, label=label, method=method, family=family, config=config,
            parent=parent, size_bytes=int(other.size_bytes),
            latency_ms=float(other.latency_ms_per_sample), metric=float(other.metrics["accuracy"]),
            loss=loss, interval=(lo, hi), accepted=self.exit_rule((lo, hi)),
        )  # fmt: skip
        if self.store is not None:
            from llmopt.recording import record_evaluation

            cand.run_id = record_evaluation(
                self.store, base_model=self.loaded, dataset=self.validation, base=self.base,
                other=other, variant=compressed, config=config, report=creport,
                origin=self.origin, parent=parent_run, name=f"search: {label}", rows=rows,
            ).run_id  # fmt: skip
        return cand

    def bisect(self, build: Callable[[int], tuple[Any, str, int | None]], lo: int, hi: int,
               method: str, family: str) -> Candidate | None:  # fmt: skip
        """Over a sequence ordered from most to least compression where index ``lo`` is known
        rejected and ``hi`` known accepted, find the first accepted index; returns the accepted
        candidate with the smallest index evaluated (None if none was)."""
        found = None
        while hi - lo > 1 and self.left > 0:
            mid = (lo + hi) // 2
            config, label, parent = build(mid)
            cand = self.evaluate(config, label, method, family, parent)
            if cand.accepted:
                hi, found = mid, cand
            else:
                lo = mid
        return found


def _level_text(kind: str, level) -> str:
    if kind == "prune":
        return f"{100 * level:.0f}%"
    return f"{level} bits" if kind == "quantize" else f"rank {level}"


def _level_key(kind: str) -> str:
    from llmopt.sensitivity import KIND_LEVEL

    return KIND_LEVEL[kind][1]


def default_validation_rows(n_train: int) -> int:
    """``VALIDATION_ROWS``, or half the training split when that is fewer (at least 1)."""
    return max(1, min(VALIDATION_ROWS, n_train // 2))


def search(
    loaded,
    train,
    test=None,
    *,
    tolerance: float,
    relative: bool = False,
    objective: str = "size",
    methods: str | Sequence[str] = DEFAULT_METHODS,
    max_evaluations: int = MAX_EVALUATIONS,
    validation_rows: int | None = None,
    sensitivity_rows: int | None = None,
    calibration_samples: int = 128,
    per_layer: bool = True,
    seq_len: int | None = None,
    store=None,
    origin: str = "api",
    batch_size: int = 32,
    progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SearchResult:
    """Search compressed variants of ``loaded`` for the smallest (``objective="size"``) or
    fastest (``"latency"``: measured per validation row) one whose loss meets the tolerance.

    Args:
        loaded: a classifier (``LoadedModel``; loss: accuracy points) or a causal LM
            (``LoadedLM``; loss: rise of the mean NLL per token, in nats).
        train: the training split: its last ``validation_rows`` rows are the validation rows,
            the others calibrate the methods that read activations.
        test: the test rows the pick is evaluated on (None: no test evaluation).
        tolerance: the allowed loss: accuracy (0.01: one point) or, for a causal LM, nats of
            mean NLL per token; with ``relative`` a share: of the baseline accuracy (0.01: keep
            99% of it), or of the perplexity (0.01: it rises by at most 1%).
        objective: ``size`` or ``latency``.
        methods: method names (``"magnitude,rtn"``), each searched alone.
        max_evaluations: candidates evaluated at most (the budget).
        validation_rows: rows the exit rule decides on (default ``default_validation_rows``).
        sensitivity_rows: the last of those rows that order the per-layer fallbacks (default
            ``SENSITIVITY_ROWS``, at most ``validation_rows``).
        per_layer: also search per-layer variants (sensitivity-ordered fallbacks).
        seq_len: a causal LM's window length (default: min(its limit, 1024)).
        store: an ``ExperimentStore`` to record every candidate (with its parent) and the pick.
        progress: called with (fraction, message).
        should_stop: polled before each evaluation; True stops with "search cancelled".

    Returns:
        The ``SearchResult``; ``best`` is None when no evaluated candidate met the tolerance.

    Raises:
        LlmoptError: a bad tolerance, objective, method, budget, row count or window length.
    """
    from llmopt.compression import check_config
    from llmopt.lm.load import LoadedLM
    from llmopt.sensitivity import level_config, split_validation

    started = time.perf_counter()
    is_lm = isinstance(loaded, LoadedLM)
    metric = "nll" if is_lm else "accuracy"
    allowed_loss(tolerance)  # the number's checks before any work
    if objective not in OBJECTIVES:
        raise LlmoptError(f"objective {objective!r} is unknown; allowed: {', '.join(OBJECTIVES)}")
    if isinstance(max_evaluations, bool) or not isinstance(max_evaluations, int):
        raise LlmoptError(f"--max-evaluations must be a whole number, got {max_evaluations!r}")
    if max_evaluations < 1:
        raise LlmoptError(f"--max-evaluations must be at least 1, got {max_evaluations}")
    chosen = parse_methods(methods)
    if validation_rows is None:
        validation_rows = default_validation_rows(len(train))
    validation, calibration = split_validation(train, validation_rows)
    if sensitivity_rows is None:
        sensitivity_rows = min(SENSITIVITY_ROWS, validation_rows)
    if isinstance(sensitivity_rows, bool) or not isinstance(sensitivity_rows, int):
        raise LlmoptError(f"--sensitivity-rows must be a whole number, got {sensitivity_rows!r}")
    if not 1 <= sensitivity_rows <= validation_rows:
        raise LlmoptError(
            f"--sensitivity-rows {sensitivity_rows} must be between 1 and the "
            f"{validation_rows} validation rows (they are the last of them)"
        )
    if is_lm:
        from llmopt.lm.perplexity import check_seq_len

        seq_len = check_seq_len(loaded, seq_len)
    report = progress or (lambda _f, _m: None)
    report(0.0, "search: the base model on the validation rows")
    state: dict[str, Any] = {}

    def exit_rule(interval) -> bool:
        return accepts(interval, tolerance, relative=relative, baseline=state["baseline"],
                       metric=metric)  # fmt: skip

    s = _Searcher(loaded, calibration, validation, exit_rule=exit_rule,
                  max_evaluations=max_evaluations, store=store, origin=origin,
                  calibration_samples=calibration_samples, report=report,
                  should_stop=should_stop, batch_size=batch_size, seq_len=seq_len)  # fmt: skip
    state["baseline"] = s.baseline

    # phase 1: each method's uniform levels, bisected (most compression first)
    spaces = []
    for kind, method in chosen:
        levels = default_levels(kind, loaded.model)
        configs = [level_config(kind, method, lv, calibration_samples) for lv in levels]
        for config in configs:
            check_config(loaded, config)
        spaces.append((kind, method, levels, configs))
    boundaries = []  # (kind, method, levels, configs, first accepted index or len, {index: number})
    for kind, method, levels, configs in spaces:
        numbers: dict[int, int] = {}

        def build(i, kind=kind, method=method, levels=levels, configs=configs, numbers=numbers):
            numbers[i] = len(s.candidates)
            return configs[i], f"{method} {_level_text(kind, levels[i])}", None

        found = s.bisect(build, -1, len(levels), method, "uniform")
        first = len(levels)
        if found is not None:
            first = next(i for i, n in numbers.items() if n == found.number)
        boundaries.append((kind, method, levels, configs, first, numbers))

    # phase 2: from the most compressed rejected level, fall back the most sensitive layers;
    # the methods whose rejected level is smallest first, and none whose variants (all
    # between its rejected and accepted sizes) cannot beat an accepted candidate's size
    if per_layer:
        todo = [b for b in boundaries if b[4] > 0 and b[4] - 1 in b[5]]
        todo.sort(key=lambda b: s.candidates[b[5][b[4] - 1]].size_bytes)
        for kind, method, levels, _configs, first, numbers in todo:
            rejected = s.candidates[numbers[first - 1]]
            sizes_ok = [c.size_bytes for c in s.candidates if c.accepted]
            if objective == "size" and sizes_ok and min(sizes_ok) <= rejected.size_bytes:
                continue
            if s.left <= 0:
                break
            _fall_back(s, loaded, train, kind, method, levels, first, rejected.number,
                       sensitivity_rows, calibration_samples, state)  # fmt: skip

    key = (lambda c: c.size_bytes) if objective == "size" else (lambda c: c.latency_ms)
    accepted = [c for c in s.candidates if c.accepted]
    best = min(accepted, key=lambda c: (key(c), c.size_bytes, c.number), default=None)
    uniform = [c for c in accepted if c.family == "uniform"]
    uniform_best = min(uniform, key=lambda c: (c.size_bytes, c.number), default=None)
    result = SearchResult(
        tolerance=float(tolerance), relative=relative, objective=objective,
        allowed=allowed_loss(tolerance, relative=relative, baseline=state["baseline"],
                             metric=metric),
        baseline=state["baseline"], n_validation=len(validation), candidates=s.candidates,
        best=best, uniform_best=uniform_best, base_size_bytes=int(s.base_size["size_bytes"]),
        sensitivity_seconds=state.get("sensitivity_seconds", 0.0),
        sensitivities=state.get("sensitivities", []), metric=metric,
        windows=len(s.base.nll) if is_lm else 0,
    )  # fmt: skip
    result.seconds_to_pick = time.perf_counter() - started
    if best is not None and test is not None:
        report(0.96, "search: the pick on the test rows")
        if is_lm:
            _evaluate_lm_on_test(result, loaded, test, train, store, origin, seq_len, report)
        else:
            _evaluate_on_test(result, loaded, test, train, store, origin, batch_size)
    result.seconds = time.perf_counter() - started
    report(1.0, "search: done")
    return result


def _fall_back(s, loaded, train, kind, method, levels, first, parent, sensitivity_rows,
               calibration_samples, state) -> None:  # fmt: skip
    """Bisect the per-layer sequence between a method's rejected and accepted levels."""
    started = time.perf_counter()
    sequence, sens = fallback_sequence(loaded, train, kind, method, levels, first,
                                       validation_rows=sensitivity_rows,
                                       calibration_samples=calibration_samples,
                                       cancel=s.should_stop, seq_len=s.seq_len)  # fmt: skip
    state["sensitivity_seconds"] = state.get("sensitivity_seconds", 0.0) + (
        time.perf_counter() - started
    )
    state.setdefault("sensitivities", []).append(sens)

    def build(i):
        config, label = sequence[i]()
        return config, label, parent

    s.bisect(build, 0, len(sequence) - 1, method, "per-layer")


Step = Callable[[], tuple[Any, str]]  # builds one setting: (config, label)


def damage(sens, row) -> float:
    """How much one unit alone moves the model, to order units by: a classifier's mean KL
    divergence of the predicted probabilities (continuous, where the accuracy change on a few
    hundred rows is mostly 0 flips or a noisy gain), a causal LM's rise of NLL per token
    (a gain counts as 0)."""
    if "mean_kl" in row.extra and math.isfinite(row.extra["mean_kl"]):
        return max(float(row.extra["mean_kl"]), 0.0)
    return max(float(sens.loss(row)), 0.0)


def fallback_sequence(loaded, train, kind, method, levels, first, *, validation_rows,
                      calibration_samples=128, cancel=None, seq_len=None,
                      sens=None) -> tuple[list[Step], Any]:  # fmt: skip
    """Per-layer settings from the rejected level ``levels[first - 1]`` (index 0) to the
    accepted one ``levels[first]`` (or the dense model when none was; the last index), ordered
    from most to least compression; each item builds its (config, label).

    Each matrix is measured alone at the rejected level (``llmopt.sensitivity`` on the last
    ``validation_rows`` rows of ``train``; ``damage`` orders them). Pruning and low rank: the k
    most damaging matrices fall back, k = 0..all. Quantization: the knapsack allocation
    (``llmopt.allocation``) over every bit-width from the rejected level up, at average budgets
    rising from the rejected to the accepted level in ``BUDGET_STEP`` steps; a matrix's loss at
    b bits is its measured damage scaled by ``NOISE_PER_BIT ** (rejected - b)`` (a b-bit grid's
    error variance), so the most damaging matrices can take 6 or 8 bits while the rest stay at
    the rejected level.

    Args:
        sens: the ``SensitivityResult`` of this method at the rejected level, if measured
            already (then nothing is measured).

    Returns:
        (the steps, the ``SensitivityResult`` that ordered them).
    """
    from dataclasses import replace

    from llmopt.sensitivity import level_config, sensitivity

    low = levels[first - 1]
    high = levels[first] if first < len(levels) else None
    if sens is None:
        sens = sensitivity(
            loaded, train, kind=kind, method=method, levels=[low], granularity="matrix",
            validation_rows=validation_rows, calibration_samples=calibration_samples,
            fisher_rows=FISHER_ROWS, cancel=cancel, seq_len=seq_len,
        )  # fmt: skip
    base = level_config(kind, method, low, calibration_samples)
    hurt = {r.name: damage(sens, r) for r in sens.layers if r.level == low}
    if kind == "quantize" and high is not None:
        from llmopt.allocation import allocate_bits, matrix_sizes

        offered = sorted(b for b in levels if b >= low)
        sizes = matrix_sizes(loaded.model, list(hurt))
        total = sum(sizes.values())
        top = max(offered)
        # among equal losses the budget goes to more bits: without the tiny tie-break, matrices
        # that tie at 0 all got the fewest bits at every budget
        losses = {
            n: {
                b: hurt[n] * NOISE_PER_BIT ** (low - b) + TIE_BREAK * (top - b) * sizes[n] / total
                for b in offered
            }
            for n in hurt
        }
        steps = max(1, round((high - low) / BUDGET_STEP))
        budgets = [low + (high - low) * i / steps for i in range(steps + 1)]

        def by_budget(budget: float) -> tuple[Any, str]:
            alloc = allocate_bits(losses, sizes, budget)
            rules = {n: {"bits": b} for n, b in alloc.bits.items() if b != low}
            label = f"{method} {alloc.average_bits:.2f} average bits (knapsack, {budget:g})"
            return replace(base, layers=rules), label

        return [partial(by_budget, b) for b in budgets], sens
    order = sorted(hurt, key=lambda n: (-hurt[n], n))  # most damaging first
    fallback = {"skip": True} if high is None else {_level_key(kind): high}
    where = "dense" if high is None else _level_text(kind, high)

    def by_count(k: int) -> tuple[Any, str]:
        rules = {n: dict(fallback) for n in order[:k]}
        return replace(
            base, layers=rules
        ), f"{method} {_level_text(kind, low)}, {k} most sensitive at {where}"

    return [partial(by_count, k) for k in range(len(order) + 1)], sens


def _evaluate_on_test(result, loaded, test, train, store, origin, batch_size) -> None:
    """The pick through the normal path on the test rows, recorded: calibrated on the whole
    training split as ``evaluate --recipe`` is, so that re-run gives identical numbers."""
    from llmopt.compression import compress, needs_calibration
    from llmopt.evaluation import evaluate

    config = result.best.config
    base = evaluate(loaded, test, batch_size=batch_size)
    made, creport = compress(
        loaded, config, calibration=train if needs_calibration(config) else None
    )
    compressed = cast(LoadedModel, made)  # a classifier in, a classifier out
    other = evaluate(compressed, test, batch_size=batch_size)
    result.test_baseline, result.test_compressed = base, other
    if store is not None:
        from llmopt.recording import record_evaluation

        result.run_id = record_evaluation(
            store, base_model=loaded, dataset=test, base=base, other=other, variant=compressed,
            config=config, report=creport, origin=origin,
            name=f"search pick: {result.best.label}",
        ).run_id  # fmt: skip


def _evaluate_lm_on_test(result, lm, test, train, store, origin, seq_len, progress) -> None:
    """A causal LM's pick on the test texts as ``evaluate --task perplexity --recipe`` scores
    it (paper protocol, calibrated on the whole training split, fidelity beside it): the test
    objects are that command's ``LM`` objects, and the run is recorded as it records it."""
    from llmopt.compression import compress, needs_calibration
    from llmopt.lm import compare_lms
    from llmopt.lm.load import lm_size
    from llmopt.recording import lm_statistics

    config = result.best.config
    made, creport = compress(
        lm, config, calibration=train if needs_calibration(config) else None, seq_len=seq_len
    )
    base, other, fidelity = compare_lms(
        lm, cast("LoadedLM", made), test.texts, protocol="paper", seq_len=seq_len, progress=progress
    )
    base_size, other_size = lm_size(lm), lm_size(made)
    computed = lm_statistics(base, other, fidelity)
    result.test_baseline = lm_side(base, base_size, computed["baseline_intervals"])
    result.test_compressed = lm_side(other, other_size, computed["intervals"])
    if store is not None:
        from llmopt.recording import record_lm_evaluation

        result.run_id = record_lm_evaluation(
            store, lm=lm, dataset=test, base=base, base_size=base_size, other=other,
            other_size=other_size, fidelity=fidelity, config=config, report=creport,
            origin=origin, name=f"search pick: {result.best.label}", computed=computed,
        ).run_id  # fmt: skip


def lm_side(result, size: dict, intervals: dict) -> dict:
    """One ``LM`` object of ``evaluate --task perplexity --json``: the result with its
    perplexity interval, and its size fields."""
    return {**result.to_dict(tuple(intervals["perplexity"])), **size}
