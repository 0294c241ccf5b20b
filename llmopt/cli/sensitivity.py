"""``llmopt sensitivity``: compress each matrix, block or matrix type alone at a few levels of
one method and print how much the task's metric moves (validation rows from the training split)."""

from __future__ import annotations

import json
from pathlib import Path

from llmopt.cli.common import positive_int, source_args
from llmopt.errors import LlmoptError

FLAGS = {"sparsity_method": "prune", "quant_method": "quantize", "lowrank_method": "lowrank"}


def add_commands(sub) -> None:
    """Register ``sensitivity``."""
    from llmopt.cli.lm import add_device_args

    s = sub.add_parser(
        "sensitivity",
        help="per-layer sensitivity: compress each layer alone and measure the metric change",
        description="Compress each unit (matrix, block or matrix type) alone at each level of one "
        "method and measure the change of accuracy (classifiers; with KL and agreement) or of "
        "the NLL per token (causal LMs) on validation rows carved from the training split, "
        "with its paired 95% interval and cheap proxies.",
    )
    source_args(s)
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--sparsity-method", metavar="M", help="a pruning method (levels: sparsity)")
    which.add_argument("--quant-method", metavar="M", help="a quantization method; levels: bits")
    which.add_argument("--lowrank-method", metavar="M", help="a low-rank method; levels: ranks")
    s.add_argument(
        "--levels", required=True, metavar="L1,L2,…", help="e.g. 0.3,0.5,0.7 | 8,4,3 | 64,16"
    )
    s.add_argument(
        "--granularity", choices=("matrix", "block", "type"), default="matrix",
        help="what is compressed alone: each matrix, each block, or each matrix type",
    )  # fmt: skip
    s.add_argument(
        "--validation-rows", type=positive_int, default=256,
        help="rows from the end of the training split to measure on (default 256)",
    )  # fmt: skip
    s.add_argument(
        "--calibration-samples", type=positive_int, default=128,
        help="training texts (LM: windows) calibrated methods read (default 128)",
    )  # fmt: skip
    s.add_argument("--seq-len", type=positive_int, help="causal LMs: window length")
    add_device_args(s)
    s.add_argument("--json", type=Path, help="write the result as JSON to this path")
    s.set_defaults(run=run_sensitivity)


def chosen_method(args) -> tuple[str, str]:
    """(kind, method) from whichever of the three method flags was given."""
    for flag, kind in FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            return kind, value
    raise LlmoptError("give one of --sparsity-method, --quant-method or --lowrank-method")


def run_sensitivity(args) -> int:
    from llmopt import atomic
    from llmopt.cli.common import Bar, load, train_split
    from llmopt.compression import registry
    from llmopt.lm.load import CAUSAL_LM, model_kind
    from llmopt.paths import check_output
    from llmopt.sensitivity import format_table, parse_levels, sensitivity

    kind, method = chosen_method(args)
    registry.get(kind, method)
    levels = parse_levels(kind, args.levels)
    if args.json is not None:
        check_output(args.json, flag="--json")
    bar = Bar()
    is_lm = model_kind(args.model) == CAUSAL_LM
    if is_lm:
        from llmopt.lm.load import load_causal_lm

        loaded = load_causal_lm(
            args.model, dtype=args.dtype or "auto", device=args.device or "auto"
        )
    else:
        if args.dtype is not None or args.device is not None or args.seq_len is not None:
            raise LlmoptError(
                "--dtype, --device and --seq-len apply to causal LMs; drop them for a classifier"
            )
        loaded = load(args, bar)
    train = train_split(args)
    result = sensitivity(
        loaded,
        train,
        kind=kind,
        method=method,
        levels=levels,
        granularity=args.granularity,
        validation_rows=args.validation_rows,
        calibration_samples=args.calibration_samples,
        seq_len=args.seq_len,
        progress=bar,
    )
    bar.close()
    print(format_table(result))
    if args.json is not None:
        atomic.write_text(args.json, json.dumps(result.to_dict(), indent=2))
    return 0
