"""Batched next-token scoring of token windows: one forward pass per batch of windows, the
log-probabilities computed in float32, no Python loop over tokens."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmopt.lm.device import model_device
from llmopt.lm.windows import Windows

LOGITS_BUDGET = 256 * 2**20  # bytes of float32 logits one batch may hold: bounds memory
MAX_BATCH = 64
# Tokens one batch may hold. On CPU, bigger batches than this got slower, not faster: at
# 12 × 768 and 512-token windows bench/lm.py measured 1,536-2,048 tokens per batch at
# 67-70% of the fp32 matmul peak, 3,072 at 58% and 4,608 at 50% (activations outgrow the cache).
MAX_BATCH_TOKENS = 2048


@dataclass
class Batch:
    """One padded batch of windows and the positions that are scored in it."""

    index: torch.Tensor  # (b,) window numbers
    inputs: torch.Tensor  # (b, t) token ids, right-padded
    attention: torch.Tensor  # (b, t) 1 for real tokens
    targets: torch.Tensor  # (b, t) next tokens (0 where padded)
    scored: torch.Tensor  # (b, t) bool: the positions whose prediction is scored


def batch_size_for(vocab: int, length: int) -> int:
    """Windows per batch so the float32 logits stay within ``LOGITS_BUDGET`` and the batch
    within ``MAX_BATCH_TOKENS``."""
    by_logits = LOGITS_BUDGET // max(1, 4 * vocab * length)
    return max(1, min(MAX_BATCH, by_logits, MAX_BATCH_TOKENS // max(1, length)))


def iter_batches(windows: Windows, vocab: int, batch_size: int | None = None) -> Iterator[Batch]:
    """Windows grouped by length (longest first) into right-padded batches.

    Right padding needs no mask for a causal model, but one is passed anyway.
    """
    lengths = [len(t) - 1 for t in windows.tokens]
    order = sorted(range(len(windows)), key=lambda i: -lengths[i])
    start = 0
    while start < len(order):
        length = lengths[order[start]]
        size = batch_size or batch_size_for(vocab, length)
        chunk = order[start : start + size]
        start += size
        inputs = torch.zeros(len(chunk), length, dtype=torch.long)
        targets = torch.zeros_like(inputs)
        scored = torch.zeros(len(chunk), length, dtype=torch.bool)
        attention = torch.zeros_like(inputs)
        for row, i in enumerate(chunk):
            seq = torch.tensor(windows.tokens[i], dtype=torch.long)
            t = len(seq) - 1
            inputs[row, :t] = seq[:-1]
            targets[row, :t] = seq[1:]
            attention[row, :t] = 1
            scored[row, t - int(windows.n_scored[i]) : t] = True
        yield Batch(torch.tensor(chunk), inputs, attention, targets, scored)


@torch.inference_mode()
def logits_of(model, batch: Batch) -> torch.Tensor:
    """The model's float32 logits for a batch: (b, t, vocab)."""
    device = model_device(model)
    out = model(
        input_ids=batch.inputs.to(device),
        attention_mask=batch.attention.to(device),
        use_cache=False,
    )
    return out.logits.float()


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log p(target) per position, as the labels= loss computes it (float32 cross-entropy)."""
    b, t, v = logits.shape
    return F.cross_entropy(
        logits.reshape(b * t, v), targets.to(logits.device).reshape(-1), reduction="none"
    ).view(b, t)


@dataclass
class WindowScores:
    """Per-window NLL sums and scored-token counts of one model, with its model time."""

    nll: torch.Tensor  # (windows,) float64 sum of -log p over scored targets
    tokens: torch.Tensor  # (windows,) scored targets
    seconds: float  # model time (forward passes and the loss), tokenization excluded


def score_windows(
    model,
    windows: Windows,
    *,
    batch_size: int | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> WindowScores:
    """Sum of -log p over each window's scored targets, batched."""
    nll = torch.zeros(len(windows), dtype=torch.float64)
    vocab = model.get_output_embeddings().weight.shape[0]
    seconds, done = 0.0, 0
    for batch in iter_batches(windows, vocab, batch_size):
        start = time.perf_counter()
        per_token = token_nll(logits_of(model, batch), batch.targets)
        sums = (per_token * batch.scored.to(per_token.device)).double().sum(1).cpu()
        seconds += time.perf_counter() - start
        nll[batch.index] = sums
        done += len(batch.index)
        if progress is not None:
            progress(done / len(windows), f"scored {done}/{len(windows)} windows")
    tokens = torch.as_tensor(windows.n_scored, dtype=torch.int64)
    return WindowScores(nll, tokens, seconds)
