"""Throughput of llmopt.evaluate vs a plain fixed-padding loop on the same model and reviews.

Usage: python bench/eval_throughput.py [--rows 500] [--threads N] [--repeats 3]

Both sides run on the same rows with the same torch threads, end to end (tokenization
included). The reference pads every batch to the model's maximum length, as a typical
``tokenizer(..., padding="max_length")`` loop does; llmopt sorts by length and pads each batch
to its own longest text. Prints samples/s of both, the ratio, and whether predictions match.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import llmopt


@torch.no_grad()
def reference_predict(loaded, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """Batches in dataset order, each padded to the maximum length: the usual baseline."""
    preds = []
    for start in range(0, len(texts), batch_size):
        enc = loaded.tokenizer(
            texts[start : start + batch_size],
            padding="max_length",
            truncation=True,
            max_length=loaded.max_length,
            return_tensors="pt",
        )
        preds.append(loaded.model(**enc).logits.argmax(-1).numpy())
    return np.concatenate(preds)


def best_of_interleaved(repeats: int, fns: list):
    """Run each of ``fns`` in turn, ``repeats`` rounds; per fn (best wall seconds, result).

    Interleaving means a burst of load elsewhere on the machine hits both sides alike.
    """
    best = [float("inf")] * len(fns)
    outs = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            outs[i] = fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return list(zip(best, outs, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = llmopt.load_model("bundled")
    data = llmopt.load_dataset("bundled", "test", limit=args.rows)
    reference_predict(loaded, data.texts[:32])  # warm both paths up once
    llmopt.evaluate(loaded, data.subset(32))

    (t_ref, ref_pred), (t_llm, result) = best_of_interleaved(
        args.repeats,
        [lambda: reference_predict(loaded, data.texts), lambda: llmopt.evaluate(loaded, data)],
    )
    same = float((ref_pred == result.y_pred).mean())
    print(f"rows: {len(data)}, torch threads: {args.threads}, best of {args.repeats} runs")
    print("| path | seconds | samples/s |")
    print("|---|---|---|")
    print(
        f"| fixed padding to {loaded.max_length}, dataset order | {t_ref:.2f} | "
        f"{len(data) / t_ref:.1f} |"
    )
    print(
        f"| llmopt.evaluate (length-sorted, dynamic padding) | {t_llm:.2f} | "
        f"{len(data) / t_llm:.1f} |"
    )
    print(f"speed-up: {t_ref / t_llm:.2f}x; identical predictions: {same:.4f} of rows")


if __name__ == "__main__":
    main()
