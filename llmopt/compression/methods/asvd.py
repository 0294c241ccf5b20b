"""Activation-aware low rank: truncate the SVD of W·L, with L Lᵀ = XᵀX from calibration inputs.

Truncating ``W`` itself minimises ``‖W − Ŵ‖``; what matters is the output error
``‖X(W − Ŵ)ᵀ‖ = ‖(W − Ŵ) L‖``. Whitening by the Cholesky factor ``L`` (SVD-LLM, Wang et al.
2024) makes the truncation of ``W L`` the optimal one for the outputs; ``L⁻¹`` is folded back
into the second factor. ASVD's per-channel activation scaling is the diagonal special case.
"""

from __future__ import annotations

import torch

from llmopt.compression.lowrank import svd_factors
from llmopt.compression.methods.svd import install
from llmopt.compression.registry import Method, register
from llmopt.compression.targets import get_weight

DAMP = 0.01  # fraction of mean(diag XᵀX) added: keeps L invertible when some inputs never vary

FORMULA = (
    r"**Activation-aware low rank** $X^\top X = L L^\top$, $W L \approx U_r \Sigma_r V_r^\top$, "
    r"$\hat W = U_r \Sigma_r V_r^\top L^{-1}$ — the directions dropped are those that change "
    r"the layer's *outputs* on real text least, not those smallest in $W$ itself: "
    r"$\lVert X(W-\hat W)^\top \rVert_F$ is minimal among rank-$r$ matrices."
)


def whitening(xtx: torch.Tensor, damp: float = DAMP) -> torch.Tensor:
    """Lower Cholesky factor L of ``XᵀX + λ·mean(diag)·I`` (float64)."""
    h = xtx.double()
    h = h + damp * torch.diag(h).mean().clamp_min(1e-12) * torch.eye(h.shape[0], dtype=h.dtype)
    return torch.linalg.cholesky(h)


@torch.no_grad()
def factors(weight: torch.Tensor, xtx: torch.Tensor, rank: int):
    """(A (out, r), B (r, in), singular values of W·L): ``A @ B`` is the output-optimal Ŵ."""
    chol = whitening(xtx)
    u, sigma, vh = torch.linalg.svd(weight.double() @ chol, full_matrices=False)  # W L
    root = sigma[:rank].sqrt()
    a = u[:, :rank] * root  # (out, r), balanced as svd_factors does
    b_white = root.unsqueeze(1) * vh[:rank]  # (r, in)
    b = torch.linalg.solve_triangular(chol, b_white, upper=False, left=False)  # B' L⁻¹
    return a.to(weight.dtype), b.to(weight.dtype), sigma


@torch.no_grad()
def _apply(ctx, names: list[str], stats) -> None:
    for n in names:
        weight = get_weight(ctx.model.get_submodule(n))
        if n in stats:
            a, b, _ = factors(weight, stats[n].xtx, ctx.config.rank)
        else:
            a, b, _ = svd_factors(weight, ctx.config.rank)
            ctx.note(n, "no activations: plain SVD")
        install(ctx, n, a, b)


def scaled_spectrum(weight, xtx, rank: int) -> dict:
    """Spectra of ``W`` and of the whitened ``W·L`` (``L Lᵀ = XᵀX``), and what rank r keeps.

    Returns:
        ``"energy_plain"``, ``"energy_scaled"`` (cumulative Σσ²/Σσ² of W and of W·L),
        ``"output_error_svd"``, ``"output_error_aware"`` (relative output errors of the two
        rank-``rank`` truncations on the texts), ``"rank"``.
    """
    from llmopt.errors import LlmoptError
    from llmopt.explain import output_error

    w = torch.as_tensor(weight, dtype=torch.float32)
    xtx = torch.as_tensor(xtx, dtype=torch.float64)
    full = min(w.shape)
    if not 1 <= rank <= full:
        raise LlmoptError(f"rank must be between 1 and {full} for a {tuple(w.shape)} weight")
    a, b, sigma = svd_factors(w, rank)
    a2, b2, sigma2 = factors(w, xtx, rank)

    def energy(s):
        s = s.double() ** 2
        return (torch.cumsum(s, 0) / s.sum()).numpy()

    return {
        "energy_plain": energy(sigma),
        "energy_scaled": energy(sigma2),
        "output_error_svd": output_error(w, a @ b, xtx),
        "output_error_aware": output_error(w, a2 @ b2, xtx),
        "rank": rank,
    }


def _draw(scene) -> tuple:
    from llmopt import figures

    rank = scene.rank
    out = scaled_spectrum(scene.weight, scene.stats()["xtx"], rank)
    caption = (
        f"Output error on training texts at rank {rank}: plain SVD "
        f"{out['output_error_svd']:.3f}, activation-aware "
        f"{out['output_error_aware']:.3f}.{scene.off_rank}"
    )
    title = "Energy of W and of W·L: whitening concentrates what the outputs use"
    fig = figures.scaled_spectrum_figure(out["energy_plain"], out["energy_scaled"], rank,
                                         title=title)  # fmt: skip
    return fig, caption


METHOD = register(
    Method(
        name="activation-aware",
        position=1,
        kind="lowrank",
        label="Activation-aware SVD",
        summary="truncated SVD of W whitened by calibration inputs (SVD-LLM)",
        help="Truncates the SVD of W·L, where L Lᵀ = XᵀX is measured on training texts, then "
        "folds L⁻¹ back: the discarded directions are those that matter least for the layer's "
        "outputs. Same rank, smaller output error than plain SVD.",
        formula=FORMULA,
        apply=_apply,
        stats=("hessian",),
        picture="scaled_spectrum",
        draw=_draw,
        reference="Wang et al., 2024 (SVD-LLM); Yuan et al., 2023 (ASVD)",
    )
)
