"""LoadedModel: a classifier ready for inference, and how its size and parameters are counted.

A leaf of the package (it imports only torch): loaders, compression and training all produce
or consume a ``LoadedModel``, so the type lives apart from ``load_model``'s dispatch.
"""

from __future__ import annotations

import copy
import re
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)

GENERIC_LABEL = re.compile(r"^LABEL_\d+$")
POOLED_META = "llmopt_pooled.json"  # marks a directory saved from an encoder + head model
SAVE_MARKER = "llmopt_save.json"  # written last by save_model: the save is complete
PARTIAL_MARKER = ".llmopt-partial"  # written first by save_model, removed when it completes


@dataclass
class LoadedModel:
    """A classifier ready for inference: eval mode, eager attention, labels named."""

    model: nn.Module  # returns .logits and, with output_attentions=True, .attentions
    tokenizer: object
    name: str
    label_names: list[str]
    source: str
    max_length: int = 512  # longer texts are truncated to this many tokens
    size_bytes: int | None = None  # storage of a compressed model; None = its dense tensors
    notes: list[str] = field(default_factory=list)  # what is simulated, what was trained
    # What compression left that later steps must keep (recovery fine-tuning, saving): see
    # ``llmopt.compression.engine.compression_state``; None for an uncompressed model.
    compression: dict | None = field(default=None, repr=False)

    @property
    def named_labels(self) -> bool:
        """Whether the label names mean something (not ``LABEL_0``-style placeholders)."""
        return not all(GENERIC_LABEL.match(n) for n in self.label_names)


def dense_size_bytes(model: nn.Module) -> int:
    """Bytes of every distinct parameter and buffer as stored (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, non-zero) parameter counts, measured from the tensors; shared tensors once."""
    seen: set[int] = set()
    total = nonzero = 0
    for p in model.parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    for m in model.modules():  # torch's dynamic int8 Linear keeps weights packed, not as params
        if hasattr(m, "_packed_params") and callable(getattr(m, "weight", None)):
            for t in (m.weight(), m.bias()):
                if t is not None:
                    total += t.numel()
                    nonzero += int(torch.count_nonzero(t.int_repr() if t.is_quantized else t))
    return total, nonzero


def size_bytes(loaded: LoadedModel) -> int:
    """Storage of a loaded model: its compressed accounting if it has one, else dense bytes."""
    return loaded.size_bytes if loaded.size_bytes is not None else dense_size_bytes(loaded.model)


def model_facts(loaded: LoadedModel) -> dict:
    """Plain facts for display: architecture, layers, heads, parameters, size, labels."""
    config = getattr(loaded.model, "config", None)
    total, nonzero = count_params(loaded.model)

    def first(*names, default=None):
        for n in names:
            if config is not None and getattr(config, n, None) is not None:
                return getattr(config, n)
        return default

    return {
        "name": loaded.name,
        "source": loaded.source,
        "architecture": type(loaded.model).__name__,
        "layers": first("num_hidden_layers", "n_layer", "n_layers"),
        "heads": first("num_attention_heads", "n_head", "n_heads"),
        "hidden_size": first("hidden_size", "n_embd", "dim"),
        "params_total": total,
        "params_nonzero": nonzero,
        "size_bytes": size_bytes(loaded),
        "labels": list(loaded.label_names),
        "max_length": loaded.max_length,
    }


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its lock (dropped
# with the model, so compressed copies made and thrown away leave nothing behind)
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock of a model that several threads may share (the dashboard's base models): held
    while a thread switches its attention or hangs temporary hooks on it, and while it is
    copied, so no other thread sees (or copies) that temporary state."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(model, threading.RLock())


def private_copy(model: nn.Module) -> nn.Module:
    """A deep copy of a possibly shared model, taken under its lock (see ``model_lock``)."""
    with model_lock(model):
        return copy.deepcopy(model)
