"""Weight quantization: simulated round-to-nearest (2..8 bits) and torch's real int8 kernels."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

FP16_MAX = 65504.0
FP16_TINY = 6.1e-5  # smallest normal fp16: scales below it would lose precision


def qmax(bits: int) -> int:
    """Largest integer level of a symmetric ``bits``-bit grid: 2^(bits-1) - 1."""
    return 2 ** (bits - 1) - 1


def levels(bits: int, asymmetric: bool = False) -> int:
    """How many values a grid has: 2^b with a zero point, 2^b - 1 symmetric (±(2^(b-1)-1))."""
    return 2**bits if asymmetric else 2 * qmax(bits) + 1


def _fp16_if_exact(scales: Tensor) -> Tensor:
    """Each scale rounded to fp16 where fp16 holds it without losing range (what a file stores)."""
    ok = (scales <= FP16_MAX) & (scales >= FP16_TINY)
    return torch.where(ok, scales.half().float(), scales)


def grid_params(w: Tensor, bits: int, asymmetric: bool = False) -> tuple[Tensor, Tensor | None]:
    """Scale (and zero point) of each row of ``w``: the grid round-to-nearest will use.

    Symmetric: ``scale = max|w| / (2^(b-1) - 1)``, levels ``k * scale`` for ``|k| <= 2^(b-1)-1``.
    Asymmetric: ``scale = (max - min) / (2^b - 1)`` over a range that includes 0, and an integer
    ``zero`` in [0, 2^b - 1], levels ``(k - zero) * scale`` for ``k`` in [0, 2^b - 1]: all 2^b
    levels are used, and 0 stays exactly on the grid (pruned weights stay zero).

    Args:
        w: (rows, g) the weights sharing each row's scale.
        bits: bit width, 2..8.
        asymmetric: use a zero point.

    Returns:
        (scales (rows,), zero points (rows,) as float integers, or None when symmetric).
    """
    w = w.float()
    if not asymmetric:
        amax = w.abs().amax(dim=1)
        scales = torch.where(amax > 0, amax / qmax(bits), torch.ones_like(amax))
        return _fp16_if_exact(scales), None
    top = (2**bits) - 1
    lo = w.amin(dim=1).clamp(max=0.0)
    hi = w.amax(dim=1).clamp(min=0.0)
    scales = torch.where(hi > lo, (hi - lo) / top, torch.ones_like(hi))
    scales = _fp16_if_exact(scales)
    zeros = torch.clamp(torch.round(-lo / scales), 0, top)
    return scales, zeros


def quantize_to(w: Tensor, scales: Tensor, zeros: Tensor | None, bits: int) -> Tensor:
    """Round each row of ``w`` (rows, g) to its grid and return the grid values (dequantized)."""
    s = scales.unsqueeze(1)
    if zeros is None:
        q = torch.clamp(torch.round(w / s), -qmax(bits), qmax(bits))
        return q * s
    z = zeros.unsqueeze(1)
    q = torch.clamp(torch.round(w / s) + z, 0, (2**bits) - 1)
    return (q - z) * s


def fake_quantize(
    weight: Tensor, bits: int, group_size: int | None = None, *, asymmetric: bool = False
) -> tuple[Tensor, Tensor]:
    """Round-to-nearest quantization, then dequantization (the values a kernel sees).

    Each output row (or each run of ``group_size`` consecutive inputs of a row) gets its own
    grid (``grid_params``); scales are stored as fp16 when that loses nothing in range (the
    scales used here are the fp16-rounded ones, so the simulation is exactly what a packed file
    holds). Zeros stay zero: they are on the grid.

    Args:
        weight: (out, in) weight matrix.
        bits: bit width, 2..8.
        group_size: inputs per scale; must divide ``in``. None = one scale per row.
        asymmetric: a zero point per scale, using all 2^b levels.

    Returns:
        (dequantized weight (out, in), scales (out, groups)); ``rtn_quantize`` also returns
        the zero points.

    Raises:
        ValueError: if ``group_size`` does not divide the input size.
    """
    deq, scales, _zeros = rtn_quantize(weight, bits, group_size, asymmetric=asymmetric)
    return deq, scales


def rtn_quantize(
    weight: Tensor, bits: int, group_size: int | None = None, *, asymmetric: bool = False
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``fake_quantize`` that also returns the zero points ((out, groups), or None)."""
    out_features, in_features = weight.shape
    g = group_size or in_features
    if in_features % g:
        raise ValueError(f"group size {g} does not divide the input size {in_features}")
    groups = in_features // g
    w = weight.float().reshape(out_features * groups, g)  # one row per (row, group)
    scales, zeros = grid_params(w, bits, asymmetric)
    deq = quantize_to(w, scales, zeros, bits).reshape(out_features, in_features)
    zeros = None if zeros is None else zeros.reshape(out_features, groups)
    return deq.to(weight.dtype), scales.reshape(out_features, groups), zeros


def scale_bits(scales: Tensor) -> int:
    """16 when every scale is exactly an fp16 number, else 32."""
    return 16 if bool((scales.half().float() == scales).all()) else 32


def linear_from(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` holding ``weight`` (out, in) and ``bias``."""
    out_features, in_features = weight.shape
    layer = skip_init(nn.Linear, in_features, out_features, bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer.eval()


def quantize_dynamic_int8(model: nn.Module, names: list[str]) -> nn.Module:
    """Swap the named ``nn.Linear`` modules for torch's dynamic int8 Linear, in place.

    Weights: int8, symmetric, one scale per output channel. Activations: quantized per tensor
    on the fly, for every batch, by the kernel itself.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = dict.fromkeys(names, per_channel_dynamic_qconfig)
    with warnings.catch_warnings():  # torch announces a future move of these kernels to torchao
        warnings.filterwarnings("ignore", message=".*quantized tensor creation")
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated")
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


def is_dynamic_int8(module: nn.Module) -> bool:
    """Whether ``module`` is a torch dynamic-quantized int8 Linear."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return isinstance(module, DynamicLinear)


def dynamic_int8_weight(module: nn.Module) -> tuple[Tensor, Tensor]:
    """(dequantized weight (out, in), its scales) of a dynamic int8 Linear.

    The scales are counted as fp32 in the size accounting (zero points are 0: symmetric).
    """
    qweight = module.weight()
    if qweight.qscheme() in (torch.per_channel_symmetric, torch.per_channel_affine):
        scales = qweight.q_per_channel_scales().float()
    else:
        scales = torch.tensor([qweight.q_scale()], dtype=torch.float32)
    return qweight.dequantize(), scales
