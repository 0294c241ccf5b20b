"""Benchmark non-uniform allocations against the uniform settings at the same average budget,
on the bundled model and bundled test reviews: sensitivity-allocated mixed precision at an
average of 3.5 bits vs uniform group-free 4-bit (RTN and GPTQ), and energy-allocated ranks vs
one uniform rank (the same factor weights).

Run: ``python bench/allocation.py [--limit 1000] [--bits 3.5] [--rank 128]``.
Every number is measured in this one run. The allocations measure on validation rows carved
from the end of the training split (and GPTQ calibrates on its first rows); the test rows are
only evaluated on.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import llmopt
from llmopt.compression import CompressionConfig
from llmopt.compression.engine import ALLOCATION_ROWS
from llmopt.loaded import dense_size_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

C = CompressionConfig


def settings(bits: float, rank: int) -> list[tuple[str, CompressionConfig]]:
    """(label, config) of each row: each allocation right after the uniform one it matches."""
    return [
        ("RTN 4-bit, uniform", C(bits=4)),
        (f"RTN {bits:g} avg bits, sensitivity", C(bits=bits, bits_allocation="sensitivity")),
        (f"rank {rank}, uniform", C(rank=rank)),
        (f"rank {rank}, energy", C(rank=rank, rank_allocation="energy")),
        ("GPTQ 4-bit, uniform", C(bits=4, quant_method="gptq")),
        (
            f"GPTQ {bits:g} avg bits, sensitivity",
            C(bits=bits, quant_method="gptq", bits_allocation="sensitivity"),
        ),
    ]


def average_bits(report) -> str:
    """The weight-weighted mean bits of the compressed matrices ('-' when not quantized)."""
    rows = [r for r in report.rows if r["bits"] is not None]
    if not rows:
        return "-"
    sizes = [r["shape"][0] * r["shape"][1] for r in rows]
    return f"{sum(s * r['bits'] for s, r in zip(sizes, rows, strict=True)) / sum(sizes):.3f}"


def spread(report, key: str) -> str:
    """How many matrices took each value of ``key`` (bits or rank), e.g. '2:3 3:20 4:10 8:3'."""
    counts: dict = {}
    for r in report.rows:
        counts[r[key]] = counts.get(r[key], 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
    return " ".join(f"{k}:{n}" for k, n in ordered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=1000, help="bundled test reviews to use")
    parser.add_argument("--bits", type=float, default=3.5, help="the allocated average bits")
    parser.add_argument("--rank", type=int, default=128, help="the rank both rank rows match")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    start = time.perf_counter()
    base_model = llmopt.load_model("bundled")
    test = llmopt.load_dataset("bundled", "test", limit=args.limit)
    train = llmopt.load_dataset("bundled", "train")
    base = llmopt.evaluate(base_model, test)
    print(f"# Allocation benchmark: {base_model.name}, {len(test)} bundled test reviews")
    print(describe())
    print(
        f"dense: accuracy {base.metrics['accuracy']:.4f}, {dense_size_bytes(base_model.model):,} "
        f"bytes; {len(train)} training rows (the bits allocation measures on the last "
        f"{ALLOCATION_ROWS}, GPTQ calibrates on the first 128)\n"
    )
    header = ["setting", "avg bits", "per matrix", "size (bytes)", "agreement", "mean KL",
              "accuracy", "compress (s)"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, config in settings(args.bits, args.rank):
        began = time.perf_counter()
        model, report = llmopt.compress(base_model, config, calibration=train)
        seconds = time.perf_counter() - began
        result = llmopt.evaluate(model, test)
        fid = llmopt.compare(base, result)
        key = "rank" if config.rank is not None else "bits"
        cells = [
            label,
            average_bits(report),
            spread(report, key),
            f"{model.size_bytes:,}",
            f"{fid['agreement']:.4f}",
            f"{fid['mean_kl']:.4f}",
            f"{result.metrics['accuracy']:.4f}",
            f"{seconds:.0f}",
        ]
        print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\n(total {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
