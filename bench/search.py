"""Benchmark the accuracy-aware search on the bundled model and reviews against an exhaustive grid
over the same space: the recipe found vs the best uniform setting, its loss on the test rows,
wall time and the number of evaluations of both.

Run: ``python bench/search.py [--tolerance 0.01] [--relative] [--methods rtn]
[--validation-rows N] [--limit 1000] [--max-evaluations 24]``.

The space of a method: its uniform levels, and the per-layer sequence between the most
compressed level the tolerance rejects and the next one it accepts (for quantization, the
knapsack allocations at average budgets between the two). The grid evaluates every uniform level
of each method, then every setting of that sequence between the levels where the grid itself
first finds the tolerance met and missed; the search bisects the same sequences. The
sensitivity that orders a sequence is measured once and counted in both wall times (the grid
reuses the search's when its boundary is the same). The default methods are ``rtn`` alone: with
``magnitude`` the grid also walks magnitude's 37-step fallback sequence (~15 more minutes on two
cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import machine  # noqa: E402

import llmopt  # noqa: E402
from llmopt.compression import compress, needs_calibration  # noqa: E402
from llmopt.evaluation import evaluate  # noqa: E402
from llmopt.search import (  # noqa: E402
    accepts,
    default_levels,
    default_validation_rows,
    fallback_sequence,
    loss_interval,
    parse_methods,
    search,
)
from llmopt.sensitivity import level_config, split_validation  # noqa: E402


def grid(loaded, train, *, tolerance, relative, methods, validation_rows, sensitivity_rows,
         reuse) -> dict:  # fmt: skip
    """Every setting of the space on the validation rows: the smallest accepted ones.

    ``reuse``: {(method, rejected level): (SensitivityResult, its seconds)} from the search."""
    started = time.perf_counter()
    validation, calibration = split_validation(train, validation_rows)
    base = evaluate(loaded, validation)
    baseline = float(base.metrics["accuracy"])
    rows: list[dict] = []
    reused_s = 0.0

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
        sens, seconds = reuse.get((method, levels[first - 1]), (None, 0.0))
        reused_s += seconds
        steps, _sens = fallback_sequence(loaded, train, kind, method, levels, first,
                                         validation_rows=sensitivity_rows, sens=sens)  # fmt: skip
        for step in steps[1:-1]:
            config, label = step()
            run(config, label, "per-layer")
    accepted = [r for r in rows if r["accepted"]]
    uniform = [r for r in accepted if r["family"] == "uniform"]
    return {
        "evaluations": len(rows),
        "seconds": time.perf_counter() - started + reused_s,
        "sensitivity_reused_seconds": reused_s,
        "best": min(accepted, key=lambda r: r["size_bytes"], default=None),
        "uniform_best": min(uniform, key=lambda r: r["size_bytes"], default=None),
        "rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--relative", action="store_true")
    p.add_argument("--methods", default="rtn")
    p.add_argument("--validation-rows", type=int, help="default: the search's (1,000)")
    p.add_argument("--sensitivity-rows", type=int, default=128)
    p.add_argument("--limit", type=int, default=1000, help="test reviews the pick is scored on")
    p.add_argument("--max-evaluations", type=int, default=24)
    p.add_argument("--no-grid", action="store_true", help="only the search")
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args()
    print(machine.describe())
    loaded = llmopt.load_model("bundled")
    train = llmopt.load_dataset("bundled", "train")
    test = llmopt.load_dataset("bundled", "test", limit=args.limit)
    rows = args.validation_rows or default_validation_rows(len(train))
    result = search(loaded, train, test, tolerance=args.tolerance, relative=args.relative,
                    methods=args.methods, max_evaluations=args.max_evaluations,
                    validation_rows=rows, sensitivity_rows=args.sensitivity_rows)  # fmt: skip
    out = {"search": result.to_dict()}
    out["search"]["candidates"] = [c.to_dict() for c in result.candidates]
    out["search"]["sensitivity_seconds"] = result.sensitivity_seconds
    best, uniform = result.best, result.uniform_best
    print(f"validation: {result.n_validation} rows, baseline accuracy {result.baseline:.4f}, "
          f"allowed loss {result.allowed:.4f}")  # fmt: skip
    print(f"search: {result.evaluations} evaluations in {result.seconds_to_pick:.1f} s "
          f"(sensitivity {result.sensitivity_seconds:.1f} s of it); with the pick on the test "
          f"rows {result.seconds:.1f} s")  # fmt: skip
    for c in result.candidates:
        lo, hi = c.interval
        verdict = "ok" if c.accepted else "--"
        print(f"  {c.label:<48} {c.size_bytes / 1e6:7.2f} MB  loss {c.loss:+.4f} "
              f"[{lo:+.4f}, {hi:+.4f}] {verdict}")  # fmt: skip
    if best is not None:
        print(f"pick: {best.label} {best.size_bytes / 1e6:.2f} MB; validation loss "
              f"{best.loss:+.4f} [{best.interval[0]:+.4f}, {best.interval[1]:+.4f}]")  # fmt: skip
        b = result.test_baseline.metrics["accuracy"]
        o = result.test_compressed.metrics["accuracy"]
        where = "inside" if b - o <= result.allowed else "OUTSIDE"
        print(f"test rows ({args.limit}): accuracy {o:.4f} vs base {b:.4f}: loss {b - o:+.4f} "
              f"(allowed {result.allowed:.4f}: {where})")  # fmt: skip
    if uniform is not None:
        print(f"best uniform: {uniform.label} {uniform.size_bytes / 1e6:.2f} MB")
        if best is not None:
            print(f"pick vs best uniform: {best.size_bytes / uniform.size_bytes:.3f} of its size")
    if not args.no_grid:
        reuse = {}
        for sens in result.sensitivities:
            reuse[(sens.method, sens.levels[0])] = (sens, sens.seconds)
        g = grid(loaded, train, tolerance=args.tolerance, relative=args.relative,
                 methods=args.methods, validation_rows=rows,
                 sensitivity_rows=args.sensitivity_rows, reuse=reuse)  # fmt: skip
        out["grid"] = g
        gb, gu = g["best"], g["uniform_best"]
        shared = g["sensitivity_reused_seconds"]
        print(f"grid: {g['evaluations']} evaluations in {g['seconds']:.1f} s (sensitivity "
              f"{shared:.1f} s of it, shared with the search)")  # fmt: skip
        for r in g["rows"]:
            lo, hi = r["interval"]
            print(f"  {r['label']:<48} {r['size_bytes'] / 1e6:7.2f} MB  loss {r['loss']:+.4f} "
                  f"[{lo:+.4f}, {hi:+.4f}] {'ok' if r['accepted'] else '--'}")  # fmt: skip
        if gb is not None:
            print(f"grid best: {gb['label']} {gb['size_bytes'] / 1e6:.2f} MB")
        if gu is not None:
            print(f"grid best uniform: {gu['label']} {gu['size_bytes'] / 1e6:.2f} MB")
    print(machine.describe())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2, default=float)


if __name__ == "__main__":
    main()
