"""Round-to-nearest quantization: every weight to the nearest level of its row's (group's) grid."""

from __future__ import annotations

import torch

from llmopt.compression.quantize import rtn_quantize
from llmopt.compression.registry import Method, register
from llmopt.compression.targets import get_weight

FORMULA = (
    r"**Round to nearest** symmetric $\Delta = \max|w| / (2^{b-1}-1)$, "
    r"$\hat w = \Delta \cdot \mathrm{round}(w/\Delta)$ ($2^b-1$ levels); asymmetric "
    r"$\Delta = (\max w - \min w)/(2^b-1)$, $\hat w = \Delta\,(q - z)$, "
    r"$q = \mathrm{round}(w/\Delta) + z \in [0, 2^b-1]$ with an integer zero point $z$ "
    r"($2^b$ levels) — store each weight as a small integer "
    r"and one step $\Delta$ per row (or group); fewer bits mean a coarser grid."
)


@torch.no_grad()
def _apply(ctx, names: list[str], _stats) -> None:
    cfg = ctx.config
    for n in names:
        weight = get_weight(ctx.model.get_submodule(n))
        ctx.set_on_grid(
            n, *rtn_quantize(weight, cfg.bits, cfg.group_size, asymmetric=cfg.asymmetric)
        )


def _draw(scene) -> tuple:
    from llmopt import explain, figures

    b, g = scene.bits, scene.group_size
    q = explain.quant_grid(scene.weight, b, g)
    what = "its first group" if g else "one scale per row"
    title = f"Row 0: {b}-bit grid ({what}), step Δ = {q['step']:.3g}"
    caption = f"Mean squared rounding error of these weights: {q['mse']:.2e}.{scene.off_bits}"
    return figures.quant_hist_figure(q["weights"], q["grid"], title=title), caption


METHOD = register(
    Method(
        name="rtn",
        position=0,
        kind="quantize",
        label="Round to nearest",
        summary="round each weight to its grid (no data needed)",
        help="Round every weight to the nearest grid level, independently (no data needed).",
        formula=FORMULA,
        apply=_apply,
        picture="grid",
        draw=_draw,
    )
)
