"""SparseGPT: prune with Optimal Brain Surgeon updates that rebuild each layer's output."""

from __future__ import annotations

import torch

from llmopt.compression.methods.magnitude import prune_by_scores
from llmopt.compression.obs import Grid, inverse_hessian_factor, obs_columns
from llmopt.compression.registry import Method, register
from llmopt.compression.targets import get_weight, set_weight

FORMULA = (
    r"**SparseGPT** prune $w_m$ where $w_m^2 / [H^{-1}]_{mm}^2$ is smallest, then update the "
    r"remaining weights $\delta = -\frac{w_m}{[H^{-1}]_{mm}} H^{-1}_{:,m}$ with "
    r"$H = 2XX^\top$ from calibration inputs — the layer's output is rebuilt column by column, "
    r"so pruning costs far less accuracy than zeroing alone. With GPTQ it prunes and "
    r"quantizes in the same pass."
)


def kept(rows: int, cols: int, config) -> int:
    """Weights left non-zero: N:M per group, or exactly round(s·rows·cols) removed in all."""
    if config.nm:
        n, m = config.nm
        return rows * ((cols // m) * n + min(n, cols % m))
    return rows * cols - round(config.sparsity * rows * cols)


@torch.no_grad()
def prune_layer(weight, hessian, sparsity: float, nm, *, grid=None, factored=None):
    """SparseGPT of one (out, in) weight with its Hessian (N:M when ``nm``; with ``grid``,
    quantized in the same pass): (new weight, keep-mask, scales, zero points).
    ``factored``: ``inverse_hessian_factor(hessian)`` if already computed (layers sharing an
    input share it; ``hessian`` is then unused)."""
    upper, dead = factored if factored is not None else inverse_hessian_factor(hessian)
    weight = weight.clone()
    weight[:, dead] = 0.0
    return obs_columns(weight, upper, grid=grid, sparsity=0.0 if nm else sparsity, nm=nm)


@torch.no_grad()
def _apply(ctx, names: list[str], stats) -> None:
    cfg = ctx.config
    joint = cfg.bits is not None and cfg.quant_method == "gptq"
    grid = Grid(cfg.bits, cfg.group_size, cfg.asymmetric) if joint else None
    missing = [n for n in names if n not in stats]
    if missing:  # no inputs measured: fall back to magnitude for those
        prune_by_scores(
            ctx, missing, {n: get_weight(ctx.model.get_submodule(n)).abs() for n in missing}
        )
        for n in missing:
            ctx.note(n, "no activations: magnitude")
    factors: dict[int, tuple] = {}  # id(stats) -> its factor: layers sharing an input share it
    for n in names:
        if n in missing:
            continue
        weight = get_weight(ctx.model.get_submodule(n)).float()
        ident = id(stats[n])
        if ident not in factors:
            factors[ident] = inverse_hessian_factor(stats[n].hessian())
        new, keep, scales, zeros = prune_layer(
            weight, None, cfg.sparsity, cfg.nm, grid=grid, factored=factors[ident]
        )
        ctx.masks[n] = keep
        if joint:
            ctx.set_on_grid(n, new, scales, zeros)
            ctx.note(n, "pruned and GPTQ-quantized in one SparseGPT pass")
        else:
            set_weight(ctx.model.get_submodule(n), new)


def picture_data(weight, xtx, sparsity: float, pattern: str = "unstructured", *, rows: int = 16,
                 cols: int = 32) -> dict:  # fmt: skip
    """SparseGPT's keep-mask (top-left block) and the output errors of SparseGPT and magnitude
    pruning at the same sparsity: ``{"mask", "output_error_sparsegpt",
    "output_error_magnitude"}``."""
    from llmopt.compression.config import parse_pattern
    from llmopt.compression.prune import magnitude_mask, nm_mask
    from llmopt.explain import output_error

    w = torch.as_tensor(weight, dtype=torch.float32)
    xtx = torch.as_tensor(xtx, dtype=torch.float64)
    nm = parse_pattern(pattern)
    hessian = 2.0 * xtx / max(float(torch.diag(xtx).mean()), 1e-30)
    new, keep, _, _ = prune_layer(w, hessian, sparsity, nm)
    magnitude = w * (nm_mask(w.abs(), *nm) if nm else magnitude_mask(w, sparsity))
    cols = max(nm[1], cols - cols % nm[1]) if nm else cols
    return {
        "mask": keep.numpy()[:rows, :cols],
        "output_error_sparsegpt": output_error(w, new, xtx),
        "output_error_magnitude": output_error(w, magnitude, xtx),
    }


def _draw(scene) -> tuple:
    from llmopt import figures

    config, sparsity = scene.config, scene.sparsity
    out = picture_data(scene.weight, scene.stats()["xtx"], sparsity, config.sparsity_pattern)
    nm = config.nm
    caption = (
        f"Output error on training texts at {sparsity:.0%}: SparseGPT "
        f"{out['output_error_sparsegpt']:.3f}, magnitude "
        f"{out['output_error_magnitude']:.3f}.{scene.off_prune}"
    )
    fig = figures.mask_figure(out["mask"], title="SparseGPT mask, top-left block",
                              m=nm[1] if nm else None)  # fmt: skip
    return fig, caption


METHOD = register(
    Method(
        name="sparsegpt",
        position=2,
        kind="prune",
        label="SparseGPT",
        summary="prune with OBS weight updates from calibration inputs (joint with gptq)",
        help="Prunes by w²/[H⁻¹]ₘₘ² and updates the remaining weights so the layer's output on "
        "training texts changes as little as possible (Optimal Brain Surgeon). Unstructured or "
        "N:M; with GPTQ quantization it prunes and quantizes in one pass.",
        formula=FORMULA,
        apply=_apply,
        stats=("hessian",),
        picture="obs",
        draw=_draw,
        kept=kept,
        reference="Frantar & Alistarh, 2023",
    )
)
