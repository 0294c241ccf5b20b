"""Pruning masks: per-row magnitude, Wanda (|W| times input norm), N:M and global magnitude."""

from __future__ import annotations

import torch
from torch import Tensor


def row_mask(scores: Tensor, sparsity: float) -> Tensor:
    """Keep-mask dropping the ``round(sparsity * in)`` lowest scores of every row.

    Args:
        scores: (out, in) importance of each weight; higher = more important.
        sparsity: fraction of each row to drop, in [0, 1).

    Returns:
        (out, in) bool tensor, True = keep.
    """
    n_drop = round(sparsity * scores.shape[1])  # Python rounding, as torch.nn.utils.prune
    mask = torch.ones_like(scores, dtype=torch.bool)
    if n_drop:
        drop = torch.topk(scores, n_drop, dim=1, largest=False).indices  # (out, n_drop)
        mask.scatter_(1, drop, False)
    return mask


def magnitude_mask(weight: Tensor, sparsity: float) -> Tensor:
    """Keep-mask zeroing the smallest ``|w|`` of each output row (exactly round(s*in) per row).

    Args:
        weight: (out, in) weight matrix.
        sparsity: fraction of each row to zero, in [0, 1).

    Returns:
        (out, in) bool tensor, True = keep.
    """
    return row_mask(weight.abs(), sparsity)


def wanda_scores(weight: Tensor, act_norm: Tensor) -> Tensor:
    """Wanda importance ``|W_ij| * ||X_j||_2`` (Sun et al., 2023).

    Args:
        weight: (out, in) weight matrix.
        act_norm: (in,) L2 norm of each input channel over the calibration tokens.

    Returns:
        (out, in) scores, compared within each output row.
    """
    return weight.abs() * act_norm.to(weight.dtype).unsqueeze(0)


def nm_mask(scores: Tensor, n: int, m: int) -> Tensor:
    """Keep-mask with the ``n`` highest scores of every ``m`` consecutive inputs of a row.

    A last, partial group of ``g < m`` weights keeps ``min(n, g)`` of them.

    Args:
        scores: (out, in) importance of each weight.
        n: weights kept per group.
        m: group length along the input dimension.

    Returns:
        (out, in) bool tensor, True = keep.
    """
    out_features, in_features = scores.shape
    pad = (-in_features) % m
    padded = torch.nn.functional.pad(scores.float(), (0, pad), value=float("-inf"))
    groups = padded.reshape(out_features, -1, m)  # (out, groups, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, torch.topk(groups, n, dim=2).indices, True)
    return keep.reshape(out_features, -1)[:, :in_features]


def global_masks(scores: list[Tensor], sparsity: float) -> list[Tensor]:
    """Keep-masks dropping the ``round(sparsity * total)`` lowest scores over all tensors.

    Args:
        scores: importance tensors of several layers (any shapes).
        sparsity: fraction of all their entries to drop, in [0, 1).

    Returns:
        One bool mask per tensor, True = keep.
    """
    flat = torch.cat([s.reshape(-1) for s in scores])  # (total,)
    keep = torch.ones_like(flat, dtype=torch.bool)
    n_drop = round(sparsity * flat.numel())
    if n_drop:
        keep[torch.topk(flat, n_drop, largest=False).indices] = False
    return [
        part.reshape(s.shape)
        for part, s in zip(keep.split([s.numel() for s in scores]), scores, strict=True)
    ]


def satisfies_nm(weight: Tensor, n: int, m: int) -> bool:
    """Whether every group of ``m`` consecutive inputs of a row has at most ``n`` non-zeros."""
    out_features, in_features = weight.shape
    pad = (-in_features) % m
    nonzero = torch.nn.functional.pad(weight != 0, (0, pad), value=False)
    return bool((nonzero.reshape(out_features, -1, m).sum(2) <= n).all())
