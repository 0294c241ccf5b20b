"""Magnitude pruning: zero the weights with the smallest |w| (per row, N:M, or over all layers)."""

from __future__ import annotations

import torch
from torch import Tensor

from llmopt.compression import prune as P
from llmopt.compression.registry import Method, register
from llmopt.compression.targets import get_weight, set_weight

FORMULA = (
    r"**Magnitude pruning** keep the weights with the largest $|W_{ij}|$ — small weights "
    r"change the output least, so they are set to zero first."
)


def kept(rows: int, cols: int, config) -> int:
    """Weights left non-zero in a (rows, cols) matrix: round(s·in) dropped per row, or N:M."""
    if config.nm:
        n, m = config.nm
        return rows * ((cols // m) * n + min(n, cols % m))
    if config.sparsity_scope == "global":  # one threshold over all layers: the same share
        return rows * cols - round(config.sparsity * rows * cols)
    return rows * (cols - round(config.sparsity * cols))


@torch.no_grad()
def prune_by_scores(ctx, names: list[str], scores: dict[str, Tensor]) -> None:
    """Zero the lowest-scoring weights of each matrix: per row, per N:M group, or globally."""
    cfg = ctx.config
    if cfg.nm:
        masks = {n: P.nm_mask(scores[n], *cfg.nm) for n in names}
    elif cfg.sparsity_scope == "global":
        parts = P.global_masks([scores[n] for n in names], cfg.sparsity)
        masks = dict(zip(names, parts, strict=True))
    else:
        masks = {n: P.row_mask(scores[n], cfg.sparsity) for n in names}
    for n in names:
        module = ctx.model.get_submodule(n)
        set_weight(module, get_weight(module) * masks[n])
        ctx.masks[n] = masks[n].bool()


def mask_picture(scene, *, method: str = "magnitude", scores=None) -> tuple:
    """The top-left block of a keep mask ranked by ``scores`` (default |W|), as the engine's
    layer scope or N:M pattern ranks it; shared by the pruning methods that only rank."""
    from llmopt import explain, figures

    config = scene.config
    nm = config.nm
    block = explain.mask_block(scene.weight, scene.sparsity, config.sparsity_pattern,
                               scores=scores)  # fmt: skip
    title = f"{config.sparsity_pattern.capitalize()} {method} mask, top-left block"
    return figures.mask_figure(block, title=title, m=nm[1] if nm else None), title


def _draw(scene) -> tuple:
    fig, _ = mask_picture(scene)
    caption = f"Sparsity {scene.sparsity:.0%}: the smallest |w| of each row are zeroed."
    return fig, caption + scene.off_prune


def _apply(ctx, names: list[str], _stats) -> None:
    prune_by_scores(ctx, names, {n: get_weight(ctx.model.get_submodule(n)).abs() for n in names})


METHOD = register(
    Method(
        name="magnitude",
        position=0,
        kind="prune",
        label="Magnitude",
        summary="zero the smallest |w| of each row (no data needed)",
        help="Zero the smallest |w| in each row. Needs no data; the baseline every pruning "
        "method is compared with.",
        formula=FORMULA,
        apply=_apply,
        picture="mask",
        draw=_draw,
        kept=kept,
        gradual=True,
        reference="Han et al., 2015",
    )
)
