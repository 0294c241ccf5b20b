"""Tokenize once, then feed a model length-sorted, dynamically padded batches."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Encoded:
    """Token ids of every text, unpadded, in the dataset's order."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    pad_token_id: int
    max_length: int
    n_truncated: int  # texts longer than max_length, cut to it

    def __len__(self) -> int:
        return len(self.input_ids)


def accepts_token_types(model) -> bool:
    """Whether ``model.forward`` names ``token_type_ids`` (DistilBERT, for one, does not)."""
    return "token_type_ids" in inspect.signature(model.forward).parameters


def encode(tokenizer, texts: list[str], max_length: int, *, token_types: bool = True) -> Encoded:
    """Tokenize ``texts`` once (no padding) and count how many had to be truncated.

    ``token_types=False`` drops segment ids, for models whose forward does not take them.
    """
    cut = dict(tokenizer(list(texts), truncation=False, padding=False, verbose=False))
    long = [i for i, x in enumerate(cut["input_ids"]) if len(x) > max_length]
    if long:  # tokenize only the long texts again, cut to max_length with special tokens kept
        short = tokenizer([texts[i] for i in long], truncation=True, max_length=max_length)
        for key, values in short.items():
            for i, value in zip(long, values, strict=True):
                cut[key][i] = value
    n_truncated = len(long)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return Encoded(
        input_ids=cut["input_ids"],
        token_type_ids=cut.get("token_type_ids") if token_types else None,
        pad_token_id=int(pad),
        max_length=max_length,
        n_truncated=n_truncated,
    )


def iter_batches(
    encoded: Encoded, batch_size: int = 32, *, sort: bool = True, max_tokens: int | None = None
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Yield ``(rows, inputs)``: the dataset rows of a batch and its right-padded tensors.

    With ``sort`` the rows go longest first, so each batch pads only to its own longest text.
    With ``max_tokens`` a batch also holds at most that many padded tokens (one row at least):
    short texts still share a batch, long ones no longer make activations that spill the CPU's
    caches.
    """
    lengths = np.array([len(x) for x in encoded.input_ids])
    order = np.argsort(-lengths, kind="stable") if sort else np.arange(len(lengths))
    start = 0
    while start < len(order):
        size, width = 1, int(lengths[order[start]])
        while size < batch_size and start + size < len(order):
            wider = max(width, int(lengths[order[start + size]]))
            if max_tokens is not None and (size + 1) * wider > max_tokens:
                break
            size, width = size + 1, wider
        rows = order[start : start + size]
        start += size
        width = int(lengths[rows].max())
        ids = torch.full((len(rows), width), encoded.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        types = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            n = lengths[r]
            ids[j, :n] = torch.tensor(encoded.input_ids[r])
            mask[j, :n] = 1
            if encoded.token_type_ids is not None:
                types[j, :n] = torch.tensor(encoded.token_type_ids[r])
        inputs = {"input_ids": ids, "attention_mask": mask}  # each (batch, width)
        if encoded.token_type_ids is not None:
            inputs["token_type_ids"] = types
        yield rows, inputs
