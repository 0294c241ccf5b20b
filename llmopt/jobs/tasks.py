"""One evaluation task: compress the shared base model with one recipe and evaluate it.

``evaluate_point`` is what every executor runs, in this process, in a pool worker or on a Ray
worker; it gets the shared inputs (the base model, the evaluated rows, calibration texts) that
were sent once per job, and returns the evaluation to the driver, which records it. It never
opens the experiment store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from typing import Any


def task_key(config: dict | None, model_fp: str, rows_fp: str) -> str:
    """The hash that names a task: its recipe (the acting config as a dict; None for the base
    model itself), the base model's fingerprint and the evaluated rows' fingerprint."""
    text = json.dumps([config, model_fp, rows_fp], sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with exactly ``threads`` intra-op threads (then restore the previous number): the
    same number everywhere makes fp32 results bit-identical between processes and hosts."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def evaluate_point(shared: dict, config: dict) -> dict:
    """Compress ``shared["loaded"]`` with ``config`` and evaluate it on ``shared["dataset"]``.

    Args:
        shared: {"loaded", "dataset", "calibration" (or None), "batch_size", "threads"}.
        config: a ``CompressionConfig.to_dict()``.

    Returns:
        {"result": EvalResult, "report": CompressionReport, "latency": paired latency where the
        kernels differ from the base model's, else None}.
    """
    from llmopt.compression import compress
    from llmopt.compression.config import CompressionConfig
    from llmopt.evaluation import evaluate
    from llmopt.latency import paired_if_kernels_differ

    recipe = CompressionConfig.from_dict(config)
    loaded, dataset = shared["loaded"], shared["dataset"]
    with torch_threads(shared["threads"]):
        model: Any  # a classifier here (compress also takes causal LMs)
        model, report = compress(loaded, recipe, calibration=shared["calibration"])
        result = evaluate(model, dataset, batch_size=shared["batch_size"])
        latency = paired_if_kernels_differ(loaded, model, dataset.texts)
    return {"result": result, "report": report, "latency": latency}
