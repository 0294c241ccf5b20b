"""Wanda: prune by |W_ij|·||X_j||, the weight times its input's size on calibration text."""

from __future__ import annotations

import torch

from llmopt.compression.methods.magnitude import kept, mask_picture, prune_by_scores
from llmopt.compression.prune import wanda_scores
from llmopt.compression.registry import Method, register
from llmopt.compression.targets import get_weight

FORMULA = (
    r"**Wanda** score $|W_{ij}| \cdot \lVert X_j \rVert_2$ — a weight matters if it is large "
    r"*and* its input feature $j$ is usually large on real text, so both are multiplied."
)


@torch.no_grad()
def _apply(ctx, names: list[str], stats) -> None:
    scores = {}
    for n in names:
        weight = get_weight(ctx.model.get_submodule(n))
        if n in stats:
            scores[n] = wanda_scores(weight, stats[n].norms)
        else:  # never called in a forward pass: nothing to weigh it by
            scores[n] = weight.abs()
            ctx.note(n, "no activations: magnitude")
    prune_by_scores(ctx, names, scores)


def picture_scores(weight, xtx) -> torch.Tensor:
    """Wanda's scores of a weight from its layer's ``XᵀX`` (``‖X_j‖ = sqrt((XᵀX)_jj)``), as the
    engine computes them from calibration norms."""
    w = torch.as_tensor(weight, dtype=torch.float32)
    norms = torch.diag(torch.as_tensor(xtx, dtype=torch.float64)).clamp_min(0).sqrt().float()
    return wanda_scores(w, norms)


def _draw(scene) -> tuple:
    scores = picture_scores(scene.weight, scene.stats()["xtx"])
    fig, _ = mask_picture(scene, method="Wanda |W|·‖X‖", scores=scores.numpy())
    caption = (f"Sparsity {scene.sparsity:.0%}: in each row the smallest |w|·‖x‖ are zeroed, "
               "‖x‖ measured on training texts.")  # fmt: skip
    return fig, caption + scene.off_prune


METHOD = register(
    Method(
        name="wanda",
        position=1,
        kind="prune",
        label="Wanda",
        summary="zero the smallest |w|·||x|| of each row (calibration texts)",
        help="Zero the smallest |w|·‖x‖, where ‖x‖ is the input feature's size measured on "
        "training texts — usually better than magnitude at high sparsity.",
        formula=FORMULA,
        apply=_apply,
        stats=("norms",),
        picture="mask",
        draw=_draw,
        kept=kept,
        gradual=True,
        reference="Sun et al., 2023",
    )
)
