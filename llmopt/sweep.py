"""Sweep one compression knob over values and methods; one evaluated row per point."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from llmopt import metrics, stats
from llmopt.compression import CompressionConfig, compress, registry
from llmopt.compression.calibrate import StatsCache
from llmopt.compression.engine import check_plan, identity_report
from llmopt.compression.registry import needs_calibration
from llmopt.compression.targets import get_weight as layer_weight
from llmopt.compression.targets import select_targets
from llmopt.data import TextDataset
from llmopt.errors import LlmoptError
from llmopt.evaluation import EvalResult, compare, evaluate
from llmopt.latency import paired_if_kernels_differ
from llmopt.loaded import LoadedModel, Progress

if TYPE_CHECKING:
    from llmopt.lm.load import LoadedLM

# The knobs a user can sweep, one per kind of compression. "field" is the CompressionConfig
# field the value goes into, "off" the value that leaves it uncompressed (the baseline), and
# "reverse" says that smaller values compress more (for plot axes). Each knob's methods come
# from the method registry (see ``knob_methods``), so a new method appears here by itself.
KNOBS: dict[str, dict] = {
    "sparsity": {
        "kind": "prune",
        "label": "Sparsity (fraction of weights set to zero)",
        "field": "sparsity",
        "values": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        "off": 0.0,
        "reverse": False,
        "help": "Unstructured pruning per layer: magnitude keeps the largest |W|, Wanda the "
        "largest |W|·‖X‖ measured on calibration texts, SparseGPT also updates the kept "
        "weights to rebuild each layer's output.",
    },
    "bits": {
        "kind": "quantize",
        "label": "Bits per weight",
        "field": "bits",
        "values": [8, 7, 6, 5, 4, 3, 2],
        "off": None,
        "reverse": True,
        "help": "Weight quantization, one scale per output channel or per group of input "
        "columns: round to nearest, or GPTQ's column-by-column error feedback (simulated: "
        "weights are quantized then dequantized).",
    },
    "rank": {
        "kind": "lowrank",
        "label": "Rank kept per layer",
        "field": "rank",
        "values": [256, 192, 128, 96, 64, 48, 32, 16, 8],
        "off": None,
        "reverse": True,
        "help": "Low rank: each weight W (out×in) becomes A (out×r) · B (r×in), from the SVD of "
        "W, or of W whitened by calibration activations (activation-aware).",
    },
    "smooth_alpha": {
        "kind": "kernel",
        "label": "SmoothQuant α (int8 kernels)",
        "field": "smooth_alpha",
        "values": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
        "off": None,
        "reverse": False,
        "help": "How much of each activation channel's range moves into the weights before the "
        "real int8 kernels (0 = none, 1 = all).",
    },
}
GROUPINGS = {"per-channel": None, "group 128": 128, "group 64": 64}  # quantization variants


def knob_methods(knob: str) -> dict[str, dict]:
    """{method label: the config fields it sets} of one knob, from the method registry."""
    spec = _knob(knob)
    kind = registry.KINDS[spec["kind"]]
    found: dict[str, dict] = {}
    if spec["kind"] == "quantize":  # every quantizer, per channel and per group
        for group_label, group in GROUPINGS.items():  # round to nearest keeps the plain names
            for name in registry.names("quantize"):
                label = group_label if name == kind.default else f"{name} {group_label}"
                found[label] = {kind.field: name, "group_size": group}
        return found
    for method in registry.methods(spec["kind"]).values():
        if method.sweep:
            found.update(method.sweep)
        elif kind.field is not None:
            found[method.name] = {kind.field: method.name}
    return found


class _Knobs(Mapping):
    """``SWEEP_KNOBS[knob]``: the knob's settings with its current ``"methods"`` (read from the
    registry on every access, so a method registered later is swept too)."""

    def __getitem__(self, knob: str) -> dict:
        return {**KNOBS[knob], "methods": knob_methods(knob)}

    def __iter__(self):
        return iter(KNOBS)

    def __len__(self) -> int:
        return len(KNOBS)


SWEEP_KNOBS = _Knobs()  # what a user can sweep (methods read from the registry)


# knob, method, value, the headline metrics (llmopt.metrics), then these; read at each use.
_MEASURED = [
    "agreement",
    "mean_kl",
    "size_bytes",
    "size_mb",
    "params_nonzero",
    "accuracy_low",  # the 95% bootstrap interval of accuracy, as the point's stored run has
    "accuracy_high",
    "latency_ms_per_sample",
    "latency_method",  # "same kernels" (the baseline's latency) or "paired" (timed together)
    "seconds",
]
COLUMNS = metrics.LiveList(lambda: ["knob", "method", "value", *_scores(), *_MEASURED])
MB = 1e6


def _scores() -> list[str]:
    """The metrics a sweep point records: accuracy, ROC AUC, F1 (macro), then other headlines."""
    first = [k for k in ("accuracy", "roc_auc", "f1_macro") if k in metrics.headline()]
    return [*first, *[k for k in metrics.headline() if k not in first]]


def sweep_needs_calibration(knob: str, methods: list[str]) -> bool:
    """Whether sweeping ``knob`` with ``methods`` needs calibration texts (the training split).

    Raises:
        LlmoptError: an unknown knob or method.
    """
    spec = _knob(knob)
    value = next(v for v in spec["values"] if not _is_off(knob, v))
    return any(
        needs_calibration(sweep_config(CompressionConfig(), knob, m, value)) for m in methods
    )


def _is_off(knob: str, value) -> bool:
    off = KNOBS[knob]["off"]
    return value is None if off is None else value is not None and float(value) == off


def sweep_config(base: CompressionConfig, knob: str, method: str, value) -> CompressionConfig:
    """``base`` with the knob set to ``value`` and the method's fields (unless value is 'off').

    Raises:
        LlmoptError: an unknown knob or method, or a value the config rejects.
    """
    spec = _knob(knob)
    methods = knob_methods(knob)
    if method not in methods:
        raise LlmoptError(
            f"method {method!r} does not apply to {knob}; choose from {', '.join(methods)}"
        )
    changes = {spec["field"]: _cast(knob, value)}
    if not _is_off(knob, value):
        changes.update(methods[method])
    try:
        return dataclasses.replace(base, **changes)
    except LlmoptError:
        raise
    except (ValueError, TypeError) as exc:
        raise LlmoptError(f"{knob}={value!r} with method {method!r}: {exc}") from None


def _knob(knob: str) -> dict:
    if knob not in KNOBS:
        raise LlmoptError(f"unknown sweep knob {knob!r}; choose from {', '.join(KNOBS)}")
    return KNOBS[knob]


def _cast(knob: str, value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return KNOBS[knob]["off"]
    return float(value) if knob in ("sparsity", "smooth_alpha") else int(value)


def max_rank(loaded: LoadedModel | LoadedLM) -> int:
    """The largest rank every compressible layer allows: the smallest min(out, in)."""
    model = loaded.model
    names = select_targets(model)
    if not names:
        raise LlmoptError(f"model {loaded.name!r} has no linear layers in its transformer blocks")
    return min(min(layer_weight(model.get_submodule(n)).shape) for n in names)


def knob_values(loaded: LoadedModel | LoadedLM, knob: str) -> tuple[list, list]:
    """(choices, defaults) for a knob's values; ranks are limited to what every layer allows.

    Raises:
        LlmoptError: an unknown knob, or a model without compressible layers (for ranks).
    """
    if knob not in KNOBS:
        raise LlmoptError(f"unknown knob {knob!r}; choose one of: {', '.join(KNOBS)}")
    spec = KNOBS[knob]
    if knob == "sparsity":
        return [round(0.05 * i, 2) for i in range(20)], list(spec["values"])
    if knob == "bits":
        return list(range(8, 1, -1)), list(spec["values"])
    if knob == "smooth_alpha":
        return [round(0.1 * i, 1) for i in range(11)], list(spec["values"])
    limit = max_rank(loaded)
    extra = {limit, limit // 2, limit // 4, limit // 8}
    choices = sorted(r for r in {*spec["values"], *extra} if 0 < r <= limit)[::-1]
    defaults = [r for r in spec["values"] if r <= limit] or choices[:4]
    return choices, defaults


def _check_points(
    loaded: LoadedModel | LoadedLM,
    configs: list[CompressionConfig],
    calibration: TextDataset | None,
) -> None:
    """Reject settings some layer cannot take, before any compression starts."""
    model = loaded.model
    for config in configs:
        check_plan(model, select_targets(model, config.include_head), config)
        if calibration is None and needs_calibration(config):
            names = ", ".join(m.label for m in registry.active(config) if m.needs_calibration)
            raise LlmoptError(
                f"{names} needs calibration texts: pass calibration= the training split, or "
                "sweep methods that need no data"
            )


def run_sweep(
    loaded: LoadedModel,
    dataset: TextDataset,
    knob: str,
    values: list,
    methods: list[str],
    *,
    base_result: EvalResult | None = None,
    calibration: TextDataset | None = None,
    base_config: CompressionConfig | None = None,
    progress: Progress | None = None,
    on_point: Callable[..., None] | None = None,
) -> pd.DataFrame:
    """Compress and evaluate ``loaded`` at every (method, value) of one knob.

    Args:
        loaded: the uncompressed model (never modified).
        dataset: the rows every point, and the baseline, is evaluated on.
        knob: a key of ``SWEEP_KNOBS`` ("sparsity", "bits", "rank", "smooth_alpha").
        values: the knob's values; the 'off' value (0 sparsity, bits/rank None) is the
            baseline configuration: its row is the baseline's evaluation (not run again).
        methods: names from ``knob_methods(knob)``.
        base_result: the baseline's evaluation on ``dataset`` if already known.
        calibration: texts for methods that need activations (Wanda, SparseGPT, GPTQ, …);
            they are tokenized once per sweep, and statistics of the uncompressed model are
            measured once per layer and reused by every point.
        base_config: other settings kept fixed at every point (default: none).
        progress: called with (fraction of all points, message).
        on_point: called once per distinct point with (config, its EvalResult, its
            CompressionReport, its fidelity to the baseline, its paired latency or None),
            e.g. to record it.

    Returns:
        One row per (method, value) with columns ``COLUMNS``; ``df.attrs["baseline"]`` holds
        the baseline's headline metrics (accuracy, roc_auc, f1_macro), size and latency.
        Latency follows the one policy of the app (``paired_if_kernels_differ``): a point that
        runs the baseline's kernels on tensors of the same shapes has the baseline's latency; any
        other is timed together with the baseline, interleaved, and has its paired median.

    Raises:
        LlmoptError: an unknown knob/method, no values, or a setting some layer cannot take
            (checked before any work).
    """

    spec = _knob(knob)
    points = _points(loaded, dataset, knob, values, methods, base_config, calibration)

    unique = {_key(c): c for _, _, c in points}
    steps = len(unique) + (base_result is None)
    done = 0

    def report(step_fraction: float, message: str) -> None:
        if progress:
            progress(min((done + step_fraction) / steps, 1.0), message)

    if base_result is None:
        base_result = evaluate(loaded, dataset, progress=lambda f, _: report(f, "baseline"))
        done += 1
    measured: dict[str, dict] = {}
    cache = StatsCache()  # what stays the same between points: measured once
    for key, config in unique.items():
        what = _describe(knob, config)
        start = time.perf_counter()
        latency = None  # paired timing, only where the kernels differ from the baseline's
        if config.is_identity:  # the baseline itself: its evaluation is already known
            model, comp_report, result = None, identity_report(loaded, config), base_result
        else:
            model, comp_report = compress(
                loaded,
                config,
                calibration=calibration,
                progress=lambda f, _m, w=what: report(0.5 * f, f"compressing: {w}"),
                cache=cache,
            )
            result = evaluate(
                model, dataset, progress=lambda f, _m, w=what: report(0.5 + 0.5 * f, w)
            )
            latency = paired_if_kernels_differ(loaded, model, dataset.texts)
        fidelity = compare(base_result, result)
        if on_point is not None:
            on_point(config, result, comp_report, fidelity, latency)
        low, high = stats.bootstrap_intervals(result.y_true, result.y_score)["accuracy"]
        measured[key] = {
            **{k: result.metrics.get(k, math.nan) for k in _scores()},
            "accuracy_low": low,
            "accuracy_high": high,
            "agreement": fidelity["agreement"],
            "mean_kl": fidelity["mean_kl"],
            "size_bytes": int(result.size_bytes),
            "size_mb": result.size_bytes / MB,
            "params_nonzero": int(result.params_nonzero),
            "latency_ms_per_sample": (
                latency["compressed"].median_ms if latency else base_result.latency_ms_per_sample
            ),
            "latency_method": "paired" if latency else "same kernels",
            "seconds": time.perf_counter() - start,
        }
        del model
        done += 1
        report(0.0, f"done: {what}")
    rows = [
        {"knob": knob, "method": m, "value": getattr(c, spec["field"]), **measured[_key(c)]}
        for m, _, c in points
    ]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.attrs["knob"] = knob
    frame.attrs["baseline"] = {
        **{k: base_result.metrics.get(k, math.nan) for k in _scores()},
        "accuracy_interval": list(
            stats.bootstrap_intervals(base_result.y_true, base_result.y_score)["accuracy"]
        ),
        "agreement": 1.0,
        "size_bytes": int(base_result.size_bytes),
        "size_mb": base_result.size_bytes / MB,
        "latency_ms_per_sample": base_result.latency_ms_per_sample,
    }
    return frame


def _points(
    loaded: LoadedModel | LoadedLM,
    dataset: TextDataset,
    knob: str,
    values: list,
    methods: list[str],
    base_config: CompressionConfig | None,
    calibration: TextDataset | None,
) -> list[tuple[str, object, CompressionConfig]]:
    """(method, value, config) of every point, checked before any work (one code path for
    classifier and LM sweeps: configs come from ``sweep_config``)."""
    _knob(knob)
    if not values:
        raise LlmoptError(f"choose at least one {knob} value to sweep")
    if not methods:
        raise LlmoptError(f"choose at least one method: {', '.join(knob_methods(knob))}")
    if len(dataset) == 0:
        raise LlmoptError("the dataset has no rows to evaluate")
    base_config = base_config or CompressionConfig()
    points = [(m, v, sweep_config(base_config, knob, m, v)) for m in methods for v in values]
    _check_points(loaded, [c for _, _, c in points], calibration)
    return points


# The columns of a causal LM's sweep: the knob, then perplexity and bits per byte with their
# 95% bootstrap intervals (over windows or documents), fidelity and size.
LM_COLUMNS = [
    "knob",
    "method",
    "value",
    "perplexity",
    "perplexity_low",
    "perplexity_high",
    "bits_per_byte",
    "bits_per_byte_low",
    "bits_per_byte_high",
    "top1_agreement",
    "mean_kl",
    "size_bytes",
    "size_mb",
    "params_nonzero",
    "tokens_per_second",
    "seconds",
]
LM_SWEEP_METRICS = ("perplexity", "bits_per_byte")  # what an LM sweep can draw against the knob


def _lm_scores(result) -> dict:
    """Perplexity and bits per byte of one ``PerplexityResult`` with their 95% intervals."""
    from llmopt.lm.intervals import perplexity_interval

    out: dict[str, float] = {}
    for name in LM_SWEEP_METRICS:
        low, high = perplexity_interval(result, name)
        out.update({name: result.metric(name), f"{name}_low": low, f"{name}_high": high})
    return out


def run_lm_sweep(
    lm: LoadedLM,
    dataset: TextDataset,
    knob: str,
    values: list,
    methods: list[str],
    *,
    protocol: str = "paper",
    seq_len: int | None = None,
    base_result=None,
    calibration: TextDataset | None = None,
    base_config: CompressionConfig | None = None,
    progress: Progress | None = None,
    on_point: Callable[..., None] | None = None,
) -> pd.DataFrame:
    """Compress a causal LM at every (method, value) of one knob and score its perplexity.

    Each point is what ``compare_lms(lm, compress(lm, config, …), texts, protocol=…,
    seq_len=…)`` gives (the Compress page's and ``evaluate --task perplexity``'s numbers):
    the compressed model's perplexity and bits per byte on the same windows as the baseline,
    with 95% bootstrap intervals, and its next-token fidelity to the baseline.

    Args:
        lm: the uncompressed ``LoadedLM`` (never modified).
        dataset: the texts every point, and the baseline, is scored on.
        knob, values, methods: as ``run_sweep``.
        protocol: ``paper`` or ``document`` (see ``llmopt.lm.perplexity``).
        seq_len: window length (default: min(model limit, 1024)); also the calibration windows.
        base_result: the baseline's ``PerplexityResult`` on these texts, protocol and windows
            if already known.
        calibration: training texts for methods that measure activations.
        base_config: other settings kept fixed at every point.
        progress: called with (fraction of all points, message).
        on_point: called once per distinct compressed point with (config, its
            PerplexityResult, its CompressionReport, its FidelityResult, its size dict), e.g.
            to record it; the 'off' point is the baseline and is not called.

    Returns:
        One row per (method, value) with columns ``LM_COLUMNS``; ``df.attrs`` holds ``knob``,
        ``task`` ("perplexity"), ``protocol``, ``seq_len`` and ``baseline`` (perplexity, bits
        per byte, their intervals, size).

    Raises:
        LlmoptError: an unknown knob/method, no values, a setting some layer cannot take, or a
            calibrated method without texts (checked before any work); what ``perplexity``
            raises.
    """
    from llmopt.lm.fidelity import compare_lms
    from llmopt.lm.load import lm_size
    from llmopt.lm.perplexity import check_seq_len, perplexity

    spec = _knob(knob)
    points = _points(lm, dataset, knob, values, methods, base_config, calibration)
    seq_len = check_seq_len(lm, seq_len)
    unique = {_key(c): c for _, _, c in points}
    steps = len(unique) + (base_result is None)
    done = 0

    def report(step_fraction: float, message: str) -> None:
        if progress:
            progress(min((done + step_fraction) / steps, 1.0), message)

    if base_result is None:
        base_result = perplexity(
            lm, dataset.texts, protocol=protocol, seq_len=seq_len,
            progress=lambda f, _: report(f, "baseline"),
        )  # fmt: skip
        done += 1
    base_size = lm_size(lm)
    measured: dict[str, dict] = {}
    cache = StatsCache()
    for key, config in unique.items():
        what = _describe(knob, config)
        start = time.perf_counter()
        if config.is_identity:  # the baseline itself
            result, size, agreement, kl = base_result, base_size, 1.0, 0.0
        else:
            model, comp_report = compress(
                lm,
                config,
                calibration=calibration,
                progress=lambda f, _m, w=what: report(0.5 * f, f"compressing: {w}"),
                cache=cache,
                seq_len=seq_len,
            )
            _, result, fidelity = compare_lms(
                lm, model, dataset.texts, protocol=protocol, seq_len=seq_len,
                progress=lambda f, _m, w=what: report(0.5 + 0.5 * f, w),
            )  # fmt: skip
            size = lm_size(model)
            agreement, kl = fidelity.top1_agreement, fidelity.mean_kl
            if on_point is not None:
                on_point(config, result, comp_report, fidelity, size)
            del model
        measured[key] = {
            **_lm_scores(result),
            "top1_agreement": agreement,
            "mean_kl": kl,
            "size_bytes": int(size["size_bytes"]),
            "size_mb": size["size_bytes"] / MB,
            "params_nonzero": int(size["params_nonzero"]),
            "tokens_per_second": result.tokens_per_second,
            "seconds": time.perf_counter() - start,
        }
        done += 1
        report(0.0, f"done: {what}")
    rows = [
        {"knob": knob, "method": m, "value": getattr(c, spec["field"]), **measured[_key(c)]}
        for m, _, c in points
    ]
    frame = pd.DataFrame(rows, columns=LM_COLUMNS)
    base_scores = _lm_scores(base_result)
    frame.attrs.update(
        knob=knob,
        task="perplexity",
        protocol=base_result.protocol,
        seq_len=base_result.seq_len,
        baseline={
            **{k: base_scores[k] for k in LM_SWEEP_METRICS},
            **{
                f"{k}_interval": [base_scores[f"{k}_low"], base_scores[f"{k}_high"]]
                for k in LM_SWEEP_METRICS
            },
            "top1_agreement": 1.0,
            "size_bytes": int(base_size["size_bytes"]),
            "size_mb": base_size["size_bytes"] / MB,
        },
    )
    return frame


@dataclass(frozen=True)
class SweepEstimate:
    """How long a sweep will take, from one point per method timed now."""

    seconds: float  # the whole sweep: each method's timed point × its points
    per_method: dict[str, float]  # seconds one point of each method took
    points: int  # distinct points that compress and evaluate (the 'off' point is free)


def estimate_sweep(
    loaded: LoadedModel,
    dataset: TextDataset,
    knob: str,
    values: list,
    methods: list[str],
    *,
    base_result: EvalResult,
    calibration: TextDataset | None = None,
    base_config: CompressionConfig | None = None,
) -> SweepEstimate:
    """Time one point of each method (the value in the middle of ``values``), exactly as
    ``run_sweep`` runs it, and multiply by that method's number of points.

    It is an estimate: a point's time varies with the value (a rank, a bit-width) and with the
    machine's load; the first point also pays for the calibration statistics the rest reuse.

    Raises:
        LlmoptError: as ``run_sweep``.
    """
    spec = _knob(knob)
    base_config = base_config or CompressionConfig()
    per_method, total, points = {}, 0.0, 0
    for method in methods:
        configs = {}
        for value in values:
            config = sweep_config(base_config, knob, method, value)
            if not config.is_identity:  # the 'off' point is the baseline: nothing to run
                configs[_key(config)] = config
        if not configs:
            per_method[method] = 0.0
            continue
        middle = list(configs.values())[len(configs) // 2]
        timed = run_sweep(
            loaded, dataset, knob, [getattr(middle, spec["field"])], [method],
            base_result=base_result, calibration=calibration, base_config=base_config,
        )  # fmt: skip
        per_method[method] = float(timed["seconds"].iloc[0])
        total += per_method[method] * len(configs)
        points += len(configs)
    return SweepEstimate(seconds=total, per_method=per_method, points=points)


def duration(seconds: float) -> str:
    """'45 s', '6 min 30 s', '1 h 05 min': a time estimate in words."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _key(config: CompressionConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, default=str)


def _describe(knob: str, config: CompressionConfig) -> str:
    value = getattr(config, KNOBS[knob]["field"])
    return f"{knob} = {value}" if value is not None else f"{knob} off"


def pareto_front(df: pd.DataFrame, *, x: str = "size_bytes", y: str = "accuracy") -> np.ndarray:
    """Which points are not dominated: no other point is as small (``x``) and as good (``y``)
    with at least one of the two strictly better.

    Args:
        df: sweep rows (any frame with columns ``x`` and ``y``).
        x: the column to minimise.
        y: the column to maximise.

    Returns:
        A bool array, True on the frontier; rows with NaN in x or y are never on it.
    """
    return stats.pareto_mask(
        df[x].to_numpy(dtype=float), df[y].to_numpy(dtype=float), x_higher=False, y_higher=True
    )
