"""Which layers get compressed, and uniform (out, in) access to Linear and GPT-2 Conv1D weights."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from llmopt.compression.lowrank import LowRankLinear
from llmopt.compression.quantize import dynamic_int8_weight, is_dynamic_int8

Filter = Callable[[nn.Module, str], bool]  # (module, qualified name) -> compress it?


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is transformers' GPT-2 ``Conv1D`` (a Linear with weight (in, out))."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(module, Conv1D)


def is_linear(module: nn.Module, name: str = "") -> bool:
    """Filter: every ``nn.Linear`` and GPT-2 ``Conv1D``, wherever it is."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def block_list(model: nn.Module) -> str | None:
    """Qualified name of the transformer's list of layers (the ``ModuleList`` holding most
    Linear layers): ``bert.encoder.layer``, ``distilbert.transformer.layer``, ``transformer.h``
    (GPT-2), and a causal LM's decoder blocks ``model.layers`` (Llama, Qwen2, Mistral, …) or
    ``model.decoder.layers`` (OPT).
    """
    best, best_count = None, 0
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList):
            count = sum(is_linear(m) for m in module.modules())
            if count > best_count:
                best, best_count = name, count
    return best


def in_blocks(model: nn.Module) -> Filter:
    """Filter: Linear/Conv1D layers inside the transformer blocks.

    Embeddings, BERT's pooler, DistilBERT's pre_classifier and the classification head
    (``classifier`` / GPT-2's ``score``) sit outside the blocks and are left alone.
    """
    blocks = block_list(model)
    prefix = f"{blocks}." if blocks else None

    def keep(module: nn.Module, name: str) -> bool:
        return prefix is not None and name.startswith(prefix) and is_linear(module)

    return keep


def find_targets(model: nn.Module, filter_fn: Filter) -> list[str]:
    """Qualified names of the modules ``filter_fn`` selects, in model order."""
    return [n for n, m in model.named_modules() if n and filter_fn(m, n)]


def select_targets(
    model: nn.Module, include_head: bool = False, filter_fn: Filter | None = None
) -> list[str]:
    """The layers a compression changes: the one place that decides it.

    Args:
        model: the classifier.
        include_head: every Linear/Conv1D, the head included (else: those inside the blocks).
        filter_fn: a caller's own ``(module, name) -> bool``, which wins over ``include_head``.

    Returns:
        Qualified layer names in model order.
    """
    if filter_fn is None:
        filter_fn = is_linear if include_head else in_blocks(model)
    return find_targets(model, filter_fn)


def group_by_block(model: nn.Module, names: list[str]) -> tuple[list[nn.Module], list[list[str]]]:
    """(the transformer blocks, ``names`` grouped per block in order, then those outside).

    The last group (layers outside every block, e.g. the head) is always present, maybe empty.
    """
    blocks_name = block_list(model)
    if blocks_name is None:
        return [], [list(names)]
    blocks = list(model.get_submodule(blocks_name))
    groups: list[list[str]] = [[] for _ in range(len(blocks) + 1)]
    for n in names:
        rest = n.removeprefix(f"{blocks_name}.")
        head = rest.split(".", 1)[0]
        inside = rest != n and head.isdigit() and int(head) < len(blocks)
        groups[int(head) if inside else -1].append(n)
    return blocks, groups


def get_weight(module: nn.Module) -> Tensor:
    """The (out, in) weight of a Linear, Conv1D, low-rank or dynamic int8 layer (a view or copy)."""
    if isinstance(module, LowRankLinear):
        return get_weight(module.up) @ get_weight(module.down)  # (out, rank) @ (rank, in)
    if hasattr(module, "effective_weight"):  # e.g. a smoothed int8 layer
        return module.effective_weight()
    if is_dynamic_int8(module):
        return dynamic_int8_weight(module)[0]
    if is_conv1d(module):
        return module.weight.detach().T  # Conv1D stores (in, out)
    return module.weight.detach()


def get_bias(module: nn.Module) -> Tensor | None:
    """The bias of a layer (None if it has none)."""
    if isinstance(module, LowRankLinear):
        return module.up.bias
    if hasattr(module, "effective_bias"):
        return module.effective_bias()
    if is_dynamic_int8(module):
        return module.bias()
    return module.bias


@torch.no_grad()
def set_weight(module: nn.Module, weight: Tensor) -> None:
    """Overwrite the (out, in) weight of a Linear or Conv1D in place."""
    if is_conv1d(module):
        module.weight.copy_(weight.T)
    else:
        module.weight.copy_(weight)


def replace(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` is, walking ``named_children`` to its parent."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if child not in dict(parent.named_children()):
        raise KeyError(name)
    setattr(parent, child, new)


def stored_matrices(model: nn.Module, name: str) -> list[str]:
    """Names of the weight matrices layer ``name`` stores: itself, or its two low-rank factors."""
    module = model.get_submodule(name)
    if isinstance(module, LowRankLinear):
        return [f"{name}.down", f"{name}.up"]
    return [name]
