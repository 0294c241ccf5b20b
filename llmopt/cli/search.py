"""``llmopt search``: the smallest (or fastest) compressed model whose accuracy loss on validation
rows is, with 95% confidence, at most the tolerance; then that recipe on the test rows."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from llmopt.cli.common import positive_int, seed, source_args
from llmopt.errors import LlmoptError


def tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def add_commands(sub) -> None:
    """Register ``search``."""
    s = sub.add_parser(
        "search",
        help="accuracy-aware search: the smallest model whose loss is within a tolerance",
        description="Search uniform settings of the given methods and per-layer variants that "
        "fall back the most sensitive layers first, for the smallest (or fastest) model whose "
        "accuracy loss on validation rows (from the end of the training split) is within the "
        "tolerance: the upper end of its paired 95% interval must be. The pick is then "
        "evaluated on the test rows; every candidate is recorded with its parent.",
    )
    source_args(s)
    s.add_argument(
        "--tolerance", type=tolerance, required=True, metavar="T",
        help="allowed accuracy loss (0.01: one point), or with --relative the allowed share "
        "of the baseline accuracy (0.01: keep 99%% of it)",
    )  # fmt: skip
    s.add_argument("--relative", action="store_true", help="the tolerance is relative")
    s.add_argument("--objective", choices=("size", "latency"), default="size")
    s.add_argument(
        "--methods", default="magnitude,rtn", metavar="M1,M2,…",
        help="methods searched, each alone (default magnitude,rtn)",
    )  # fmt: skip
    s.add_argument(
        "--max-evaluations", type=positive_int, default=24, metavar="K",
        help="candidates evaluated at most (default 24)",
    )  # fmt: skip
    s.add_argument(
        "--validation-rows", type=positive_int, default=256,
        help="rows from the end of the training split to decide on (default 256)",
    )  # fmt: skip
    s.add_argument(
        "--calibration-samples", type=positive_int, default=128,
        help="training texts calibrated methods read (default 128)",
    )  # fmt: skip
    s.add_argument("--uniform-only", action="store_true", help="no per-layer variants")
    s.add_argument("--limit", type=positive_int, help="evaluate the pick on N test rows")
    s.add_argument("--seed", type=seed, help="shuffle the test split with this seed before --limit")
    s.add_argument("--batch-size", type=positive_int, default=32)
    s.add_argument("--json", type=Path, help="write the result as JSON to this path")
    s.add_argument("--recipe-out", type=Path, help="write the recipe (a config JSON) here")
    s.add_argument("--no-record", action="store_true", help="do not record in the store")
    s.set_defaults(run=run_search)


def run_search(args) -> int:
    from llmopt import atomic
    from llmopt.cli.common import Bar, load, train_split
    from llmopt.paths import check_output
    from llmopt.search import parse_methods

    parse_methods(args.methods)  # bad methods fail before any loading
    outputs = [(p, f) for p, f in ((args.json, "--json"), (args.recipe_out, "--recipe-out")) if p]
    resolved = [check_output(p, flag=f) for p, f in outputs]
    if len(set(resolved)) != len(resolved):
        raise LlmoptError("--json and --recipe-out name the same file; choose two paths")
    from llmopt.data import load_dataset
    from llmopt.lm.load import CAUSAL_LM, model_kind
    from llmopt.search import search

    if model_kind(args.model) == CAUSAL_LM:
        raise LlmoptError(
            "search ranks classifiers by accuracy; for a causal LM use llmopt sensitivity "
            "and evaluate --layers"
        )
    test = load_dataset(
        args.dataset, "test", text_column=args.text_column, label_column=args.label_column,
        limit=args.limit, seed=args.seed,
    )  # fmt: skip
    bar = Bar()
    loaded = load(args, bar)
    store = None
    if not args.no_record:
        from llmopt.experiments import ExperimentStore

        store = ExperimentStore()
        if store.read_only:
            store = None
    result = search(
        loaded, train_split(args), test, tolerance=args.tolerance, relative=args.relative,
        objective=args.objective, methods=args.methods, max_evaluations=args.max_evaluations,
        validation_rows=args.validation_rows, calibration_samples=args.calibration_samples,
        per_layer=not args.uniform_only, store=store, origin="cli", batch_size=args.batch_size,
        progress=bar,
    )  # fmt: skip
    bar.close()
    print(format_result(result))
    if args.json is not None:
        atomic.write_text(args.json, json.dumps(result.to_dict(), indent=2))
    if args.recipe_out is not None and result.recipe is not None:
        atomic.write_text(args.recipe_out, json.dumps(result.recipe, indent=2))
    return 0


def format_result(result) -> str:
    """Every candidate, the pick, and the pick on the test rows, as plain text."""
    unit = "share of the baseline" if result.relative else "accuracy"
    lines = [
        f"validation: {result.n_validation} rows from the end of the training split; baseline "
        f"accuracy {result.baseline:.4f}; allowed loss {result.allowed:.4f} "
        f"(tolerance {result.tolerance:g}, {unit})",
        "",
        f"{'#':>3}  {'candidate':<52}{'size (MB)':>10}{'loss':>9}  {'95% interval':<18}  ok",
    ]
    for c in result.candidates:
        lo, hi = c.interval
        lines.append(
            f"{c.number:>3}  {c.label[:51]:<52}{c.size_bytes / 1e6:>10.3f}{c.loss:>+9.4f}  "
            f"[{lo:+.4f}, {hi:+.4f}]  {'yes' if c.accepted else 'no'}"
        )
    lines.append("")
    if result.best is None:
        lines.append(
            f"no candidate met the tolerance in {result.evaluations} evaluations: raise "
            "--tolerance or --max-evaluations, or add methods"
        )
        return "\n".join(lines)
    lines.append(f"pick: {result.best.label} ({result.best.size_bytes / 1e6:.3f} MB)")
    if result.uniform_best is not None:
        u = result.uniform_best
        lines.append(f"best uniform setting: {u.label} ({u.size_bytes / 1e6:.3f} MB)")
    if result.test_compressed is not None:
        b = result.test_baseline.metrics["accuracy"]
        o = result.test_compressed.metrics["accuracy"]
        lines.append(
            f"test rows ({len(result.test_baseline.y_true)}): accuracy {o:.4f} "
            f"(baseline {b:.4f}, loss {b - o:+.4f})"
        )
    if result.run_id is not None:
        lines.append(f"recorded as run {result.run_id}; every candidate is in the store too")
    return "\n".join(lines)
