"""From an evaluation to a stored run: fingerprints, intervals, significance, recipes.

``record_evaluation`` is what the CLI, the dashboard and sweeps call after evaluating: it makes
sure the base model's run on these rows exists (once per model and rows), then stores the
variant with its parent — the base run, or the stored variant it extends by one or more later
steps (low-rank → prune → quantize), so the lineage shows how each model was derived; which
steps a recipe runs and which run it extends are ``llmopt.lineage``'s to say.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llmopt import metrics, stats
from llmopt.data import TextDataset, safe_cell  # safe_cell: every export's CSV rule
from llmopt.errors import LlmoptError
from llmopt.evaluation import EvalResult, compare, roc_curves
from llmopt.experiments import ExperimentStore, RowSet, Run
from llmopt.latency import LatencyStats, paired_if_kernels_differ, same_kernels
from llmopt.lineage import (  # noqa: F401 - lineage lives there; these names stay importable here
    TRAINING,
    config_steps,
    describe_config,
    describe_training,
    infer_parent,
    is_ancestor,
)
from llmopt.loaded import LoadedModel

_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> hash


def model_fingerprint(loaded: LoadedModel) -> str:
    """A hash of every tensor of the model (names, shapes, types, values) and its labels.

    Computed once per model object (a MiniLM-sized model takes about a tenth of a second).
    """
    model = loaded.model
    if model in _FINGERPRINTS:
        return _FINGERPRINTS[model]
    h = hashlib.blake2b(digest_size=12)
    h.update("\x1f".join(getattr(loaded, "label_names", None) or []).encode())  # LMs: none
    for name, value in model.state_dict().items():
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        else:  # packed parameters of int8 kernels: their description
            h.update(repr(value).encode())
    digest = h.hexdigest()
    _FINGERPRINTS[model] = digest
    return digest


def versions() -> dict:
    """Versions of llmopt, Python and the libraries whose numbers a run depends on."""
    import sklearn
    import transformers

    import llmopt

    return {
        "llmopt": llmopt.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


def _metrics(result: EvalResult) -> dict:
    return {k: float(result.metrics.get(k, math.nan)) for k in metrics.keys()}


def _intervals(result: EvalResult) -> dict:
    return {k: list(v) for k, v in stats.bootstrap_intervals(result.y_true, result.y_score).items()}


def _kernels_changed(config: dict | None, report) -> bool:
    """Without the model at hand (sweep points): whether the report shows layers that run
    other kernels than the baseline's (factorised layers, int8 kernels)."""
    if config and config.get("int8_dynamic"):
        return True
    rows = report.rows if report is not None else []
    return any(r.get("rank") is not None and not r.get("dense_reconstruction") for r in rows)


def statistics(base: EvalResult, other: EvalResult | None = None) -> dict:
    """The intervals and tests a run records: each model's 95% bootstrap intervals and, with
    a variant, the paired intervals of its differences and the exact McNemar test."""
    if other is None:
        return {"baseline_intervals": _intervals(base)}
    # one set of bootstrap replicates gives all three (the rows are the same)
    own, theirs, deltas = stats.paired_intervals(base.y_true, base.y_score, other.y_score)
    test = stats.mcnemar_exact(base.y_pred == base.y_true, other.y_pred == other.y_true)
    return {
        "baseline_intervals": {k: list(v) for k, v in own.items()},
        "intervals": {k: list(v) for k, v in theirs.items()},
        "delta_intervals": {k: list(v) for k, v in deltas.items()},
        "mcnemar": test.to_dict(),
    }


@dataclass
class Recorded:
    """What ``record_evaluation`` stored."""

    base_id: int  # the base model's run on these rows
    run_id: int  # the variant's run (the base run when nothing was compressed)
    notice: str | None = None  # the store's notice (a file moved aside), to show the user


def _variant_fields(store, base_id, model_fp, rows_fp, config, parent, name, report) -> dict:
    """The fields every variant run has, classifier or LM: the recipe that acted (settings
    that did nothing are left at their defaults), its parent (inferred when not given), what
    it does, and the compression report."""
    config_dict = config.acting().to_dict() if hasattr(config, "acting") else config
    if parent is None:
        parent = infer_parent(store, base_id, model_fp, rows_fp, config_dict)
    return {
        "kind": "variant",
        "config": config_dict,
        "parent": parent,
        "name": name,
        "method": describe_config(config_dict),
        "steps": config_steps(config_dict),
        "report": report.to_dict() if report is not None else None,
        "mean_rel_error": report.totals.get("mean_rel_error") if report is not None else None,
    }


def record_evaluation(
    store: ExperimentStore,
    *,
    base_model: LoadedModel,
    dataset: TextDataset,
    base: EvalResult,
    other: EvalResult | None = None,
    variant: LoadedModel | None = None,
    config=None,
    report=None,
    latency: dict[str, LatencyStats] | None = None,
    origin: str = "api",
    model_source: str | None = None,
    dataset_source: str | None = None,
    rows: dict | None = None,
    parent: int | None = None,
    name: str = "",
    computed: dict | None = None,
    task: str = "classify",
    model_fp: str | None = None,
) -> Recorded:
    """Store an evaluation: the base model's run on these rows (once), and the variant's.

    Args:
        store: where to record.
        base_model: the uncompressed model (fingerprinted).
        dataset: the evaluated rows (their texts are stored once per fingerprint).
        base: the base model's evaluation on ``dataset``.
        other: the variant's evaluation on the same rows, if any.
        variant: the variant model (its pruning masks are stored; its kernels are compared
            with the base model's to tell a real latency change from a simulated one).
        config: the variant's ``CompressionConfig`` (or its dict).
        report: the variant's ``CompressionReport``.
        latency: ``paired_latency`` of {"baseline", "compressed"} measured together.
        origin: what is recording (cli, app, sweep, api, train).
        model_source: the model source as given; default ``base_model.source``.
        dataset_source: the dataset source as given; default ``dataset.source``.
        rows: how the rows were chosen: {"split", "limit", "seed", "text_column",
            "label_column"}.
        parent: the run the variant was derived from; default: inferred (``infer_parent``).
        name: a display name for the variant's run.
        computed: ``statistics(base, other)`` if already computed.
        task: the evaluation task (``llmopt.tasks``): ``classify``, or ``zero-shot`` for a
            causal LM scoring labels.
        model_fp: the base model's fingerprint when the weights alone do not say what
            classifies (zero-shot: the LM with its prompt and verbalizers).

    Returns:
        The ids stored.
    """
    model_fp = model_fp or model_fingerprint(base_model)
    rows_fp = dataset.fingerprint
    spec = {"split": dataset.split, "limit": None, "seed": None, **(rows or {})}
    common = {
        "model": model_source or base_model.source,
        "model_fingerprint": model_fp,
        "dataset": dataset_source or dataset.source,
        "rows_fingerprint": rows_fp,
        "n": len(dataset),
        "label_names": list(base.label_names),
        "origin": origin,
        "model_name": base_model.name,
        "dataset_name": dataset.name,
        "split": dataset.split,
        "rows": spec,
        "seed": spec.get("seed"),
        "versions": versions(),
        "task": task,
    }
    computed = computed or statistics(base, other)
    row_set = RowSet(dataset.texts, dataset.labels, dataset.indices, list(dataset.label_names))
    base_id = store.find_base(model_fp, rows_fp)
    if base_id is None:
        base_run = Run(
            **common,
            kind="base",
            metrics={"baseline": _metrics(base), "compressed": None},
            intervals=computed["baseline_intervals"],
            size_bytes=int(base.size_bytes),
            params_total=int(base.params_total),
            params_nonzero=int(base.params_nonzero),
            latency_ms=float(base.latency_ms_per_sample),
            latency={"method": "single pass", "ms_per_sample": base.latency_ms_per_sample},
            confusion_matrix=base.confusion.tolist(),
            notes=list(base.notes),
            n_truncated=int(base.n_truncated),
        )
        base_id = store.add(base_run, y_true=base.y_true, y_score=base.y_score, row_set=row_set)
    if other is None:
        return Recorded(base_id, base_id, store.notice)
    fields = _variant_fields(store, base_id, model_fp, rows_fp, config, parent, name, report)
    config_dict = fields["config"]
    fidelity = compare(base, other)
    run = Run(
        **common,
        **fields,
        metrics={"baseline": _metrics(base), "compressed": _metrics(other)},
        intervals=computed["intervals"],
        delta_intervals=computed["delta_intervals"],
        mcnemar=computed["mcnemar"],
        size_bytes=int(other.size_bytes),
        params_total=int(other.params_total),
        params_nonzero=int(other.params_nonzero),
        agreement=fidelity["agreement"],
        mean_kl=fidelity["mean_kl"],
        flipped=len(fidelity["flipped"]),
        fidelity=fidelity,
        confusion_matrix=other.confusion.tolist(),
        notes=list(other.notes),
        n_truncated=int(other.n_truncated),
        **_latency_fields(base, other, base_model, variant, config_dict, report, latency),
    )
    masks = (variant.compression or {}).get("masks") if variant is not None else None
    run_id = store.add(
        run, y_true=other.y_true, y_score=other.y_score, masks=masks, row_set=row_set
    )
    return Recorded(base_id, run_id, store.notice)


def _latency_fields(base, other, base_model, variant, config, report, latency) -> dict:
    """``latency_ms``, ``latency_simulated`` and the ``latency`` record of a variant."""
    if variant is not None:
        simulated = same_kernels(base_model, variant)
    else:
        simulated = not _kernels_changed(config, report)
    if simulated:
        ms = latency["baseline"].median_ms if latency else base.latency_ms_per_sample
        return {
            "latency_ms": float(ms),
            "latency_simulated": True,
            "latency": {
                "method": "simulated",
                "ms_per_sample": float(ms),
                "note": "the same kernels on tensors of the same shapes as the baseline: its "
                "latency is the baseline's",
            },
        }
    if latency:
        b, c = latency["baseline"], latency["compressed"]
        return {
            "latency_ms": c.median_ms,
            "latency": {
                "method": "paired",
                "baseline": b.to_dict(),
                "compressed": c.to_dict(),
                "ratio": c.median_ms / b.median_ms if b.median_ms else None,
            },
        }
    return {
        "latency_ms": float(other.latency_ms_per_sample),
        "latency": {"method": "single pass", "ms_per_sample": other.latency_ms_per_sample},
    }


def run_result(store: ExperimentStore, run: Run) -> EvalResult | None:
    """A stored run as an ``EvalResult`` (probabilities, predictions, ROC curves), redrawn
    from the store without running the model; None if its predictions were not kept."""
    stored = store.predictions(run.id)
    if stored is None:
        return None
    y_true, y_score = stored
    metrics = {k: (math.nan if v is None else v) for k, v in run.own_metrics.items()}
    return EvalResult(
        y_true=y_true,
        y_score=y_score,
        y_pred=y_score.argmax(1),
        label_names=list(run.label_names),
        metrics=metrics,
        confusion=np.asarray(run.confusion_matrix or _confusion(y_true, y_score), dtype=int),
        roc=roc_curves(y_true, y_score, run.label_names),
        latency_ms_per_sample=float(run.latency_ms or math.nan),
        size_bytes=int(run.size_bytes),
        params_total=int(run.params_total),
        params_nonzero=int(run.params_nonzero),
        n_truncated=int(run.n_truncated),
        name=run.label,
        notes=list(run.notes),
    )


def _confusion(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    k = y_score.shape[1]
    return np.bincount(y_true * k + y_score.argmax(1), minlength=k * k).reshape(k, k)


# ---------------------------------------------------------------------- recipes


@dataclass
class Recipe:
    """What ``evaluate --recipe FILE`` takes from a file: a config, and from a whole run also
    the model, the dataset and how its rows were chosen (None = not in the file)."""

    config: dict | None
    model: str | None = None
    dataset: str | None = None
    split: str | None = None
    limit: int | None = None
    seed: int | None = None
    text_column: str | None = None
    label_column: str | None = None
    rows_fingerprint: str | None = None  # to check the rows are the same ones
    model_fingerprint: str | None = None
    run_id: int | None = None


RECIPE_MAX = 1_000_000  # bytes; an exported run is a few kB
_RECIPE_TEXT = ("model", "dataset", "split")
_ROWS_TEXT = ("split", "text_column", "label_column")


def _check_recipe_types(path: Path, data: dict) -> None:
    """Each field of a whole-run recipe has the type a run writes, or a one-line error."""

    def bad(field: str, want: str, value) -> LlmoptError:
        got = type(value).__name__
        return LlmoptError(f"recipe file {str(path)!r}: {field} must be {want}, not {got}")

    for key in _RECIPE_TEXT:
        if data.get(key) is not None and not isinstance(data[key], str):
            raise bad(f'"{key}"', "text", data[key])
    rows = data.get("rows")
    if rows is not None and not isinstance(rows, dict):
        raise bad('"rows"', "an object", rows)
    for key in _ROWS_TEXT:
        if rows and rows.get(key) is not None and not isinstance(rows[key], str):
            raise bad(f'"rows.{key}"', "text", rows[key])
    numbers = [("n", data.get("n"))] + [
        (f"rows.{k}", (rows or {}).get(k)) for k in ("limit", "seed")
    ]
    for field, value in numbers:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise bad(f'"{field}"', "a whole number", value)
    for key in ("id",):
        if data.get(key) is not None and (
            isinstance(data[key], bool) or not isinstance(data[key], int)
        ):
            raise bad(f'"{key}"', "a whole number", data[key])


LAYERS_MAX = RECIPE_MAX  # bytes; a file of per-layer rules is smaller than a recipe


def load_layers(path: str | Path) -> dict:
    """Read a file of per-layer rules (``CompressionConfig.layers``): a JSON object — or YAML
    when the name ends in ``.yaml``/``.yml`` — ``{"PATTERN": {setting: value}}``. The values
    are checked when the config is built (``CompressionConfig``).

    Raises:
        LlmoptError: an unreadable or oversized file, not JSON/YAML, or not an object.
    """
    from llmopt.paths import read_file

    path = Path(path)
    raw = read_file(path, what="layers file", max_bytes=LAYERS_MAX)
    shown = repr(str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LlmoptError(f"layers file {shown} is not UTF-8 text") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:  # pragma: no cover - PyYAML comes with the dependencies
            raise LlmoptError(
                f"layers file {shown} is YAML, and PyYAML is not installed: give it as JSON"
            ) from None
        try:
            data = yaml.safe_load(text)
        except RecursionError:
            raise LlmoptError(f"layers file {shown} is nested too deeply") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise LlmoptError(f"layers file {shown} is not valid YAML ({problem}{where})") from None
    else:
        try:
            data = json.loads(text)
        except RecursionError:
            raise LlmoptError(f"layers file {shown} is nested too deeply") from None
        except json.JSONDecodeError as exc:
            raise LlmoptError(
                f"layers file {shown} is not valid JSON ({exc.msg}, line {exc.lineno}); "
                "YAML files must end in .yaml or .yml"
            ) from None
    if not isinstance(data, dict):
        raise LlmoptError(
            f'layers file {shown} must hold an object {{"PATTERN": {{"bits": 8, …}}}}, '
            f"not {type(data).__name__ if data is not None else 'nothing'}"
        )
    return data


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe: a config object (``CompressionConfig.to_dict()``), or a whole run (from
    ``llmopt runs export``, or the JSON that ``evaluate --json`` writes).

    Raises:
        LlmoptError: an unreadable file, not JSON, or a config with unknown or invalid values.
    """
    from llmopt.compression import CompressionConfig
    from llmopt.paths import read_file

    path = Path(path)
    # a regular file only (a FIFO would block, /dev/zero never ends), and no larger than a
    # recipe can reasonably be: a whole exported run is a few kilobytes
    raw = read_file(path, what="recipe file", max_bytes=RECIPE_MAX)
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise LlmoptError(f"recipe file {str(path)!r} is not UTF-8 text") from None
    except RecursionError:
        raise LlmoptError(
            f"recipe file {str(path)!r} is nested too deeply to be a recipe"
        ) from None
    except json.JSONDecodeError as exc:
        raise LlmoptError(
            f"recipe file {str(path)!r} is not valid JSON ({exc.msg}, line {exc.lineno})"
        ) from None
    if not isinstance(data, dict):
        raise LlmoptError(f"recipe file {str(path)!r} must hold a JSON object (a config or a run)")
    whole_run = "config" in data and ("model" in data or "rows_fingerprint" in data)
    config = data.get("config") if whole_run else data
    if isinstance(config, dict) and config.get(TRAINING):
        raise LlmoptError(
            f"recipe file {str(path)!r} is a training run ({describe_training(config[TRAINING])}): "
            "recipes re-run compression only; train again with llmopt finetune, distill or "
            "prune-gradual"
        )
    if config is not None:
        parsed = CompressionConfig.from_dict(config)  # unknown keys, bad values: LlmoptError
        config = None if parsed.is_identity else parsed.to_dict()
    if not whole_run:
        return Recipe(config=config)
    _check_recipe_types(path, data)
    rows = data.get("rows") or {}
    return Recipe(
        config=config,
        model=data.get("model"),
        dataset=data.get("dataset"),
        split=rows.get("split", data.get("split")),
        limit=rows.get("limit", data.get("n")) if rows else data.get("n"),
        seed=rows.get("seed"),
        text_column=rows.get("text_column"),
        label_column=rows.get("label_column"),
        rows_fingerprint=data.get("rows_fingerprint"),
        model_fingerprint=data.get("model_fingerprint"),
        run_id=data.get("id"),
    )


def predictions_frame(store: ExperimentStore, run: Run):
    """A run's per-example predictions as a table for CSV export: ``index`` (the row's number
    in its source), ``label``, ``pred``, ``prob_<label>…`` with every digit; label values that
    a spreadsheet would run as a formula are neutralised. None if none were stored."""
    import pandas as pd

    stored = store.predictions(run.id)
    if stored is None:
        return None
    y_true, y_score = stored
    rows = store.row_set(run.rows_fingerprint)
    names = [safe_cell(n) for n in run.label_names]
    frame = pd.DataFrame(
        {
            "index": rows.indices if rows is not None else np.arange(len(y_true)),
            "label": [names[t] for t in y_true],
            "pred": [names[p] for p in y_score.argmax(1)],
        }
    )
    for j, name in enumerate(run.label_names):
        frame[safe_cell(f"prob_{name}")] = [repr(float(p)) for p in y_score[:, j]]
    return frame


def record_training(
    store: ExperimentStore,
    run,
    *,
    base_model: LoadedModel,
    dataset: TextDataset,
    base: EvalResult,
    parent: int | None = None,
    origin: str = "api",
    model_source: str | None = None,
    dataset_source: str | None = None,
    rows: dict | None = None,
) -> Recorded:
    """Store a training run (``llmopt.training``'s ``TrainingRun``) as a variant of the model it
    started from, so the lineage reads base → compressed → recovered.

    Args:
        run: the training run; ``run.after`` is the trained model's evaluation on ``dataset``.
        base_model: the uncompressed model the chain starts from (for a distilled student, the
            teacher).
        base: ``base_model``'s evaluation on ``dataset``.
        parent: the run the training started from (e.g. the compressed run a recovery won
            back); default: the base model's run on these rows.
        Other arguments as ``record_evaluation``.

    Returns:
        The ids stored.
    """
    recipe = dict(run.recipe)
    compression = recipe.pop("compression", None) or {}
    config = {**compression, TRAINING: recipe}
    latency = paired_if_kernels_differ(base_model, run.model, dataset.texts)  # a smaller student
    return record_evaluation(
        store,
        base_model=base_model,
        dataset=dataset,
        base=base,
        other=run.after,
        variant=run.model,
        config=config,
        latency=latency,
        origin=origin,
        model_source=model_source,
        dataset_source=dataset_source,
        rows=rows,
        parent=parent,
    )


# ---------------------------------------------------------------------- causal LMs


def lm_rows_fingerprint(dataset: TextDataset, task: str, protocol: str, seq_len: int) -> str:
    """The rows fingerprint of a perplexity run: the texts *and* how they were scored, so runs
    of another task, protocol or window length (or a classifier's on the same rows) are never
    paired with it."""
    h = hashlib.sha256(f"{dataset.fingerprint}\x1f{task}\x1f{protocol}\x1f{seq_len}".encode())
    return h.hexdigest()[:16]


def zero_shot_fingerprint(lm, prompt: str, verbalizers: dict) -> str:
    """A zero-shot classifier is the LM with its prompt and verbalizers: two prompts on one LM
    are two classifiers, each with its own base run."""
    h = hashlib.blake2b(digest_size=12)
    h.update(model_fingerprint(lm).encode())
    h.update(json.dumps([prompt, verbalizers], sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def lm_metrics(result, fidelity=None) -> dict:
    """The registry's perplexity-task metrics of one side (a variant's adds its fidelity)."""
    out = {"perplexity": result.perplexity, "bits_per_byte": result.bits_per_byte}
    if result.protocol == "document":
        out.update(word_perplexity=result.word_perplexity, byte_perplexity=result.byte_perplexity)
    if fidelity is not None:
        out.update(top1_agreement=fidelity.top1_agreement, mean_kl=fidelity.mean_kl)
    return {k: float(v) for k, v in out.items()}


def lm_statistics(base, other=None, fidelity=None) -> dict:
    """Bootstrap intervals of each side's metrics (over windows or documents) and, with a
    variant, the paired intervals of its differences and of its fidelity."""
    from llmopt.lm.intervals import paired_interval, perplexity_interval

    keys = [k for k in lm_metrics(base) if k in metrics.keys(metrics.PERPLEXITY)]
    out = {"baseline_intervals": {k: list(perplexity_interval(base, k)) for k in keys}}
    if other is not None:
        out["intervals"] = {k: list(perplexity_interval(other, k)) for k in keys}
        deltas = {}
        for k in keys:
            try:
                deltas[k] = list(paired_interval(base, other, k))
            except LlmoptError:  # other windows (another tokenizer): no paired difference
                continue
        out["delta_intervals"] = deltas
        if fidelity is not None:
            for k in ("top1_agreement", "mean_kl"):
                out["intervals"][k] = list(fidelity.interval(k))
    return out


def record_lm_evaluation(
    store: ExperimentStore,
    *,
    lm,
    dataset: TextDataset,
    base,
    base_size: dict,
    other=None,
    other_size: dict | None = None,
    fidelity=None,
    config=None,
    report=None,
    origin: str = "api",
    model_source: str | None = None,
    dataset_source: str | None = None,
    rows: dict | None = None,
    parent: int | None = None,
    name: str = "",
    computed: dict | None = None,
) -> Recorded:
    """Store a perplexity evaluation of a causal LM: its base run on these texts, scored this
    way (once), and the compressed variant's with its fidelity.

    Args:
        lm: the uncompressed ``LoadedLM`` (fingerprinted).
        dataset: the rows whose texts were scored.
        base, other: ``PerplexityResult`` of the base and the compressed LM (same protocol).
        base_size, other_size: ``{"size_bytes", "params_total", "params_nonzero"}``.
        fidelity: ``compare_lms``'s ``FidelityResult`` of the two.
        computed: ``lm_statistics(base, other, fidelity)`` if already computed.
        Other arguments as ``record_evaluation``.

    Returns:
        The ids stored.
    """
    model_fp = model_fingerprint(lm)
    rows_fp = lm_rows_fingerprint(dataset, metrics.PERPLEXITY, base.protocol, base.seq_len)
    spec = {"split": dataset.split, "limit": None, "seed": None, **(rows or {})}
    spec.update(protocol=base.protocol, seq_len=base.seq_len)
    common = {
        "model": model_source or lm.source,
        "model_fingerprint": model_fp,
        "dataset": dataset_source or dataset.source,
        "rows_fingerprint": rows_fp,
        "n": len(dataset),
        "label_names": [],
        "origin": origin,
        "model_name": lm.name,
        "dataset_name": dataset.name,
        "split": dataset.split,
        "rows": spec,
        "seed": spec.get("seed"),
        "versions": versions(),
        "task": metrics.PERPLEXITY,
    }
    computed = computed or lm_statistics(base, other, fidelity)
    row_set = RowSet(dataset.texts, dataset.labels, dataset.indices, list(dataset.label_names))

    def speed(result) -> dict:
        return {"method": "tokens per second", "tokens": result.n_tokens,
                "tokens_per_second": result.tokens_per_second, "dtype": lm.dtype,
                "device": lm.device}  # fmt: skip

    base_id = store.find_base(model_fp, rows_fp)
    if base_id is None:
        base_run = Run(
            **common,
            kind="base",
            metrics={"baseline": lm_metrics(base), "compressed": None},
            intervals=computed["baseline_intervals"],
            latency=speed(base),
            notes=list(lm.notes),
            **base_size,
        )
        base_id = store.add(base_run, row_set=row_set)
    if other is None:
        return Recorded(base_id, base_id, store.notice)
    fid = None
    if fidelity is not None:
        fid = {**fidelity.to_dict(), "harder": [h.to_dict() for h in fidelity.harder]}
    run = Run(
        **common,
        **_variant_fields(store, base_id, model_fp, rows_fp, config, parent, name, report),
        metrics={"baseline": lm_metrics(base), "compressed": lm_metrics(other, fidelity)},
        intervals=computed["intervals"],
        delta_intervals=computed.get("delta_intervals"),
        agreement=fidelity.top1_agreement if fidelity is not None else None,
        mean_kl=fidelity.mean_kl if fidelity is not None else None,
        fidelity=fid,
        latency=speed(other),
        **(other_size or base_size),
    )
    return Recorded(base_id, store.add(run, row_set=row_set), store.notice)
