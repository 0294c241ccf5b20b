"""Sensitivity of all 36 linear matrices of the bundled model at 3 levels of one method: wall
time on 2 threads against the 2-minute target, and what the suffix-only shortcut saves.

Run: ``python bench/auto.py [--quant-method rtn | --sparsity-method M | --lowrank-method M]
[--levels 8,4,3] [--validation-rows 256] [--threads 2] [--json PATH]``; ``--json`` writes
the result as ``llmopt sensitivity --json`` does (``bench/sensitivity_figure.py`` draws it).
Validation rows are the last rows of the bundled reviews' training split (the test split is
never read).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(__file__))

import machine  # noqa: E402

TARGET_S = 120.0  # issue 16: 36 matrices x 3 levels in at most 2 minutes on 2 cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quant-method")
    which.add_argument("--sparsity-method")
    which.add_argument("--lowrank-method")
    parser.add_argument("--levels", default=None, help="default: 8,4,3 | 0.3,0.5,0.7 | 256,128,64")
    parser.add_argument("--validation-rows", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the result as JSON to this path")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(args.threads)
    import llmopt
    from llmopt.data import load_dataset
    from llmopt.sensitivity import Validation, format_table, parse_levels, sensitivity
    from llmopt.sensitivity import split_validation as split
    from llmopt.sensitivity import units as all_units

    if args.sparsity_method:
        kind, method, default = "prune", args.sparsity_method, "0.3,0.5,0.7"
    elif args.lowrank_method:
        kind, method, default = "lowrank", args.lowrank_method, "256,128,64"
    else:
        kind, method, default = "quantize", args.quant_method or "rtn", "8,4,3"
    levels = parse_levels(kind, args.levels or default)
    print(machine.describe())
    print(f"torch threads: {torch.get_num_threads()}")
    loaded = llmopt.load_model("bundled")
    train = load_dataset("bundled", "train")
    units = all_units(loaded.model, "matrix")
    n_blocks = 1 + max(u.first_block for u in units)

    validation, _ = split(train, args.validation_rows)
    val = Validation(loaded, validation, None)
    start = time.perf_counter()
    val.score(loaded.model)
    full_s = time.perf_counter() - start  # one full forward over the validation rows

    shown = [-1]

    def report(fraction: float, message: str) -> None:  # a line per tenth, with its time
        if int(10 * fraction) > shown[0]:
            shown[0] = int(10 * fraction)
            print(f"{time.perf_counter() - start:7.1f} s  {message}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    result = sensitivity(
        loaded, train, kind=kind, method=method, levels=levels,
        validation_rows=args.validation_rows, progress=report,
    )  # fmt: skip
    print(format_table(result))
    blocks_run = sum(n_blocks - u.first_block for u in units) / (len(units) * n_blocks)
    n = len(result.layers)
    print()
    print(f"units: {len(units)} matrices x {len(levels)} levels = {n} measurements")
    print(f"validation rows: {result.n_validation}; one full forward over them: {full_s:.2f} s")
    print(
        f"suffix-only shortcut: {blocks_run:.0%} of the blocks run on average, so the "
        f"measurements cost ~{n * blocks_run * full_s:.0f} s of forward passes instead of "
        f"~{n * full_s:.0f} s"
    )
    print(
        f"sensitivity wall time: {result.seconds:.1f} s ({result.seconds / n:.2f} s per "
        f"measurement); target {TARGET_S:.0f} s: "
        f"{'met' if result.seconds <= TARGET_S else 'NOT met'} "
        f"({result.seconds / TARGET_S:.2f} x the target)"
    )
    print(machine.describe())
    if args.json:
        import json

        from llmopt import atomic

        atomic.write_text(args.json, json.dumps(result.to_dict(), indent=2))


if __name__ == "__main__":
    main()
