"""``llmopt evaluate`` and ``llmopt prepare``: evaluate a model (and a compressed copy of it)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from llmopt import atomic, metrics
from llmopt.cli import record
from llmopt.cli.common import Bar, load, positive_int, seed, source_args, train_split
from llmopt.cli.compression_flags import add_compression_args, config_from_args
from llmopt.cli.lm import add_lm_args, choose_task
from llmopt.errors import LlmoptError
from llmopt.paths import check_output, probe_folder

CONFUSION_NAME_CHARS = 12  # longer class names are numbered in the printed confusion matrix


def add_commands(sub) -> None:
    """Register ``evaluate`` and ``prepare``."""
    ev = sub.add_parser("evaluate", help="evaluate a model, and a compressed copy of it")
    source_args(ev)
    ev.add_argument("--split", choices=["train", "test"], help="default: test")
    ev.add_argument("--limit", type=positive_int, help="evaluate the first N rows of the split")
    ev.add_argument("--seed", type=seed, help="shuffle the split with this seed before --limit")
    ev.add_argument("--batch-size", type=positive_int, default=32)
    add_compression_args(ev)  # every compression flag; method choices from the registry
    add_lm_args(ev)  # --task, --protocol, --seq-len, --dtype, --device, --prompt, --verbalizer
    ev.add_argument(
        "--recover",
        choices=["head", "finetune"],
        help="win back accuracy after compressing: re-fit the head, or a short fine-tune that "
        "keeps masks, grids and factors (a causal LM: finetune, on the next-token NLL, in fp32; "
        "adds 'recovered' to the results; --save-model saves it)",
    )
    ev.add_argument("--json", type=Path, help="write the results as JSON to this path")
    ev.add_argument("--predictions", type=Path, help="write per-example predictions as CSV")
    ev.add_argument("--save-model", type=Path, help="save the compressed model to this folder")
    ev.add_argument(
        "--recipe",
        type=Path,
        help="a config JSON, or a whole run (runs export): its model, dataset, rows and config; "
        "flags given as well override it",
    )
    ev.add_argument(
        "--no-record", action="store_true", help="do not record this run in the experiment store"
    )
    ev.add_argument(
        "--overwrite",
        action="store_true",
        help="let --save-model replace a non-empty folder (never the model's own folder)",
    )

    ev.set_defaults(run=run_evaluate, model=None, dataset=None, text_column=None, label_column=None)

    pr = sub.add_parser("prepare", help="load (and train once, if needed) a model ahead of time")
    source_args(pr)
    pr.set_defaults(run=run_prepare)


def run_prepare(args) -> int:
    from llmopt.models import model_facts

    bar = Bar()
    loaded = load(args, bar)
    bar.close()
    facts = model_facts(loaded)
    print(
        f"ready: {facts['name']} ({facts['params_total']:,} parameters, "
        f"labels: {', '.join(facts['labels'])})"
    )
    return 0


def _config(args):
    return config_from_args(args, getattr(args, "recipe_config", None))


def run_evaluate(args) -> int:
    """``evaluate``: the task (``--task``, else the model kind's default) runs as the task
    registry (``llmopt.tasks``) says."""
    from llmopt.tasks import EVAL_TASKS

    recipe = record.apply_recipe(args)  # a recipe's model, rows and config; flags win
    task = choose_task(args)  # from the model's config and the registry's tasks
    return EVAL_TASKS[task].run(args, recipe)


def run_classify(args, recipe=None) -> int:
    """``evaluate --task classify``: a sequence classifier, and a compressed (and recovered)
    copy of it."""
    from llmopt.data import load_dataset  # deliberately lazy: data, evaluation and latency
    from llmopt.evaluation import compare, evaluate  # import pandas and torch, which the
    from llmopt.latency import paired_if_kernels_differ  # CLI's --help and errors never need

    config = _config(args)  # validate the knobs before any slow loading
    if args.save_model is not None and config is None:
        raise LlmoptError("--save-model saves a compressed model: add a compression flag")
    if args.save_model is not None and config.int8_dynamic:
        raise LlmoptError(
            "--int8-dynamic models cannot be saved as a checkpoint; use --bits 8 "
            "(simulated, saveable) or drop --save-model"
        )
    if args.overwrite and args.save_model is None:
        raise LlmoptError("--overwrite applies to --save-model; add --save-model DIR or drop it")
    if args.recover is not None and (config is None or config.int8_dynamic):
        raise LlmoptError(
            "--recover trains a compressed model: add --sparsity, --bits or --rank "
            "(int8 kernels cannot be trained)"
        )
    check_outputs(args)  # every output is checked before any work, so none fails at the end
    dataset = load_dataset(
        args.dataset,
        args.split,
        text_column=args.text_column,
        label_column=args.label_column,
        limit=args.limit,
        seed=args.seed,
    )
    record.check_recipe_rows(args, recipe, dataset)
    bar = Bar()
    loaded = load(args, bar)
    if config is not None:
        from llmopt.compression import check_config

        check_config(loaded, config)  # a rank or group size a layer cannot take: fail now
    base = evaluate(loaded, dataset, batch_size=args.batch_size, progress=bar)
    other = fidelity = report = compressed = latency = None
    recovered = run = None
    if config is not None:
        from llmopt.compression import compress, needs_calibration

        calibration = train_split(args) if needs_calibration(config) else None
        compressed, report = compress(loaded, config, calibration=calibration, progress=bar)
        other = evaluate(compressed, dataset, batch_size=args.batch_size, progress=bar)
        fidelity = compare(base, other)
        latency = paired_if_kernels_differ(loaded, compressed, dataset.texts)
        if args.recover is not None:  # training: see llmopt.training.finetune.recover
            from llmopt.training.finetune import recover

            run = recover(compressed, train_split(args), args.recover, progress=bar)
            recovered = evaluate(run.model, dataset, batch_size=args.batch_size, progress=bar)
            run.before, run.after = other, recovered  # on the evaluated rows, for the record
        if args.save_model is not None:  # the recovered model when there is one
            from llmopt.compression import save_model

            kept = compressed if run is None else run.model
            save_model(kept, args.save_model, overwrite=args.overwrite)
    bar.close()
    from llmopt.recording import statistics

    computed = statistics(base, other)
    simulated = other is not None and latency is None  # same kernels: the baseline's latency
    print(format_results(loaded.name, dataset, base, other, fidelity, report, latency, simulated))
    print("\n".join(record.note_lines(computed, latency, simulated)))
    run_id = record.record(
        args, loaded, dataset, config, base, compressed, other, report, latency, computed
    )
    if config is not None and recovered is not None:
        print(format_recovered(args.recover, base, other, recovered))
    recovered_id = None
    if run_id is not None and run is not None:
        recovered_id = record.record_trained(args, loaded, dataset, base, run, parent=run_id)
    if args.json is not None:
        payload = results_json(
            loaded, dataset, config, base, other, fidelity, report, dataset_source=args.dataset
        )
        payload["run_id"] = run_id
        if config is not None and recovered is not None:
            rec = compare(base, recovered)
            rec["flipped"] = [int(dataset.indices[i]) for i in rec["flipped"]]
            payload.update(recovered=recovered.to_dict(), recovered_fidelity=rec,
                           recover=args.recover, recovered_run_id=recovered_id)  # fmt: skip
        atomic.write_text(args.json, json.dumps(payload, indent=2))
    if args.predictions is not None:
        write_predictions(args.predictions, dataset, base, other)
    if args.save_model is not None:
        print(f"compressed model saved to {args.save_model}")
    return 0


def format_recovered(method: str, base, other, recovered) -> str:
    """Accuracy before and after recovery, and the share of the lost accuracy won back."""
    b, c, r = (x.metrics["accuracy"] for x in (base, other, recovered))
    lost = b - c
    won = f", {100 * (r - c) / lost:.0f}% of the lost accuracy won back" if lost > 0 else ""
    return (
        f"\nrecovered ({method}): accuracy {r:.4f} (compressed {c:.4f}, baseline {b:.4f}; "
        f"{100 * r / b:.1f}% of the baseline kept{won}), ROC-AUC "
        f"{_fmt(recovered.metrics['roc_auc'])}"
    )


def check_outputs(args) -> None:
    """Refuse, before any work, outputs that could not be written or would clobber an input.

    Raises:
        LlmoptError: an output whose folder is missing or read-only, that is a folder itself,
            that names the dataset file, or two outputs with the same path.
    """
    from llmopt.compression import check_save_target

    outputs = {"--json": args.json, "--predictions": args.predictions}
    seen: dict[Path, str] = {}
    dataset = Path(args.dataset).expanduser()
    if args.save_model is not None:
        seen[args.save_model.expanduser().resolve()] = "--save-model"
    for flag, path in outputs.items():
        if path is None:
            continue
        resolved = check_output(path, flag=flag)  # the one check of every output path
        if dataset.exists() and resolved == dataset.resolve():
            raise LlmoptError(f"{flag} {str(path)!r} is the dataset itself; choose another path")
        inside = [p for p in seen if resolved == p or resolved.is_relative_to(p)]
        if inside:
            what = "file" if resolved in seen and seen[resolved] != "--save-model" else "path"
            raise LlmoptError(f"{seen[inside[0]]} and {flag} name the same {what} {str(path)!r}")
        seen[resolved] = flag
    if args.save_model is not None:
        check_save_target(args.save_model, source=args.model, overwrite=args.overwrite)
        target = args.save_model.expanduser().resolve()
        folder = next(p for p in target.parents if p.is_dir())
        probe_folder(folder, what=f"--save-model {str(args.save_model)!r}")
        if dataset.exists() and dataset.resolve().is_relative_to(target):
            raise LlmoptError(
                f"--save-model {str(args.save_model)!r} holds the dataset {args.dataset!r}; "
                "saving there would destroy it — choose another folder"
            )


def results_json(loaded, dataset, config, base, other, fidelity, report, dataset_source=None):
    """The ``--json`` object of docs/design.md (keys are a contract).

    ``fidelity["flipped"]`` holds the same row indices as the predictions CSV's ``index``.
    """
    dataset_source = dataset_source or dataset.source
    if fidelity is not None:
        flipped = [int(dataset.indices[i]) for i in fidelity["flipped"]]
        fidelity = {**fidelity, "flipped": flipped}
    return {
        "model": loaded.source,
        "dataset": dataset_source,
        "split": dataset.split,
        "n": len(dataset),
        "label_names": list(base.label_names),
        "config": config.to_dict() if config is not None else None,
        "baseline": base.to_dict(),
        "compressed": other.to_dict() if other is not None else None,
        "fidelity": fidelity,
        "report": report.to_rows() if report is not None else None,
        "dropped_rows": {"count": len(dataset.dropped), "rows": list(dataset.dropped[:20])},
    }


def write_predictions(path: Path, dataset, base, other) -> None:
    """One CSV row per example: labels, predictions and probabilities of both models.

    Probabilities are written with every digit (``repr``), so metrics recomputed from the file
    equal the printed ones; label values are neutralised with ``safe_cell``. Written atomically.
    """
    from llmopt.data import safe_cell  # lazy: llmopt.data imports pandas

    names = [safe_cell(n) for n in base.label_names]
    header = ["index", "label", "pred_baseline", "pred_compressed"]
    header += [safe_cell(f"prob_baseline_{n}") for n in base.label_names]
    header += [safe_cell(f"prob_compressed_{n}") for n in base.label_names]
    with atomic.staged_file(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i in range(len(dataset)):
            row = [
                int(dataset.indices[i]),
                names[base.y_true[i]],
                names[base.y_pred[i]],
                names[other.y_pred[i]] if other is not None else "",
            ]
            row += [repr(float(p)) for p in base.y_score[i]]
            row += (
                [repr(float(p)) for p in other.y_score[i]]
                if other is not None
                else [""] * len(names)
            )
            writer.writerow(row)


def format_confusion(title: str, names: list[str], confusion) -> list[str]:
    """A confusion matrix as lines of text. Class names longer than ``CONFUSION_NAME_CHARS``
    would make every column that wide: then the columns are numbered, the rows show the
    number and the name cut with an ellipsis, and a legend below gives the full names."""
    lines = [f"confusion matrix, {title} (rows: true, columns: predicted)"]
    counts = [[int(v) for v in row] for row in confusion]
    digits = max((len(str(v)) for row in counts for v in row), default=1)
    if all(len(n) <= CONFUSION_NAME_CHARS for n in names):
        width = max(8, digits + 2, *(len(n) + 2 for n in names))
        lines.append(" " * width + "".join(f"{n:>{width}}" for n in names))
        for n, row in zip(names, counts, strict=True):
            lines.append(f"{n:<{width}}" + "".join(f"{v:>{width}}" for v in row))
        return lines
    keys = [f"[{i + 1}]" for i in range(len(names))]
    cut = [
        n if len(n) <= CONFUSION_NAME_CHARS else n[: CONFUSION_NAME_CHARS - 1] + "…" for n in names
    ]
    heads = [f"{k} {c}" for k, c in zip(keys, cut, strict=True)]
    first = max(len(h) for h in heads) + 2
    width = max(6, digits + 2, *(len(k) + 2 for k in keys))
    lines.append(" " * first + "".join(f"{k:>{width}}" for k in keys))
    for head, row in zip(heads, counts, strict=True):
        lines.append(f"{head:<{first}}" + "".join(f"{v:>{width}}" for v in row))
    lines.append("classes:")
    lines += [f"  {k} {n}" for k, n in zip(keys, names, strict=True)]
    return lines


def _fmt(x, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_results(
    name, dataset, base, other=None, fidelity=None, report=None, latency=None, same=False
) -> str:
    """The human-readable summary printed by ``evaluate``.

    Latency follows the app's one policy: with ``latency`` (a paired timing, because the
    kernels differ) both models' paired medians; with ``same`` (the compressed model runs the
    baseline's kernels) the baseline's latency for both, since a second single pass would only
    show noise; else each model's own measurement.
    """
    base_ms = base.latency_ms_per_sample
    other_ms = None if other is None else base_ms if same else other.latency_ms_per_sample
    if latency:
        base_ms, other_ms = latency["baseline"].median_ms, latency["compressed"].median_ms
    lines = [
        f"model:   {name}",
        f"dataset: {dataset.name} ({dataset.split} split, "
        f"{len(dataset)} rows; labels: {', '.join(base.label_names)})",
        "",
    ]
    cols = ["baseline"] + (["compressed", "delta"] if other is not None else [])
    lines.append(f"{'':<24}" + "".join(f"{c:>14}" for c in cols))
    rows = [
        (k, base.metrics.get(k, math.nan), other.metrics.get(k, math.nan) if other else None)
        for k in metrics.keys()
    ]
    rows += [
        ("size (MB)", base.size_bytes / 1e6, other.size_bytes / 1e6 if other else None),
        ("parameters", base.params_total, other.params_total if other else None),
        ("non-zero parameters", base.params_nonzero, other.params_nonzero if other else None),
        ("latency (ms/sample)", base_ms, other_ms),
    ]
    for label, b, o in rows:
        digits = 0 if label.endswith("parameters") else 2 if "(" in label else 4
        cells = [_fmt(b, digits)]
        if other is not None:
            delta = None if b is None or o is None else o - b
            cells += [_fmt(o, digits), ("+" if delta and delta > 0 else "") + _fmt(delta, digits)]
        lines.append(f"{label:<24}" + "".join(f"{c:>14}" for c in cells))
    for title, res in [("baseline", base)] + ([("compressed", other)] if other else []):
        lines += ["", *format_confusion(title, res.label_names, res.confusion)]
    if fidelity is not None:
        lines += [
            "",
            f"fidelity: agreement {fidelity['agreement']:.4f}, mean KL(base||compressed)"
            f" {fidelity['mean_kl']:.5f} nats, {len(fidelity['flipped'])} flipped",
        ]
    if report is not None:
        totals = report.totals
        lines.append(
            f"compressed layers: {len(report.rows)}, mean rel. error "
            f"{_fmt(totals.get('mean_rel_error'))}"
        )
        lines += [f"note: {a}" for a in getattr(report, "assumptions", [])]
    if base.n_truncated:
        lines += [
            "",
            f"note: {base.n_truncated} of {len(dataset)} texts were longer than the "
            "model's maximum length and were truncated",
        ]
    if dataset.dropped_note():
        lines.append(f"note: {dataset.dropped_note()}")
    lines += [f"note: {n}" for n in base.notes]
    lines.append(
        "note: latency is measured model time per sample on this machine, tokenization excluded"
    )
    return "\n".join(lines)
