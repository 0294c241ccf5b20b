"""OWL: outlier-weighted layerwise sparsity (Yin et al., 2023), a non-uniform allocation of a
pruning budget over the transformer blocks.

A block whose Wanda scores ``|W_ij|·‖X_j‖`` hold more outliers (scores above ``M`` times the
block's mean score) is pruned less. With ``D_l`` the outlier ratio of block ``l``, the reference
code sets each block's density to the ratios rescaled onto ``[0, 2λ]``, shifted so that the
densities average ``1 - S``:

    d_l = (D_l - min D) / (max D - min D) · 2λ
    sparsity_l = 1 - (d_l - mean(d) + 1 - S) = S + mean(d) - d_l

so the sparsities average the target ``S`` (the blocks are the same size, so the number of
weights pruned is that of uniform pruning at ``S``) and span at most ``2λ``. Every pruning
method then prunes each block at its own sparsity (``CompressionConfig.layer_config``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from llmopt.compression.registry import Allocation, register_allocation
from llmopt.errors import LlmoptError


def outlier_ratio(scores: list[Tensor], m: float) -> float:
    """The share of a block's scores above ``m`` times their mean (all its matrices together,
    as the reference code concatenates them)."""
    flat = torch.cat([s.reshape(-1).double() for s in scores])
    if flat.numel() == 0:
        return 0.0
    return float((flat > m * flat.mean()).double().mean())


def owl_sparsities(ratios: list[float], target: float, lam: float) -> list[float]:
    """Each block's sparsity from its outlier ratio (the formula in the module docstring).

    Equal ratios (or one block) give every block the target.

    Raises:
        LlmoptError: a block sparsity outside [0, 1) (``λ`` too large for this target).
    """
    low, high = min(ratios), max(ratios)
    if high - low <= 0:
        return [float(target)] * len(ratios)
    density = [(r - low) / (high - low) * 2 * lam for r in ratios]
    mean = sum(density) / len(density)
    out = [float(target + mean - d) for d in density]
    if min(out) < 0 or max(out) >= 1:
        raise LlmoptError(
            f"owl_lambda {lam:g} is too large for sparsity {target:g}: a block's sparsity "
            f"would be {min(out) if min(out) < 0 else max(out):.3f}, outside [0, 1); choose "
            "a smaller owl_lambda"
        )
    return out


def allocate(scores: list[list[Tensor]], config) -> tuple[list[float], list[float]]:
    """(sparsity, outlier ratio) of each unit (a block's score matrices) under ``config``."""
    ratios = [outlier_ratio(unit, config.owl_m) for unit in scores]
    return owl_sparsities(ratios, config.sparsity, config.owl_lambda), ratios


ALLOCATION = register_allocation(
    Allocation(
        name="owl",
        label="OWL",
        summary="prune blocks with more activation outliers less (same average sparsity)",
        allocate=allocate,
        reference="Yin et al., Outlier Weighed Layerwise Sparsity (OWL), 2023",
    )
)
