"""``llmopt search``: the smallest (or fastest) compressed model whose loss on validation rows
(accuracy for a classifier, NLL per token for a causal LM) is, with 95% confidence, at most the
tolerance; then that recipe on the test rows."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from llmopt.cli.common import positive_int, seed, source_args
from llmopt.cli.lm import add_device_args
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
        "loss on validation rows (from the end of the training split) is within the "
        "tolerance: the upper end of its paired 95% interval must be. A classifier's loss is "
        "its accuracy drop; a causal LM's is the rise of its mean NLL per token (nats) on the "
        "paper protocol's windows of the validation texts, the interval resampling windows. "
        "The pick is then evaluated on the test rows (a causal LM: its perplexity, as "
        "evaluate --task perplexity does); every candidate is recorded with its parent.",
    )
    source_args(s)
    s.add_argument(
        "--tolerance", type=tolerance, required=True, metavar="T",
        help="allowed loss: accuracy for a classifier (0.01: one point), nats of mean NLL per "
        "token for a causal LM (0.01: perplexity x1.01); with --relative a share: of the "
        "baseline accuracy (0.01: keep 99%% of it), or of the perplexity (0.01: it rises by at "
        "most 1%%)",
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
        "--validation-rows", type=positive_int,
        help="rows (texts) from the end of the training split to decide on (default 1000, or "
        "half the split if fewer: the 95%% interval must be narrower than the tolerance)",
    )  # fmt: skip
    s.add_argument(
        "--sensitivity-rows", type=positive_int,
        help="the last of those rows that order the per-layer fallbacks (default 128)",
    )  # fmt: skip
    s.add_argument(
        "--seq-len", type=positive_int,
        help="causal LMs: window length in tokens (default: min(limit, 1024))",
    )  # fmt: skip
    add_device_args(s)
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

    is_lm = model_kind(args.model) == CAUSAL_LM
    if not is_lm:
        for flag, value in (("--seq-len", args.seq_len), ("--dtype", args.dtype),
                            ("--device", args.device)):  # fmt: skip
            if value is not None:
                raise LlmoptError(f"{flag} applies to causal LMs; drop it for a classifier")
    test = load_dataset(
        args.dataset, "test", text_column=args.text_column, label_column=args.label_column,
        limit=args.limit, seed=args.seed,
    )  # fmt: skip
    bar = Bar()
    if is_lm:
        from llmopt.cli.lm import load_lm

        loaded = load_lm(args)
    else:
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
        validation_rows=args.validation_rows, sensitivity_rows=args.sensitivity_rows,
        calibration_samples=args.calibration_samples, per_layer=not args.uniform_only,
        seq_len=args.seq_len, store=store, origin="cli", batch_size=args.batch_size,
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
    lm = result.metric == "nll"
    if lm:
        unit = "share of the perplexity" if result.relative else "nats per token"
        what = (
            f"{result.n_validation} texts ({result.windows} windows) from the end of the "
            f"training split; baseline NLL {result.baseline:.4f} nats per token (perplexity "
            f"{math.exp(result.baseline):.3f})"
        )
    else:
        unit = "share of the baseline" if result.relative else "accuracy"
        what = (
            f"{result.n_validation} rows from the end of the training split; baseline "
            f"accuracy {result.baseline:.4f}"
        )
    lines = [
        f"validation: {what}; allowed loss {result.allowed:.4f} "
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
    if result.test_compressed is not None and lm:
        b, o = result.test_baseline["perplexity"], result.test_compressed["perplexity"]
        lines.append(
            f"test texts: perplexity {o:.4f} (baseline {b:.4f}, {100 * (o / b - 1):+.2f}%; "
            f"NLL rise {math.log(o / b):+.4f} nats per token)"
        )
    elif result.test_compressed is not None:
        b = result.test_baseline.metrics["accuracy"]
        o = result.test_compressed.metrics["accuracy"]
        lines.append(
            f"test rows ({len(result.test_baseline.y_true)}): accuracy {o:.4f} "
            f"(baseline {b:.4f}, loss {b - o:+.4f})"
        )
    if result.run_id is not None:
        lines.append(f"recorded as run {result.run_id}; every candidate is in the store too")
    return "\n".join(lines)
