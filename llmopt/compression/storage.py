"""Packed-storage accounting of one weight matrix: a pure function of counts, used by both the
compression report (counts measured from tensors) and the instant estimate (counts predicted)."""

from __future__ import annotations

import math
from dataclasses import dataclass

FLOAT_BITS = 32  # uncompressed weights and all biases stay fp32
SCALE_BITS = 16  # quantization scales are fp16 (fp32 only when a scale does not fit fp16)
INT8_SCALE_BITS = 32  # torch's dynamic int8 kernels keep fp32 per-channel scales

STORAGE_ASSUMPTIONS = [
    "sizes count what a packed file would store, measured from the resulting tensors; "
    "each layer uses the cheapest of: dense values, a 1-bit-per-weight keep-mask plus the "
    "non-zero values (bitmap), or, when every group of M holds at most N non-zeros, N values "
    "per group plus ceil(log2 M) index bits per value (N:M)",
    "quantized weights are packed at `bits` bits per value with one scale per output channel "
    "or group, in fp16 (fp32 when a scale does not fit fp16), plus one `bits`-bit zero point "
    "per scale when asymmetric; int8_dynamic weights are 8-bit with one fp32 scale per output "
    "channel (zero points are 0: symmetric)",
    "biases, embeddings, norms and layers left uncompressed count at their dense fp32 size; a "
    "low-rank layer stores its two factors and the original bias; 16-bit precision stores "
    "every float at 16 bits",
]


@dataclass(frozen=True)
class Storage:
    """Bits of one stored matrix in its cheapest format."""

    bits: int
    format: str


def matrix_storage(
    rows: int,
    cols: int,
    nonzero: int,
    value_bits: int,
    *,
    n_scales: int = 0,
    scale_bits: int = SCALE_BITS,
    zero_point_bits: int = 0,
    nm: tuple[int, int] | None = None,
) -> Storage:
    """The cheapest sensible packed format of one (rows, cols) weight matrix, in bits.

    Args:
        rows: output channels.
        cols: input channels.
        nonzero: weights that are not zero (pruned weights are zero).
        value_bits: bits per stored value (32 float, 16 for 16-bit floats, ``bits``, 8 int8).
        n_scales: quantization scales stored with it (0 when not quantized).
        scale_bits: bits per scale.
        zero_point_bits: bits per zero point (one per scale; 0 = symmetric, none stored).
        nm: ``(n, m)`` when every group of ``m`` consecutive inputs of a row holds at most ``n``
            non-zeros (the caller checks or guarantees that), else None.

    Returns:
        Storage(bits, format name).
    """
    numel = rows * cols
    options = {"dense": numel * value_bits, "bitmap": numel + nonzero * value_bits}
    if nm is not None:
        n, m = nm
        groups = rows * math.ceil(cols / m)
        options[f"{n}:{m}"] = groups * n * (value_bits + math.ceil(math.log2(m)))
    name = min(options, key=options.get)
    float_values = value_bits in (FLOAT_BITS, 16) and not n_scales
    values = {32: "fp32", 16: "16-bit float"}[value_bits] if float_values else f"{value_bits}-bit"
    scales = f" + {n_scales} fp{scale_bits} scales" if n_scales else ""
    zeros = f" + {n_scales} {zero_point_bits}-bit zero points" if zero_point_bits else ""
    extra = n_scales * (scale_bits + zero_point_bits)
    return Storage(options[name] + extra, f"{name} {values}{scales}{zeros}")


def other_tensor_bytes(model, targets: list[str], precision: str = "fp32") -> int:
    """Bytes of every distinct parameter and buffer outside the target layers, as stored at
    ``precision`` (16-bit precisions halve float tensors; integer buffers keep their size)."""
    inside = {
        t.data_ptr() for name in targets for t in model.get_submodule(name).state_dict().values()
    }
    seen: set[int] = set()
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        ptr = tensor.data_ptr()
        if ptr in seen or ptr in inside:
            continue
        seen.add(ptr)
        size = 2 if precision != "fp32" and tensor.is_floating_point() else tensor.element_size()
        total += tensor.numel() * size
    return total
