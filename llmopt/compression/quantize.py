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


def fake_quantize(
    weight: Tensor, bits: int, group_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Symmetric round-to-nearest quantization, then dequantization (the values a kernel sees).

    Each output row (or each run of ``group_size`` consecutive inputs of a row) gets the scale
    ``max|w| / (2^(bits-1) - 1)``, stored as fp16 when that loses nothing in range (the scales
    used here are the fp16-rounded ones, so the simulation is exactly what a packed file holds).
    Zeros stay zero: they are on the grid.

    Args:
        weight: (out, in) weight matrix.
        bits: bit width, 2..8.
        group_size: inputs per scale; must divide ``in``. None = one scale per row.

    Returns:
        (dequantized weight (out, in), scales (out, groups)).

    Raises:
        ValueError: if ``group_size`` does not divide the input size.
    """
    out_features, in_features = weight.shape
    g = group_size or in_features
    if in_features % g:
        raise ValueError(f"group size {g} does not divide the input size {in_features}")
    levels = qmax(bits)
    w = weight.float().reshape(out_features, in_features // g, g)  # (out, groups, g)
    amax = w.abs().amax(dim=2)  # (out, groups)
    scales = torch.where(amax > 0, amax / levels, torch.ones_like(amax))
    if bool(((scales <= FP16_MAX) & (scales >= FP16_TINY)).all()):
        scales = scales.half().float()
    q = torch.clamp(torch.round(w / scales.unsqueeze(2)), -levels, levels)
    deq = (q * scales.unsqueeze(2)).reshape(out_features, in_features).to(weight.dtype)
    return deq, scales


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
