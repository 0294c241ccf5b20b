"""Instant size and parameter estimate of a compression, from layer shapes and the config only."""

from __future__ import annotations

import math

import torch
from torch import nn

from llmopt.compression.config import CompressionConfig
from llmopt.compression.engine import check_plan
from llmopt.compression.lowrank import break_even_rank
from llmopt.compression.report import FLOAT_BITS
from llmopt.compression.targets import find_targets, get_bias, get_weight, in_blocks, is_linear
from llmopt.loaded import LoadedModel, count_params, dense_size_bytes

SCALE_BITS = 16  # quantization scales are stored as fp16 (the engine uses fp32 only on overflow)
INT8_SCALE_BITS = 32  # torch's dynamic int8 kernels keep fp32 per-channel scales


def _kept(rows: int, cols: int, config: CompressionConfig) -> int:
    """Weights left non-zero by pruning one (rows, cols) matrix (the engine's exact counts)."""
    if not config.prunes:
        return rows * cols
    if config.nm:
        n, m = config.nm
        return rows * ((cols // m) * n + min(n, cols % m))
    if config.sparsity_scope == "global":  # one threshold over all layers: the same share
        return rows * cols - round(config.sparsity * rows * cols)
    return rows * (cols - round(config.sparsity * cols))  # round(s * in) dropped per row


def _matrix_bits(rows: int, cols: int, config: CompressionConfig) -> tuple[int, int]:
    """(bits of the cheapest packed format, non-zero weights) of one stored matrix."""
    numel, nnz = rows * cols, _kept(rows, cols, config)
    scales, scale_bits = 0, SCALE_BITS
    if config.bits is not None:
        value_bits = config.bits
        scales = rows * (1 if config.group_size is None else cols // config.group_size)
    elif config.int8_dynamic:
        value_bits, scales, scale_bits = 8, rows, INT8_SCALE_BITS
    else:
        value_bits = FLOAT_BITS
    options = [numel * value_bits, numel + nnz * value_bits]  # dense, bitmap + values
    if config.prunes and config.nm:
        n, m = config.nm
        options.append(rows * math.ceil(cols / m) * n * (value_bits + math.ceil(math.log2(m))))
    return min(options) + scales * scale_bits, nnz


def estimate_size(loaded: LoadedModel, config: CompressionConfig) -> dict:
    """What ``compress(loaded, config)`` will report for size and parameters, without running it.

    Uses layer shapes and the config, with the engine's storage rules (cheapest of dense,
    bitmap or N:M packing; fp16 scales); nothing is compressed. It assumes no compressed weight
    is zero except those pruning removes; rounding to few bits zeroes more weights, so the
    measured size can only be smaller (most visibly at 2-3 bits).

    Args:
        loaded: the uncompressed model.
        config: the compression settings.

    Returns:
        ``{"size_bytes", "size_bytes_before", "ratio" (before / after), "params_total",
        "params_nonzero", "layers" (how many are compressed), "sparsity" (zeros in those
        layers' stored matrices)}``.

    Raises:
        LlmoptError: a rank or group size some layer cannot take (as ``compress`` would).
    """
    model: nn.Module = loaded.model
    before = dense_size_bytes(model)
    params, nonzero = count_params(model)
    targets = [] if config.is_identity else _targets(model, config)
    check_plan(model, targets, config)
    bytes_before = bytes_after = removed = added = zeros = stored = kept = 0
    for name in targets:
        module = model.get_submodule(name)
        weight, bias = get_weight(module), get_bias(module)
        out_f, in_f = weight.shape
        bias_n = 0 if bias is None else bias.numel()
        if config.rank is not None and config.rank < break_even_rank(out_f, in_f):
            shapes = [(config.rank, in_f), (out_f, config.rank)]  # down, up
        else:
            shapes = [(out_f, in_f)]
        bits = bias_n * FLOAT_BITS
        for rows, cols in shapes:
            matrix_bits, nnz = _matrix_bits(rows, cols, config)
            bits += matrix_bits
            zeros += rows * cols - nnz
            kept += nnz
            stored += rows * cols
        nonzero -= int(torch.count_nonzero(weight))  # replaced by what the estimate keeps
        bytes_before += weight.numel() * weight.element_size()
        bytes_before += 0 if bias is None else bias.numel() * bias.element_size()
        bytes_after += math.ceil(bits / 8)
        removed += out_f * in_f
        added += sum(r * c for r, c in shapes)
    after = before - bytes_before + bytes_after
    total = params - removed + added
    return {
        "size_bytes": after,
        "size_bytes_before": before,
        "ratio": before / after if after else float("nan"),
        "params_total": total,
        "params_nonzero": nonzero + kept,
        "layers": len(targets),
        "sparsity": zeros / stored if stored else 0.0,
    }


def _targets(model: nn.Module, config: CompressionConfig) -> list[str]:
    return find_targets(model, is_linear if config.include_head else in_blocks(model))
