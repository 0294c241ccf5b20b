"""Calibration: per-input-channel activation norms of chosen layers, from forward hooks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from llmopt.batching import accepts_token_types, encode, iter_batches
from llmopt.loaded import Progress

CALIBRATION_BATCH = 16  # texts per forward pass: small batches pad little


@torch.no_grad()
def input_norms(
    model: nn.Module,
    tokenizer,
    texts: list[str],
    names: list[str],
    *,
    max_length: int = 512,
    progress: Progress | None = None,
) -> dict[str, Tensor]:
    """``||X_j||_2`` of every input channel ``j`` of each named layer over the texts' tokens.

    Padding positions are left out: only real tokens count.

    Args:
        model: the classifier (its forward takes the tokenizer's outputs).
        tokenizer: its tokenizer.
        texts: calibration texts.
        names: qualified names of the layers to measure.
        max_length: tokens per text.
        progress: called with (fraction, message) after each batch.

    Returns:
        {name: (in,) float32 norms}.
    """
    sums: dict[str, Tensor] = {}
    state: dict[str, Tensor] = {}  # the attention mask of the batch in flight

    def hook(name: str):
        def collect(_module, args, _output):
            x = args[0]  # (batch, seq, in), or (tokens, in)
            mask = state.get("mask")
            if mask is not None and x.dim() == 3 and x.shape[:2] == mask.shape:
                x = x[mask]  # (real tokens, in)
            x = x.reshape(-1, x.shape[-1]).float()
            total = (x * x).sum(0)  # (in,)
            sums[name] = sums[name] + total if name in sums else total

        return collect

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        encoded = encode(tokenizer, texts, max_length, token_types=accepts_token_types(model))
        batches = list(iter_batches(encoded, CALIBRATION_BATCH))
        for i, (_rows, inputs) in enumerate(batches):
            state["mask"] = inputs["attention_mask"].bool()  # (batch, seq)
            model(**inputs)
            if progress:
                progress((i + 1) / len(batches), "calibrating: activation norms for Wanda")
    finally:
        for h in handles:
            h.remove()
    return {n: sums[n].sqrt() for n in names if n in sums}
