"""Data for the teaching pictures: masks, quantization grids and spectra of a real weight."""

from __future__ import annotations

import numpy as np
import torch

from llmopt.compression.config import CompressionConfig, parse_pattern
from llmopt.compression.lowrank import svd_factors
from llmopt.compression.prune import magnitude_mask, nm_mask
from llmopt.compression.quantize import fake_quantize, qmax, rtn_quantize
from llmopt.compression.targets import find_targets, in_blocks
from llmopt.compression.targets import get_weight as layer_weight
from llmopt.errors import LlmoptError
from llmopt.loaded import LoadedModel, model_lock

QUERY_NAMES = ("query", "q_lin", "q_proj", "c_attn")  # the attention query projection


def weight_matrices(loaded: LoadedModel) -> list[str]:
    """Names of the compressible weight layers, in model order (the compression engine's own
    targeting: every Linear / GPT-2 Conv1D inside the transformer blocks)."""
    return find_targets(loaded.model, in_blocks(loaded.model))


def get_weight(loaded: LoadedModel, name: str | None = None) -> tuple[str, np.ndarray]:
    """One weight matrix as a float32 ``(out, in)`` array (GPT-2 ``Conv1D`` is transposed).

    Args:
        loaded: the model.
        name: a name from ``weight_matrices``; default: the first block's attention query
            projection (GPT-2's fused query/key/value ``c_attn``).

    Raises:
        LlmoptError: an unknown layer name.
    """
    names = weight_matrices(loaded)
    if not names:
        raise LlmoptError(f"model {loaded.name!r} has no linear layers in its transformer blocks")
    if name is None:
        queries = [n for n in names if n.rsplit(".", 1)[-1] in QUERY_NAMES]
        name = queries[0] if queries else names[0]
    if name not in names:
        raise LlmoptError(
            f"{name!r} is not a compressible layer of {loaded.name!r}; "
            f"choose one of: {', '.join(names[:8])}{', …' if len(names) > 8 else ''}"
        )
    weight = layer_weight(loaded.model.get_submodule(name)).float()  # (out, in)
    return name, weight.contiguous().numpy().copy()


def _tensor(weight) -> torch.Tensor:
    return torch.as_tensor(np.asarray(weight, dtype=np.float32))


def nm_block(weight, n: int, m: int, *, rows: int = 16, cols: int = 32) -> np.ndarray:
    """The top-left ``rows × cols`` block of the N:M keep mask (N kept of every M along a row).

    ``cols`` is rounded down to a whole number of groups so every group shown is complete.
    """
    if not 0 < n < m:
        raise LlmoptError(f"N:M needs 0 < N < M, got {n}:{m}")
    mask = nm_mask(_tensor(weight).abs(), n, m).numpy().astype(bool)
    cols = max(m, cols - cols % m)
    return mask[:rows, :cols]


def mask_block(
    weight, sparsity: float, pattern: str = "unstructured", *, rows: int = 16, cols: int = 32
) -> np.ndarray:
    """The top-left block of a magnitude keep mask: unstructured (the smallest ``sparsity``
    share of every row zeroed, as the engine's layer scope does), or an N:M pattern such as
    ``"2:4"`` (whose sparsity is fixed at 1 − N/M)."""
    nm = parse_pattern(pattern)
    if nm is not None:
        return nm_block(weight, *nm, rows=rows, cols=cols)
    if not 0.0 <= sparsity < 1.0:
        raise LlmoptError(f"sparsity must be in [0, 1), got {sparsity}")
    mask = magnitude_mask(_tensor(weight), sparsity).numpy().astype(bool)
    return mask[:rows, :cols]


def quant_grid(weight, bits: int, group_size: int | None = None, *, row: int = 0) -> dict:
    """How one row (or, with groups, the first group of one row) is quantized.

    Returns:
        ``{"weights", "dequantized"}`` (the row's values before/after), ``"grid"`` (every level
        ``scale · q`` for integers ``|q| ≤ 2^(bits−1) − 1``), ``"step"`` (the scale Δ),
        ``"mse"`` (mean squared error over the shown values), ``"bits"``, ``"group_size"``,
        ``"row"``.

    Raises:
        LlmoptError: a row outside the matrix, or settings the quantizer rejects.
    """
    w = _tensor(weight)
    if not 0 <= row < w.shape[0]:
        raise LlmoptError(f"row {row} is outside the weight's {w.shape[0]} rows")
    try:
        deq, scales = fake_quantize(w, bits, group_size)
    except LlmoptError:
        raise
    except ValueError as exc:
        raise LlmoptError(
            f"{exc}; choose a group size that divides {w.shape[1]}, or None (one scale per row)"
        ) from None
    width = w.shape[1] if group_size is None else min(group_size, w.shape[1])
    scale = float(scales.reshape(w.shape[0], -1)[row, 0])
    levels = qmax(bits)
    values = w[row, :width].numpy()
    deq_values = deq[row, :width].detach().float().numpy()
    return {
        "weights": values,
        "dequantized": deq_values,
        "grid": scale * np.arange(-levels, levels + 1, dtype=np.float64),
        "step": scale,
        "mse": float(np.mean((values.astype(np.float64) - deq_values) ** 2)),
        "bits": bits,
        "group_size": group_size,
        "row": row,
    }


def spectrum(weight, rank: int | None = None) -> dict:
    """Singular values of a weight and what a rank-``rank`` truncation keeps.

    Returns:
        ``"singular_values"`` (descending), ``"energy"`` (cumulative Σσ_i² / Σσ², so
        ``energy[r-1]`` is what rank r keeps), ``"energy_kept"``, ``"rel_error"`` (the
        Eckart–Young optimum sqrt(Σ_{i>r} σ_i²) / ‖W‖_F), ``"rel_error_factors"`` (the same
        measured from the engine's factors A·B), ``"rank"``.

    Raises:
        LlmoptError: a rank outside 1..min(out, in).
    """
    w = _tensor(weight)
    full = min(w.shape)
    rank = full if rank is None else int(rank)
    if not 1 <= rank <= full:
        raise LlmoptError(f"rank must be between 1 and {full} for a {tuple(w.shape)} weight")
    a, b, sigma = svd_factors(w, rank)
    s = sigma.detach().double().numpy()
    energy = np.cumsum(s**2) / np.sum(s**2)
    tail = float(np.sqrt(np.sum(s[rank:] ** 2)))
    norm = float(np.linalg.norm(w.double().numpy()))
    measured = float(torch.linalg.norm(w.double() - a.double() @ b.double()))
    return {
        "singular_values": s,
        "energy": energy,
        "energy_kept": float(energy[rank - 1]),
        "rel_error": tail / norm,
        "rel_error_factors": measured / norm,
        "rank": rank,
    }


def layer_statistics(loaded: LoadedModel, name: str, texts: list[str]) -> dict:
    """``XᵀX`` (float64) and ``max|X_j|`` of one layer's inputs over ``texts`` (real tokens).

    Raises:
        LlmoptError: no texts, or a layer no forward pass reaches.
    """
    from llmopt.compression.calibrate import Feeder

    texts = [t for t in texts if str(t).strip()]
    if not texts:
        raise LlmoptError("the pictures of calibrated methods need a few texts")
    feeder = Feeder(
        loaded.model,
        loaded.tokenizer,
        texts,
        max_length=loaded.max_length,
        blocks=None,
        base_id=id(loaded.model),
    )
    with model_lock(loaded.model):  # hooks on a model other sessions may be running or copying
        stats = feeder.stats(0, [name], ("hessian", "absmax")).get(name)
    if stats is None:
        raise LlmoptError(f"no text reached layer {name!r}")
    return {"xtx": stats.xtx.double(), "absmax": stats.absmax.double(), "tokens": stats.tokens}


def _output_error(weight: torch.Tensor, approx: torch.Tensor, xtx: torch.Tensor) -> float:
    """``‖X(W − Ŵ)ᵀ‖_F / ‖X Wᵀ‖_F`` from ``XᵀX`` (no activations kept)."""
    diff = (weight - approx).double()
    num = torch.einsum("oi,ij,oj->", diff, xtx, diff)
    den = torch.einsum("oi,ij,oj->", weight.double(), xtx, weight.double())
    return float(num.clamp_min(0).sqrt() / den.clamp_min(1e-300).sqrt())


def gptq_columns(weight, xtx, bits: int, group_size: int | None = None) -> dict:
    """How GPTQ's error feedback differs from rounding to nearest, column by column.

    Returns:
        ``{"rtn", "gptq"}``: per input column, that column's share of the output error
        ``‖ΔW_:,j‖·sqrt(H_jj)``; ``"output_error_rtn"``, ``"output_error_gptq"``: the relative
        output errors ``‖X(W − Ŵ)ᵀ‖ / ‖XWᵀ‖`` on the texts; ``"bits"``.
    """
    from llmopt.compression.methods.gptq import quantize_layer

    w = _tensor(weight)
    xtx = torch.as_tensor(xtx, dtype=torch.float64)
    config = CompressionConfig(bits=bits, group_size=group_size, quant_method="gptq")
    rtn = rtn_quantize(w, bits, group_size)[0]
    gptq = quantize_layer(w, 2.0 * xtx / max(float(torch.diag(xtx).mean()), 1e-30), config)[0]
    scale = torch.diag(xtx).clamp_min(0).sqrt().float()
    return {
        "rtn": ((w - rtn).norm(dim=0) * scale).numpy(),
        "gptq": ((w - gptq).norm(dim=0) * scale).numpy(),
        "output_error_rtn": _output_error(w, rtn, xtx),
        "output_error_gptq": _output_error(w, gptq, xtx),
        "bits": bits,
    }


def scaled_spectrum(weight, xtx, rank: int) -> dict:
    """Spectra of ``W`` and of the whitened ``W·L`` (``L Lᵀ = XᵀX``), and what rank r keeps.

    Returns:
        ``"energy_plain"``, ``"energy_scaled"`` (cumulative Σσ²/Σσ² of W and of W·L),
        ``"output_error_svd"``, ``"output_error_aware"`` (relative output errors of the two
        rank-``rank`` truncations on the texts), ``"rank"``.
    """
    from llmopt.compression.methods.asvd import factors

    w = _tensor(weight)
    xtx = torch.as_tensor(xtx, dtype=torch.float64)
    full = min(w.shape)
    if not 1 <= rank <= full:
        raise LlmoptError(f"rank must be between 1 and {full} for a {tuple(w.shape)} weight")
    a, b, sigma = svd_factors(w, rank)
    a2, b2, sigma2 = factors(w, xtx, rank)

    def energy(s):
        s = s.double().numpy() ** 2
        return np.cumsum(s) / np.sum(s)

    return {
        "energy_plain": energy(sigma),
        "energy_scaled": energy(sigma2),
        "output_error_svd": _output_error(w, a @ b, xtx),
        "output_error_aware": _output_error(w, a2 @ b2, xtx),
        "rank": rank,
    }


def smoothing(weight, absmax, alpha: float) -> dict:
    """SmoothQuant's effect on one layer: each input channel's activation and weight range
    before and after smoothing with strength ``alpha``.

    Returns:
        ``"act_before"``, ``"act_after"`` (max |X_j|), ``"weight_before"``, ``"weight_after"``
        (max |W_:,j|), channels in their order, and ``"ratio_before"``, ``"ratio_after"``: the
        largest activation range over the median (how hard per-tensor int8 rounding is).
    """
    from llmopt.compression.methods.int8 import smoothing_scales

    w = _tensor(weight)
    act = torch.as_tensor(absmax, dtype=torch.float32)
    s = smoothing_scales(act, w, alpha)
    after = act / s
    w_before, w_after = w.abs().amax(0), (w * s.unsqueeze(0)).abs().amax(0)
    return {
        "act_before": act.numpy(),
        "act_after": after.numpy(),
        "weight_before": w_before.numpy(),
        "weight_after": w_after.numpy(),
        "ratio_before": float(act.max() / act.median().clamp_min(1e-12)),
        "ratio_after": float(after.max() / after.median().clamp_min(1e-12)),
        "alpha": alpha,
    }


def sparsegpt_block(
    weight, xtx, sparsity: float, pattern: str = "unstructured", *, rows: int = 16, cols: int = 32
) -> dict:
    """SparseGPT's keep-mask (top-left block) and the output errors of SparseGPT and magnitude
    pruning at the same sparsity.

    Returns:
        ``{"mask": bool block, "output_error_sparsegpt", "output_error_magnitude"}``.
    """
    from llmopt.compression.methods.sparsegpt import prune_layer

    w = _tensor(weight)
    xtx = torch.as_tensor(xtx, dtype=torch.float64)
    nm = parse_pattern(pattern)
    hessian = 2.0 * xtx / max(float(torch.diag(xtx).mean()), 1e-30)
    new, keep, _, _ = prune_layer(w, hessian, sparsity, nm)
    magnitude = w * (nm_mask(w.abs(), *nm) if nm else magnitude_mask(w, sparsity))
    cols = max(nm[1], cols - cols % nm[1]) if nm else cols
    return {
        "mask": keep.numpy()[:rows, :cols],
        "output_error_sparsegpt": _output_error(w, new, xtx),
        "output_error_magnitude": _output_error(w, magnitude, xtx),
    }


def method_formulas() -> dict[str, str]:
    """Each registered method's formula, by method name (from the registry)."""
    from llmopt.compression import registry

    return {m.name: m.formula for m in registry.all_methods()}


FORMULAS: dict[str, str] = {
    "attention": (
        r"**Attention** $\mathrm{softmax}\!\left(QK^\top/\sqrt{d_k}\right)V$ — each token asks a "
        r"question ($Q$), compares it with every token's key ($K$), and mixes their values "
        r"($V$) by how well they match; each row of the map sums to 1."
    ),
    "nm": (
        r"**N:M sparsity** keep $N$ of every $M$ consecutive weights in a row (e.g. 2:4) — a "
        r"regular pattern that sparse tensor cores can skip over for real speed-ups."
    ),
    "eckart_young": (
        r"**Eckart–Young** $\min_{\mathrm{rank}\,\hat W \le r}\lVert W-\hat W\rVert_F = "
        r"\sqrt{\sum_{i>r}\sigma_i^2}$ — truncated SVD is the best possible rank-$r$ "
        r"approximation, and its error is exactly the dropped singular values."
    ),
    "kl": (
        r"**KL divergence** $\mathrm{KL}(p\,\Vert\,q) = \sum_c p_c \log(p_c/q_c)$ — how much "
        r"the compressed model's probabilities $q$ surprise someone who believes the baseline's "
        r"$p$; 0 when they are identical."
    ),
    "js": (
        r"**Jensen–Shannon divergence** $\mathrm{JS} = \tfrac12\mathrm{KL}(p\Vert m) + "
        r"\tfrac12\mathrm{KL}(q\Vert m)$, $m = \tfrac12(p+q)$ — a symmetric, bounded version "
        r"of KL: 0 bits for identical attention rows, 1 bit for rows with no overlap."
    ),
    "agreement": (
        r"**Agreement** $\frac1n\sum_i [\hat y_i^{\mathrm{compressed}} = "
        r"\hat y_i^{\mathrm{baseline}}]$ — the share of texts whose predicted label did not "
        r"change; it measures fidelity to the original model, not correctness."
    ),
}
# the methods' own formulas come from the registry (one text per method, used everywhere)
_ALIASES = {
    "quantization": "rtn",
    "magnitude": "magnitude",
    "wanda": "wanda",
    "svd": "svd",
    "int8_dynamic": "int8",
}
FORMULAS.update({key: method_formulas()[name] for key, name in _ALIASES.items()})
