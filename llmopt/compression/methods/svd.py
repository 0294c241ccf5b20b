"""Low rank by truncated SVD: each weight becomes two thin factors (Eckart–Young optimal in W)."""

from __future__ import annotations

import torch

from llmopt.compression.lowrank import LowRankLinear, break_even_rank, svd_factors
from llmopt.compression.registry import Method, register
from llmopt.compression.targets import get_bias, get_weight, is_conv1d, replace, set_weight

FORMULA = (
    r"**Low rank (SVD)** $W \approx U_r \Sigma_r V_r^\top$, energy kept "
    r"$\sum_{i\le r}\sigma_i^2 / \sum_i \sigma_i^2$ — a matrix is a sum of rank-one layers "
    r"ordered by importance $\sigma_i$; keeping the first $r$ stores $r(m+n)$ numbers "
    r"instead of $mn$."
)


@torch.no_grad()
def install(ctx, name: str, a, b) -> None:
    """Put ``a @ b`` in place of layer ``name``: two Linears below break-even, else dense."""
    module = ctx.model.get_submodule(name)
    weight, bias = get_weight(module), get_bias(module)
    r, even = b.shape[0], break_even_rank(*weight.shape)
    if r < even:
        replace(ctx.model, name, LowRankLinear(a, b, bias, conv1d=is_conv1d(module)))
        ctx.note(name, f"factorised: {weight.shape[1]} -> {r} -> {weight.shape[0]}")
    else:
        set_weight(module, (a @ b).to(weight.dtype))
        ctx.note(
            name,
            f"dense rank-{r} reconstruction: no size or speed gain (break-even rank {even:.1f})",
        )


@torch.no_grad()
def _apply(ctx, names: list[str], _stats) -> None:
    for n in names:
        a, b, _ = svd_factors(get_weight(ctx.model.get_submodule(n)), ctx.config.rank)
        install(ctx, n, a, b)


def _draw(scene) -> tuple:
    from llmopt import explain, figures

    rank = scene.rank
    spec = explain.spectrum(scene.weight, rank)
    caption = (
        f"Rank {rank} of {scene.full_rank} keeps {spec['energy_kept']:.1%} of the energy; "
        f"relative error {spec['rel_error']:.3f} (the Eckart–Young optimum).{scene.off_rank}"
    )
    return figures.spectrum_figure(spec["singular_values"], rank, energy=spec["energy"]), caption


METHOD = register(
    Method(
        name="svd",
        position=0,
        kind="lowrank",
        label="SVD",
        summary="truncated SVD of each weight (no data needed)",
        help="Replace each weight W (out×in) by two thin matrices A (out×r)·B (r×in) from its "
        "SVD: the best rank-r approximation of W itself.",
        formula=FORMULA,
        apply=_apply,
        picture="spectrum",
        draw=_draw,
    )
)
