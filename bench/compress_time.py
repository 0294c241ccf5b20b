"""Compress time of every registered method at BERT-base size (random weights, ~110M parameters).

Run: ``python bench/compress_time.py [--samples 128]``. The model is a randomly initialised
``BertForSequenceClassification`` of bert-base's shape (12 blocks, hidden 768, FFN 3072); it
reads the bundled reviews through the bundled MiniLM tokenizer (the same 30522-word uncased
vocabulary), so calibrated methods see real token sequences. Times include calibration.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch

import llmopt
from llmopt.compression import CompressionConfig, compress, registry

C = CompressionConfig


def configs(samples: int) -> list[tuple[str, CompressionConfig]]:
    """One config per registered method (and 16-bit precision), at typical settings."""
    by_kind = {
        "prune": lambda m: C(sparsity=0.5, sparsity_method=m, calibration_samples=samples),
        "quantize": lambda m: C(bits=4, quant_method=m, calibration_samples=samples),
        "lowrank": lambda m: C(rank=256, lowrank_method=m, calibration_samples=samples),
    }
    out = [(f"{k} {m}", by_kind[k](m)) for k in by_kind for m in registry.names(k)]
    out += [
        ("kernel int8", C(int8_dynamic=True)),
        ("kernel smoothquant", C(int8_dynamic=True, smooth_alpha=0.5, calibration_samples=samples)),
        ("precision bf16", C(precision="bf16")),
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=CompressionConfig.calibration_samples)
    parser.add_argument("--only", help="comma-separated labels to run (default: all)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    bundled = llmopt.load_model("bundled")
    model = BertForSequenceClassification(BertConfig(num_labels=2, attn_implementation="eager"))
    base = llmopt.LoadedModel(
        model.eval(),
        bundled.tokenizer,
        "bert-base (random)",
        ["LABEL_0", "LABEL_1"],
        "random",
        max_length=128,
    )
    params = sum(p.numel() for p in model.parameters())
    train = llmopt.load_dataset("bundled", "train")
    print(
        f"# Compress time at BERT-base size: {params / 1e6:.0f}M parameters, "
        f"{args.samples} calibration reviews, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.2f}\n"
    )
    print("| method | config | compress (s) |\n|---|---|---|")
    wanted = set(args.only.split(",")) if args.only else None
    for label, config in configs(args.samples):
        if wanted and label not in wanted:
            continue
        start = time.perf_counter()
        compress(base, config, calibration=train)
        print(f"| {label} | {config.describe()} | {time.perf_counter() - start:.1f} |", flush=True)
    print(f"\n(load average at end {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
