"""GPTQ: quantize column by column, feeding each column's rounding error to the columns after it."""

from __future__ import annotations

import torch

from llmopt.compression.obs import Grid, inverse_hessian_factor, obs_columns
from llmopt.compression.quantize import rtn_quantize
from llmopt.compression.registry import Method, register
from llmopt.compression.targets import get_weight

FORMULA = (
    r"**GPTQ** for each column $j$: $q_j = \mathrm{round}(w_j)$, error "
    r"$e_j = (w_j - q_j)/[H^{-1}]_{jj}$, then $W_{:,k} \leftarrow W_{:,k} - e_j [H^{-1}]_{jk}$ "
    r"for the columns $k > j$ not yet rounded, with $H = 2XX^\top$ from calibration inputs — "
    r"later columns absorb earlier rounding errors, so the layer's *output* stays close."
)


def factor(hessian, config) -> tuple:
    """What GPTQ needs of a Hessian, whatever the weight: (dead columns, the column order or
    None, the inverse's upper Cholesky factor in that order). Layers sharing an input (q/k/v)
    share it."""
    dead = torch.diag(hessian) == 0
    perm = None
    if config.act_order:
        perm = torch.argsort(torch.diag(hessian), descending=True, stable=True)
        hessian = hessian[perm][:, perm]
    upper, _ = inverse_hessian_factor(hessian)
    return dead, perm, upper


@torch.no_grad()
def quantize_layer(weight, hessian, config, *, factored: tuple | None = None):
    """GPTQ of one (out, in) weight with its Hessian: (new weight, scales, zero points or None).

    Weights that are already zero because pruning removed them stay zero (their error is fed
    forward like any other); with ``act_order`` the columns go by decreasing ``diag(H)``.
    ``factored``: ``factor(hessian, config)`` if already computed (``hessian`` is then unused).
    """
    weight = weight.float().clone()
    frozen = weight == 0
    dead, perm, upper = factored if factored is not None else factor(hessian, config)
    weight[:, dead] = 0.0
    grid = Grid(config.bits, config.group_size, config.asymmetric)
    new, _keep, scales, zeros = obs_columns(weight, upper, grid=grid, perm=perm, frozen=frozen)
    return new, scales, zeros


@torch.no_grad()
def _apply(ctx, names: list[str], stats) -> None:
    cfg = ctx.config
    factors: dict[int, tuple] = {}  # id(stats) -> its factor: layers sharing an input share it
    for n in names:
        module = ctx.model.get_submodule(n)
        if n in stats:
            ident = id(stats[n])
            if ident not in factors:
                factors[ident] = factor(stats[n].hessian(), cfg)
            new, scales, zeros = quantize_layer(
                get_weight(module), None, cfg, factored=factors[ident]
            )
        else:
            new, scales, zeros = rtn_quantize(
                get_weight(module), cfg.bits, cfg.group_size, asymmetric=cfg.asymmetric
            )
            ctx.note(n, "no activations: round to nearest")
        ctx.set_on_grid(n, new, scales, zeros)


def picture_data(weight, xtx, bits: int, group_size: int | None = None) -> dict:
    """How GPTQ's error feedback differs from rounding to nearest, column by column.

    Returns:
        ``{"rtn", "gptq"}``: the relative output error ``‖X(W − Ŵ)ᵀ‖ / ‖XWᵀ‖`` on the texts
        caused by the input columns ``0..j`` (quantized left to right), for every ``j`` — the
        last value is the whole layer's output error, also in ``"output_error_rtn"`` and
        ``"output_error_gptq"``; ``"bits"``.
    """
    from llmopt.compression.config import CompressionConfig
    from llmopt.explain import output_error

    w = torch.as_tensor(weight, dtype=torch.float32)
    xtx = torch.as_tensor(xtx, dtype=torch.float64)
    config = CompressionConfig(bits=bits, group_size=group_size, quant_method="gptq")
    rtn = rtn_quantize(w, bits, group_size)[0]
    gptq = quantize_layer(w, 2.0 * xtx / max(float(torch.diag(xtx).mean()), 1e-30), config)[0]
    norm = float(torch.einsum("oi,ij,oj->", w.double(), xtx, w.double()).clamp_min(1e-300).sqrt())

    def prefix(approx: torch.Tensor):  # error of the first j+1 columns, with their cross terms
        diff = (w - approx).double()
        terms = (diff.T @ diff) * xtx  # (in, in)
        return (torch.diagonal(terms.cumsum(0).cumsum(1)).clamp_min(0).sqrt() / norm).numpy()

    return {
        "rtn": prefix(rtn),
        "gptq": prefix(gptq),
        "output_error_rtn": output_error(w, rtn, xtx),
        "output_error_gptq": output_error(w, gptq, xtx),
        "bits": bits,
    }


def _draw(scene) -> tuple:
    from llmopt import figures

    bits = scene.bits
    out = picture_data(scene.weight, scene.stats()["xtx"], bits, scene.group_size)
    rtn, gptq = out["output_error_rtn"], out["output_error_gptq"]
    verdict = "lower" if gptq < rtn else "not lower"
    title = f"Output error as columns are quantized: GPTQ ends {verdict} than rounding"
    caption = (
        f"Relative output error on training texts at {bits} bits: round to nearest "
        f"{rtn:.3f}, GPTQ {gptq:.3f}. GPTQ changes later columns to cancel the errors of "
        f"earlier ones.{scene.off_bits}"
    )
    return figures.gptq_figure(out["rtn"], out["gptq"], title=title), caption


METHOD = register(
    Method(
        name="gptq",
        position=1,
        kind="quantize",
        label="GPTQ",
        summary="round column by column with Hessian error feedback (calibration texts)",
        help="Rounds one input column at a time and shifts the remaining columns to cancel the "
        "rounding error on the layer's output, using H = 2XXᵀ measured on training texts. "
        "Holds 3–4-bit weights far better than rounding to nearest.",
        formula=FORMULA,
        apply=_apply,
        stats=("hessian",),
        picture="gptq",
        draw=_draw,
        reference="Frantar et al., 2022",
    )
)
