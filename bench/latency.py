"""Noise of the paired latency figure: the same model timed twice in one call, interleaved.

Usage: python bench/latency.py [--calls 5] [--repeats 5] [--texts 32]

``llmopt.latency.paired_latency`` times each batch with every model in turn and repeats the
pass; given the same model under two names, any difference between the two medians is
measurement noise. Prints, per call, both medians, their relative difference and each one's
spread (interquartile range of the passes / median), and the machine's load, which decides
how much noise there is.
"""

from __future__ import annotations

import argparse
import time

import machine

import llmopt
from llmopt.latency import paired_latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--texts", type=int, default=32)
    args = parser.parse_args()
    print(machine.describe())
    loaded = llmopt.load_model("bundled")
    texts = llmopt.load_dataset("bundled", "test", limit=args.texts).texts
    print(
        "| call | first ms/text | second ms/text | difference | spread first | spread second | "
        "call seconds |"
    )
    print("|---|---|---|---|---|---|---|")
    gaps = []
    for call in range(1, args.calls + 1):
        start = time.perf_counter()
        timed = paired_latency(
            {"first": loaded, "second": loaded}, texts, repeats=args.repeats, max_texts=args.texts
        )
        seconds = time.perf_counter() - start
        a, b = timed["first"], timed["second"]
        gap = abs(a.median_ms - b.median_ms) / min(a.median_ms, b.median_ms)
        gaps.append(gap)
        print(
            f"| {call} | {a.median_ms:.2f} | {b.median_ms:.2f} | {gap:.1%} | {a.spread:.1%} | "
            f"{b.spread:.1%} | {seconds:.1f} |"
        )
    print(f"largest difference between the two medians: {max(gaps):.1%} (target: <= 10% idle)")
    print(machine.describe())


if __name__ == "__main__":
    main()
