"""Why sensitivity-allocated mixed precision does not beat uniform 4-bit on the bundled model:
the exact knapsack optimum's own predicted loss, beside the test-row agreement of each
allocation and of uniform 4-bit.

Each of the 36 matrices is quantized alone at 2, 3, 4, 5, 6 and 8 bits (``llmopt.sensitivity``,
on validation rows carved from the end of the training split); its mean KL from the dense
predictions is its loss at that width. The knapsack (``llmopt.allocation.allocate_bits``) then
gives the least total loss any allocation within each average budget can have — under the same
additive model, uniform 4-bit's predicted loss is the sum of the 4-bit losses. Each allocation
and uniform 4-bit are then evaluated on the bundled test reviews (never read before).

Run: ``python bench/mixed_precision.py [--method rtn] [--validation-rows 256]
[--budgets 3.5,3.75,4] [--limit 1000]``. Every number is measured in this one run.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import llmopt
from llmopt.allocation import allocate_bits, losses_from_sensitivity, matrix_sizes
from llmopt.compression import CompressionConfig
from llmopt.sensitivity import sensitivity

sys.path.insert(0, str(Path(__file__).resolve().parent))
from allocation import spread  # noqa: E402
from machine import describe  # noqa: E402

WIDTHS = [2, 3, 4, 5, 6, 8]  # every width the config allows a matrix, most compression first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="rtn", help="rtn or gptq (group-free, symmetric)")
    parser.add_argument("--validation-rows", type=int, default=256)
    parser.add_argument("--budgets", default="3.5,3.75,4", help="average bits to allocate")
    parser.add_argument("--limit", type=int, default=1000, help="bundled test reviews to use")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    budgets = [float(b) for b in args.budgets.split(",")]
    started = time.perf_counter()
    base_model = llmopt.load_model("bundled")
    train = llmopt.load_dataset("bundled", "train")
    test = llmopt.load_dataset("bundled", "test", limit=args.limit)
    print(f"# Mixed precision against uniform 4-bit: {base_model.name}, {args.method}")
    print(describe())
    sens = sensitivity(
        base_model, train, kind="quantize", method=args.method, levels=WIDTHS,
        validation_rows=args.validation_rows, fisher_rows=1,
    )  # fmt: skip
    losses = losses_from_sensitivity(sens, "kl")
    names = list(losses)
    sizes = matrix_sizes(base_model.model, names)
    by_width = {b: sum(losses[n][b] for n in names) for b in WIDTHS}
    at4 = np.array([losses[n][4] for n in names])
    top = names[int(at4.argmax())]
    print(
        f"sensitivity: {len(names)} matrices x {len(WIDTHS)} widths on {sens.n_validation} "
        f"validation rows in {sens.seconds:.0f} s"
    )
    print(
        "summed one-matrix KL, every matrix at the same width: "
        + ", ".join(f"{b} bits {v:.4f}" for b, v in by_width.items())
    )
    print(
        f"the 4-bit losses are spread out: the largest ({top}) is {at4.max() / at4.sum():.0%} "
        f"of their sum; 3 bits cost {by_width[3] / by_width[4]:.1f}x the 4-bit sum\n"
    )
    base = llmopt.evaluate(base_model, test)
    header = ["setting", "predicted loss", "bits per matrix", "size (bytes)", "agreement",
              "mean KL"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    rows = [("uniform 4-bit", by_width[4], CompressionConfig(bits=4, quant_method=args.method))]
    for budget in budgets:
        alloc = allocate_bits(losses, sizes, budget)
        layers = {n: {"bits": b} for n, b in alloc.bits.items()}
        config = CompressionConfig(bits=4, quant_method=args.method, layers=layers)
        rows.append((f"knapsack at {budget:g} avg bits", alloc.predicted_loss, config))
    for label, predicted, config in rows:
        model, report = llmopt.compress(base_model, config, calibration=train)
        fid = llmopt.compare(base, llmopt.evaluate(model, test))
        cells = [label, f"{predicted:.4f}", spread(report, "bits"), f"{model.size_bytes:,}",
                 f"{fid['agreement']:.4f}", f"{fid['mean_kl']:.4f}"]  # fmt: skip
        print("| " + " | ".join(cells) + " |", flush=True)
    print(
        f"\n(test: first {len(test)} bundled test reviews; total "
        f"{time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
