"""Benchmark the accuracy-aware search on the bundled model and reviews against an exhaustive grid
over the same space: the recipe found vs the best uniform setting, its loss on the test rows,
wall time and the number of evaluations.

Run: ``python bench/search.py [--tolerance 0.01] [--methods magnitude,rtn] [--validation-rows 256]
[--limit 1000] [--max-evaluations 24]``. The grid evaluates every uniform level of each method,
and every per-layer setting of the fallback sequence between the levels where the grid itself
finds the tolerance first met and first missed; the search bisects the same sequences.
"""

from __future__ import annotations

import argparse
import json
import time

import llmopt
from llmopt.compression import compress, needs_calibration
from llmopt.evaluation import evaluate
from llmopt.search import (
    accepts,
    default_levels,
    fallback_sequence,
    loss_interval,
    parse_methods,
    search,
)
from llmopt.sensitivity import level_config, split_validation


def grid(loaded, train, *, tolerance, relative, methods, validation_rows) -> dict:
    """Every setting of the space on the validation rows: the smallest accepted ones."""
    started = time.perf_counter()
    validation, calibration = split_validation(train, validation_rows)
    base = evaluate(loaded, validation)
    baseline = float(base.metrics["accuracy"])
    rows: list[dict] = []

    def run(config, label, family) -> bool:
        made, _ = compress(loaded, config, calibration=calibration if needs_calibration(config)
                           else None)  # fmt: skip
        other = evaluate(made, validation)
        loss, lo, hi = loss_interval(base.y_true, base.y_score, other.y_score)
        ok = accepts((lo, hi), tolerance, relative=relative, baseline=baseline)
        rows.append({"label": label, "family": family, "size_bytes": int(other.size_bytes),
                     "loss": loss, "interval": [lo, hi], "accepted": ok})  # fmt: skip
        return ok

    for kind, method in parse_methods(methods):
        levels = default_levels(kind, loaded.model)
        verdicts = [
            run(level_config(kind, method, lv), f"{method} {lv}", "uniform") for lv in levels
        ]
        first = next((i for i, ok in enumerate(verdicts) if ok), len(levels))
        if first == 0:
            continue
        steps, _sens = fallback_sequence(loaded, train, kind, method, levels, first,
                                         validation_rows=validation_rows)  # fmt: skip
        for step in steps[1:-1]:
            config, label = step()
            run(config, label, "per-layer")
    accepted = [r for r in rows if r["accepted"]]
    uniform = [r for r in accepted if r["family"] == "uniform"]
    return {
        "evaluations": len(rows),
        "seconds": time.perf_counter() - started,
        "best": min(accepted, key=lambda r: r["size_bytes"], default=None),
        "uniform_best": min(uniform, key=lambda r: r["size_bytes"], default=None),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--relative", action="store_true")
    p.add_argument("--methods", default="magnitude,rtn")
    p.add_argument("--validation-rows", type=int, default=256)
    p.add_argument("--limit", type=int, default=1000, help="test reviews the pick is scored on")
    p.add_argument("--max-evaluations", type=int, default=24)
    p.add_argument("--no-grid", action="store_true", help="only the search")
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args()
    loaded = llmopt.load_model("bundled")
    train = llmopt.load_dataset("bundled", "train")
    test = llmopt.load_dataset("bundled", "test", limit=args.limit)
    result = search(loaded, train, test, tolerance=args.tolerance, relative=args.relative,
                    methods=args.methods, max_evaluations=args.max_evaluations,
                    validation_rows=args.validation_rows)  # fmt: skip
    out = {"search": result.to_dict()}
    out["search"]["candidates"] = [c.to_dict() for c in result.candidates]
    out["search"]["sensitivity_seconds"] = result.sensitivity_seconds
    best, uniform = result.best, result.uniform_best
    print(f"search: {result.evaluations} evaluations in {result.seconds:.1f} s "
          f"(sensitivity {result.sensitivity_seconds:.1f} s)")  # fmt: skip
    for c in result.candidates:
        lo, hi = c.interval
        verdict = "ok" if c.accepted else "--"
        print(f"  {c.label:<55} {c.size_bytes / 1e6:8.2f} MB  loss {c.loss:+.4f} "
              f"[{lo:+.4f}, {hi:+.4f}] {verdict}")  # fmt: skip
    if best is not None:
        print(f"pick: {best.label} {best.size_bytes / 1e6:.2f} MB")
        b = result.test_baseline.metrics["accuracy"]
        o = result.test_compressed.metrics["accuracy"]
        print(f"test rows ({args.limit}): accuracy {o:.4f} vs base {b:.4f}: loss {b - o:+.4f} "
              f"(allowed {result.allowed:.4f})")  # fmt: skip
    if uniform is not None:
        print(f"best uniform: {uniform.label} {uniform.size_bytes / 1e6:.2f} MB")
    if not args.no_grid:
        g = grid(loaded, train, tolerance=args.tolerance, relative=args.relative,
                 methods=args.methods, validation_rows=args.validation_rows)  # fmt: skip
        out["grid"] = g
        print(f"grid: {g['evaluations']} evaluations in {g['seconds']:.1f} s; best "
              f"{g['best'] and g['best']['label']} "
              f"{g['best'] and g['best']['size_bytes'] / 1e6:.2f} MB; best uniform "
              f"{g['uniform_best'] and g['uniform_best']['label']}")  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2, default=float)


if __name__ == "__main__":
    main()
