"""Instant size and parameter estimate of a compression, from layer shapes and the config only."""

from __future__ import annotations

import math

import torch
from torch import nn

from llmopt.compression import registry
from llmopt.compression.config import CompressionConfig
from llmopt.compression.engine import check_plan, plan_layers
from llmopt.compression.lowrank import break_even_rank
from llmopt.compression.methods.int8 import FOLDS
from llmopt.compression.storage import (
    FLOAT_BITS,
    INT8_SCALE_BITS,
    SCALE_BITS,
    matrix_storage,
    other_tensor_bytes,
)
from llmopt.compression.targets import get_bias, get_weight
from llmopt.loaded import LoadedModel, count_params, dense_size_bytes


def _kept(rows: int, cols: int, config: CompressionConfig) -> int:
    """Weights left non-zero by pruning one (rows, cols) matrix (the method's exact counts)."""
    if not config.prunes:
        return rows * cols
    method = registry.get("prune", config.sparsity_method)
    if method.kept is None:  # a method that does not say: the per-row rule of magnitude
        return rows * (cols - round(config.sparsity * cols))
    return method.kept(rows, cols, config)


def _matrix_bits(rows: int, cols: int, config: CompressionConfig) -> tuple[int, int]:
    """(bits of the cheapest packed format, non-zero weights) of one stored matrix."""
    nnz = _kept(rows, cols, config)
    scales, scale_bits, zero_bits = 0, SCALE_BITS, 0
    if config.bits is not None:
        value_bits = config.bits
        scales = rows * (1 if config.group_size is None else cols // config.group_size)
        zero_bits = config.bits if config.asymmetric else 0
    elif config.int8_dynamic:
        value_bits, scales, scale_bits = 8, rows, INT8_SCALE_BITS
    else:
        value_bits = FLOAT_BITS if config.precision == "fp32" else 16
    storage = matrix_storage(
        rows,
        cols,
        nnz,
        value_bits,
        n_scales=scales,
        scale_bits=scale_bits,
        zero_point_bits=zero_bits,
        nm=config.nm if config.prunes else None,
    )
    return storage.bits, nnz


def _smoothing_vector(name: str, config: CompressionConfig, factored: bool) -> bool:
    """Whether SmoothQuant keeps a per-channel scale in front of this matrix (not folded)."""
    if not (config.int8_dynamic and config.smooth_alpha is not None):
        return False
    return factored or not any(pattern.match(name) for pattern in FOLDS)


def estimate_size(loaded: LoadedModel, config: CompressionConfig) -> dict:
    """What ``compress(loaded, config)`` will report for size and parameters, without running it.

    Uses layer shapes and the config (each layer's own, with per-layer rules; skipped layers
    stay as they are), with the same storage accounting as the report
    (``llmopt.compression.storage.matrix_storage``) and each pruning method's own count of
    kept weights; nothing is compressed. It assumes no compressed weight is zero except those
    pruning removes; rounding to few bits zeroes more weights, so the measured size can only be
    smaller (most visibly at 2-3 bits).

    Args:
        loaded: the uncompressed model.
        config: the compression settings.

    Returns:
        ``{"size_bytes", "size_bytes_before", "ratio" (before / after), "params_total",
        "params_nonzero", "layers" (how many are compressed), "sparsity" (zeros in those
        layers' stored matrices)}``.

    Raises:
        LlmoptError: a rank or group size some layer cannot take, or a per-layer rule that
            matches no layer (as ``compress`` would).
    """
    model: nn.Module = loaded.model
    before = dense_size_bytes(model)
    params, nonzero = count_params(model)
    targets, layer_configs = plan_layers(model, config, name=loaded.name)
    targets = [] if config.is_identity else targets
    check_plan(model, targets, config, layer_configs)
    float_bits = FLOAT_BITS if config.precision == "fp32" else 16
    bytes_before = bytes_after = removed = added = zeros = stored = kept = 0
    whole = config
    for name in targets:
        config = layer_configs.get(name, whole)
        module = model.get_submodule(name)
        weight, bias = get_weight(module), get_bias(module)
        out_f, in_f = weight.shape
        bias_n = 0 if bias is None else bias.numel()
        if config.rank is not None and config.rank < break_even_rank(out_f, in_f):
            shapes = [(config.rank, in_f), (out_f, config.rank)]  # down, up
        else:
            shapes = [(out_f, in_f)]
        bits = bias_n * float_bits
        for rows, cols in shapes:
            matrix_bits, nnz = _matrix_bits(rows, cols, config)
            vector = _smoothing_vector(name, config, len(shapes) > 1)
            bits += matrix_bits + (FLOAT_BITS * cols if vector else 0)
            zeros += rows * cols - nnz
            kept += nnz
            stored += rows * cols
        nonzero -= int(torch.count_nonzero(weight))  # replaced by what the estimate keeps
        bytes_before += weight.numel() * weight.element_size()
        bytes_before += 0 if bias is None else bias.numel() * bias.element_size()
        bytes_after += math.ceil(bits / 8)
        removed += out_f * in_f
        added += sum(r * c for r, c in shapes)
    after = other_tensor_bytes(model, targets, whole.precision) + bytes_after
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
