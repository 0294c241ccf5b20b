"""Paired latency: several models timed in one call on the same batches, interleaved, repeated.

Timing a baseline once and a variant minutes later compares two machine loads, not two models.
Here every batch is run by each model in turn (the order alternating from batch to batch), and
the whole pass is repeated, so a change of load hits all models alike; the result is each
model's median time per text and the spread of the repeats.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from llmopt.batching import accepts_token_types, encode, iter_batches
from llmopt.errors import LlmoptError
from llmopt.loaded import LoadedModel

REPEATS = 5  # passes per model: enough for a median and a spread, a few seconds on MiniLM
TEXTS = 32  # texts per pass: one batch of the evaluation's size, the rows' first texts
BATCH_SIZE = 32  # as evaluate's default, so the per-text figure is comparable


@dataclass(frozen=True)
class LatencyStats:
    """One model's time per text over the repeated passes of ``paired_latency``."""

    median_ms: float  # per text, median of the passes
    spread: float  # (75th − 25th percentile) / median of the passes: 0.05 = ±2.5 %
    samples_ms: tuple[float, ...]  # per text, one per pass, in order
    texts: int  # texts per pass

    def to_dict(self) -> dict:
        return {**asdict(self), "samples_ms": list(self.samples_ms)}


def same_kernels(a: LoadedModel, b: LoadedModel) -> bool:
    """Whether two models run the same kernels on tensors of the same shapes and types.

    When they do (pruning zeros and simulated quantization change values only), their latency
    is the same by construction and a measured difference would be noise.
    """

    def signature(loaded: LoadedModel) -> list:
        mods = [(name, type(m)) for name, m in loaded.model.named_modules()]
        tensors = sorted(  # by name: training re-registers weights, which changes their order
            (n, (tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__)
            for n, t in loaded.model.state_dict().items()
        )
        return mods + tensors

    return signature(a) == signature(b)


@torch.inference_mode()
def paired_latency(
    models: dict[str, LoadedModel],
    texts: list[str],
    *,
    repeats: int = REPEATS,
    max_texts: int = TEXTS,
    batch_size: int = BATCH_SIZE,
) -> dict[str, LatencyStats]:
    """Time ``models`` on the same texts in one call, interleaved batch by batch.

    Args:
        models: {label: model}; the same model may appear twice (a noise check).
        texts: the texts to time (the first ``max_texts`` are used).
        repeats: passes over the texts per model.
        max_texts: texts per pass.
        batch_size: texts per forward pass (length-sorted and padded per batch, as evaluate).

    Returns:
        {label: LatencyStats}: model time only (tokenization excluded), after one warm-up
        batch per model.

    Raises:
        LlmoptError: no models, no texts, or fewer than one repeat.
    """
    if not models:
        raise LlmoptError("paired_latency needs at least one model")
    if repeats < 1:
        raise LlmoptError(f"repeats must be >= 1, got {repeats}")
    texts = list(texts)[:max_texts]
    if not texts:
        raise LlmoptError("paired_latency needs at least one text")
    batches = {}
    for label, loaded in models.items():
        encoded = encode(
            loaded.tokenizer,
            texts,
            loaded.max_length,
            token_types=accepts_token_types(loaded.model),
        )
        batches[label] = [inputs for _, inputs in iter_batches(encoded, batch_size)]
        loaded.model(**batches[label][0])  # warm-up: first-call allocations are not latency
    labels = list(models)
    seconds = {label: np.zeros(repeats) for label in labels}
    n_batches = len(next(iter(batches.values())))
    for r in range(repeats):
        for j in range(n_batches):
            order = labels if (r + j) % 2 == 0 else labels[::-1]  # alternate who goes first
            for label in order:
                start = time.perf_counter()
                models[label].model(**batches[label][j])
                seconds[label][r] += time.perf_counter() - start
    out = {}
    for label in labels:
        per_text = 1000.0 * seconds[label] / len(texts)
        median = float(np.median(per_text))
        q25, q75 = np.percentile(per_text, [25, 75])
        out[label] = LatencyStats(
            median_ms=median,
            spread=float((q75 - q25) / median) if median > 0 else 0.0,
            samples_ms=tuple(float(x) for x in per_text),
            texts=len(texts),
        )
    return out


def paired_if_kernels_differ(
    base: LoadedModel, variant: LoadedModel, texts: list[str]
) -> dict[str, LatencyStats] | None:
    """``paired_latency`` of {"baseline": base, "compressed": variant}, or None when both run
    the same kernels on tensors of the same shapes (their latency is then the same by
    construction, and a measured difference would be noise)."""
    if same_kernels(base, variant):
        return None
    return paired_latency({"baseline": base, "compressed": variant}, texts)
