"""Train a compressed model without undoing its compression: masks, quantization grids, factors.

Each constrained weight matrix gets a parametrization (``torch.nn.utils.parametrize``): the
optimizer updates a float "latent" copy, and the forward pass sees ``mask * grid(latent)``:

- pruning masks are kept exactly (a pruned weight is multiplied by 0, so it is 0 and its
  gradient is 0; N:M patterns are masks too);
- quantized weights stay on their grid ``k * scale`` with ``|k| <= 2^(bits-1) - 1`` and the
  scales compression chose (a straight-through estimator passes the gradient to the latent);
- low-rank layers stay factorised because their two factors are separate Linears
  (``name.down`` / ``name.up``) that are trained as they are.

``release`` removes the parametrizations, leaving every weight at exactly its constrained value.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from llmopt.compression.quantize import is_dynamic_int8
from llmopt.compression.targets import is_conv1d
from llmopt.errors import LlmoptError


class _RoundToGrid(torch.autograd.Function):
    """Forward: the nearest grid point; backward: the gradient as is (straight-through)."""

    @staticmethod
    def forward(ctx, weight, scales, bits, zeros):  # noqa: D102 - autograd hook
        return snap(weight, scales, bits, zeros)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102 - autograd hook
        return grad, None, None, None


def snap(weight: Tensor, scales: Tensor, bits: int, zeros: Tensor | None = None) -> Tensor:
    """Round an (out, in) weight to its quantization grid, exactly as compression did.

    Args:
        weight: (out, in) values.
        scales: (out, groups) scales; each group is ``in / groups`` consecutive inputs.
        bits: bit width of the grid.
        zeros: (out, groups) integer zero points of an asymmetric grid (``None``: symmetric,
            ``k * scale`` with ``|k| <= 2^(bits-1) - 1``).

    Returns:
        (out, in) grid values.
    """
    out_features, in_features = weight.shape
    groups = scales.shape[1]
    w = weight.reshape(out_features, groups, in_features // groups)  # (out, groups, g)
    s = scales.to(weight.dtype).unsqueeze(2)  # (out, groups, 1)
    if zeros is None:
        levels = 2 ** (bits - 1) - 1
        q = torch.clamp(torch.round(w / s), -levels, levels)
    else:
        z = zeros.to(weight.dtype).unsqueeze(2)
        q = torch.clamp(torch.round(w / s) + z, 0, 2**bits - 1) - z
    return (q * s).reshape(out_features, in_features)


class Keep(nn.Module):
    """The parametrization of one weight: ``mask * grid(latent)`` in the stored orientation."""

    def __init__(self, mask, scales, bits, zeros, transposed: bool):
        super().__init__()
        self.transposed = transposed  # GPT-2 Conv1D stores (in, out); masks/scales are (out, in)
        self.bits = bits
        self.register_buffer("mask", None if mask is None else mask.to(torch.bool).clone())
        self.register_buffer("scales", None if scales is None else scales.float().clone())
        self.register_buffer("zeros", None if zeros is None else zeros.clone())

    def forward(self, stored: Tensor) -> Tensor:
        w = stored.T if self.transposed else stored  # (out, in)
        if self.scales is not None:
            w = _RoundToGrid.apply(w, self.scales, self.bits, self.zeros)
        if self.mask is not None:
            w = w * self.mask.to(w.dtype)
        return w.T if self.transposed else w


def constraint_names(state: dict | None) -> list[str]:
    """The weight matrices a compression state constrains (masks or scales), in a fixed order."""
    if not state:
        return []
    return sorted(set(state.get("masks") or {}) | set(state.get("scales") or {}))


def constrain(model: nn.Module, state: dict | None) -> dict[str, Keep]:
    """Parametrize every matrix ``state`` constrains (see ``LoadedModel.compression``).

    Args:
        model: the model to train (changed in place; call ``release`` when done).
        state: ``{"masks": {matrix: (out, in) bool}, "scales": {matrix: (out, groups)},
            "bits", "zeros"?: {matrix: (out, groups)}}``; missing parts constrain nothing.

    Returns:
        ``{matrix name: its Keep module}`` (gradual pruning updates the masks in place).

    Raises:
        LlmoptError: a model with torch's int8 kernels (they cannot be trained), or a state whose
            matrices or shapes do not match the model.
    """

    if any(is_dynamic_int8(m) for m in model.modules()):
        raise LlmoptError(
            "a model with real int8 kernels cannot be trained (torch keeps their weights packed); "
            "compress with simulated 8-bit weights instead, then recover"
        )
    keeps: dict[str, Keep] = {}
    if not state:
        return keeps
    masks, scales = state.get("masks") or {}, state.get("scales") or {}
    zeros = state.get("zeros") or {}
    bits = state.get("bits")
    if scales and not isinstance(bits, int):
        raise LlmoptError("a compression state with scales needs its bit width ('bits')")
    for name in constraint_names(state):
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise LlmoptError(
                f"the compression state names layer {name!r}, which this model does not have"
            ) from None
        weight = getattr(module, "weight", None)
        if not isinstance(weight, Tensor) or weight.dim() != 2:
            raise LlmoptError(f"layer {name!r} has no weight matrix to constrain")
        transposed = is_conv1d(module)
        shape = tuple(weight.T.shape if transposed else weight.shape)
        mask = masks.get(name)
        if mask is not None and tuple(mask.shape) != shape:
            raise LlmoptError(f"the mask of {name!r} is {tuple(mask.shape)}, its weight {shape}")
        scale = scales.get(name)
        if scale is not None and (scale.dim() != 2 or scale.shape[0] != shape[0]
                                  or shape[1] % scale.shape[1]):  # fmt: skip
            raise LlmoptError(f"the scales of {name!r} do not fit its weight {shape}")
        own = (state.get("matrix_bits") or {}).get(name, bits)  # per-layer rules: its own width
        keep = Keep(mask, scale, own if scale is not None else None, zeros.get(name), transposed)
        keep.to(weight.device)
        parametrize.register_parametrization(module, "weight", keep, unsafe=True)
        keeps[name] = keep
    return keeps


@torch.no_grad()
def release(model: nn.Module) -> None:
    """Remove every parametrization, leaving each weight at its constrained value exactly."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for tensor_name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)


@torch.no_grad()
def project(model: nn.Module, state: dict | None) -> None:
    """Put every constrained matrix of an unparametrized model back on its mask and grid.

    Used after a step that sets weights directly (a head re-fit) rather than by training.
    """
    keeps = constrain(model, state)
    if keeps:
        release(model)


def satisfies(model: nn.Module, state: dict | None) -> dict[str, bool]:
    """For each constrained matrix: whether its weight keeps its mask and lies on its grid."""
    result = {}
    if not state:
        return result
    masks, scales = state.get("masks") or {}, state.get("scales") or {}
    for name in constraint_names(state):
        module = model.get_submodule(name)
        w = module.weight.detach()
        w = w.T if is_conv1d(module) else w
        ok = True
        if name in masks:
            ok &= bool((w[~masks[name].bool()] == 0).all())
        if name in scales:
            zeros = (state.get("zeros") or {}).get(name)
            bits = (state.get("matrix_bits") or {}).get(name, state["bits"])
            ok &= bool(torch.equal(snap(w, scales[name], bits, zeros), w))
        result[name] = ok
    return result
