"""Cost of recording a run in the experiment store, against the evaluation it records.

Usage: python bench/store.py [--rows 300] [--repeats 5] [--sparsity 0.5]

On the bundled model and the first ``--rows`` bundled test reviews: compress once (magnitude
pruning, so the run carries a pruning mask for every layer), then, interleaved ``--repeats``
times, evaluate the compressed model and store that evaluation. Prints the medians and their
ratio: the write (probabilities, masks, report; the rows' texts are stored once, by the first
write) and the whole record (bootstrap intervals, paired differences, McNemar, then the write).
The store lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import machine

import llmopt
from llmopt.compression import CompressionConfig, compress
from llmopt.experiments import ExperimentStore
from llmopt.recording import model_fingerprint, record_evaluation
from llmopt.recording import statistics as run_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args()
    print(machine.describe())

    loaded = llmopt.load_model("bundled")
    data = llmopt.load_dataset("bundled", "test", limit=args.rows)
    config = CompressionConfig(sparsity=args.sparsity)
    variant, report = compress(loaded, config)
    base = llmopt.evaluate(loaded, data)
    start = time.perf_counter()
    model_fingerprint(loaded)  # once per model and process
    fingerprint_s = time.perf_counter() - start
    store = ExperimentStore(Path(tempfile.mkdtemp(prefix="llmopt-bench-")) / "experiments.sqlite")
    kw = {"base_model": loaded, "dataset": data, "base": base}
    record_evaluation(store, **kw)  # the base run and the rows' texts, once

    evaluate_s, record_s, stats_s = [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        other = llmopt.evaluate(variant, data)
        evaluate_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        computed = run_stats(base, other)
        stats_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        record_evaluation(
            store,
            **kw,
            other=other,
            variant=variant,
            config=config,
            report=report,
            computed=computed,
        )
        record_s.append(time.perf_counter() - start)
    ev, rec, st = (statistics.median(x) for x in (evaluate_s, record_s, stats_s))
    masks = store.masks(store.runs()[-1].id)
    mask_mb = sum(len(m["bits"]) for m in masks.values()) / 1e6
    size_mb = store.path.stat().st_size / 1e6
    print(
        f"rows: {len(data)}, {len(masks)} pruned matrices ({mask_mb:.2f} MB of packed masks "
        f"per run), store file {size_mb:.1f} MB after {args.repeats + 1} runs"
    )
    print("| step | median seconds | share of the evaluation |")
    print("|---|---|---|")
    print(f"| evaluate the compressed model on {len(data)} rows | {ev:.3f} | 100% |")
    print(f"| store write (probabilities, masks, report) | {rec:.3f} | {100 * rec / ev:.1f}% |")
    print(f"| intervals, paired differences, McNemar | {st:.3f} | {100 * st / ev:.1f}% |")
    print(f"| whole record | {rec + st:.3f} | {100 * (rec + st) / ev:.1f}% |")
    print(f"model fingerprint (once per model and process): {fingerprint_s:.3f} s")
    print(machine.describe())


if __name__ == "__main__":
    main()
