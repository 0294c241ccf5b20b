"""The inverse-Hessian machinery GPTQ and SparseGPT share: Optimal Brain Surgeon, column by column.

For a layer ``y = W x`` calibrated on inputs X, the output error of changing W is measured by
``H = 2 X Xᵀ / n``. Both methods walk the columns of W in lazy blocks of 128: each column is
rounded (GPTQ) and/or pruned (SparseGPT), and its error is spread over the columns not yet
processed through the upper Cholesky factor of ``H⁻¹`` (Frantar et al., 2022; Frantar &
Alistarh, 2023), so later columns compensate for earlier ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from llmopt.compression.quantize import grid_params

BLOCK = 128  # columns per lazy batch, as in the reference code: updates stay in cache
DAMP = 0.01  # λ as a fraction of mean(diag H): the papers' default; keeps H invertible


@dataclass(frozen=True)
class Grid:
    """The quantization grid settings GPTQ rounds to."""

    bits: int
    group_size: int | None  # None: one scale per output row
    asymmetric: bool = False


def inverse_hessian_factor(h: Tensor, damp: float = DAMP) -> tuple[Tensor, Tensor]:
    """The upper Cholesky factor ``U`` of ``(H + λ·mean(diag H)·I)⁻¹`` (``H⁻¹ = Uᵀ U``).

    Columns whose input was always zero ("dead", ``H_jj = 0``) get ``H_jj = 1``: their weight
    cannot matter on the calibration data. If the damped matrix is still not positive definite
    (rounding), λ is raised tenfold until it is.

    Args:
        h: (in, in) the Hessian ``2 X Xᵀ / n``.
        damp: λ as a fraction of the mean diagonal.

    Returns:
        (U (in, in) float32 upper-triangular, dead (in,) bool).
    """
    # float32 as in the reference code: 4x faster, damped H is benign. J H J (J the reversal)
    # in one copy: H⁻¹ = Uᵀ U with U = J M⁻¹ J, M = chol(J H J)
    flipped = h.to(torch.float32).flip(0, 1)
    diag = flipped.diagonal()  # a view: J H J's diagonal is diag(H) reversed
    dead = (torch.diag(h) == 0).to(flipped.device)
    diag[dead.flip(0)] = 1.0
    mean_diag = diag.flip(0).mean()  # summed in H's own order, as before the reversal
    undamped = diag.clone()
    for attempt in range(6):
        # the damping on the diagonal in place: the same sums as adding λ·I, without an n×n copy
        torch.add(undamped, (damp * 10**attempt) * mean_diag, out=diag)
        chol, info = torch.linalg.cholesky_ex(flipped)
        if int(info) == 0:
            break
    eye = torch.eye(h.shape[0], dtype=flipped.dtype, device=flipped.device)
    upper = torch.linalg.solve_triangular(chol, eye, upper=False).flip(0, 1)
    return upper, dead


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the column loop on one thread: its steps are tiny, and splitting each over threads
    costs more than it saves (measured 5-20x slower with 2 threads on a busy 2-core machine).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _block_size(*periods: int) -> int:
    """A lazy-batch width near ``BLOCK`` that every period (group size, M) divides."""
    step = 1
    for p in periods:
        step = step * p // math.gcd(step, p)
    return step * max(1, round(BLOCK / step))


@torch.no_grad()
def obs_columns(
    weight: Tensor,
    hinv_upper: Tensor,
    *,
    grid: Grid | None = None,
    sparsity: float = 0.0,
    nm: tuple[int, int] | None = None,
    perm: Tensor | None = None,
    frozen: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Prune and/or quantize ``weight`` column by column with OBS error feedback.

    Args:
        weight: (out, in) the weights (dead input columns already zeroed).
        hinv_upper: (in, in) from ``inverse_hessian_factor`` (in ``perm`` order if given).
        grid: quantize to this grid (None: keep float values).
        sparsity: unstructured pruning: the fraction of all weights removed, chosen per lazy
            block by ``w² / [H⁻¹]_jj²`` (SparseGPT's adaptive mask selection), with the exact
            total ``round(sparsity · out · in)``.
        nm: ``(n, m)``: keep n of every m consecutive inputs of a row (overrides sparsity).
        perm: a column order (GPTQ's act-order); scales stay per group of original columns.
        frozen: (out, in) bool, weights that must end at zero (pruned before quantizing).

    Returns:
        (new weight (out, in), keep-mask (out, in) bool or None without pruning,
        scales (out, groups) or None, zero points (out, groups) or None).
    """
    with one_thread():
        return _columns(weight, hinv_upper, grid, sparsity, nm, perm, frozen)


def _columns(weight, hinv_upper, grid, sparsity, nm, perm, frozen):
    out_f, in_f = weight.shape
    g = grid.group_size if grid is not None and grid.group_size else in_f
    groups = in_f // g
    scales = torch.zeros(groups, out_f) if grid is not None else None  # (groups, out)
    zeros = torch.zeros(groups, out_f) if grid is not None and grid.asymmetric else None
    static = grid is not None and (perm is not None or grid.group_size is None)
    if static:  # grids from the original weights: per row, or per group with act-order
        for k in range(groups):
            s, z = grid_params(weight[:, k * g : (k + 1) * g], grid.bits, grid.asymmetric)
            scales[k] = s
            if zeros is not None:
                zeros[k] = z
    # columns as rows: every per-column step below reads and updates contiguous memory
    wt = weight.float().T.contiguous()  # (in, out)
    frozen_t = frozen.T.contiguous() if frozen is not None else None
    if perm is not None:
        wt = wt[perm]
        frozen_t = frozen_t[perm] if frozen_t is not None else None
    col_group = ((perm if perm is not None else torch.arange(in_f)) // g).tolist()
    pruning = nm is not None or sparsity > 0
    pruned_t = torch.zeros(in_f, out_f, dtype=torch.bool)
    q_t = torch.zeros_like(wt)
    periods = ([nm[1]] if nm else []) + ([g] if grid is not None and not static else [])
    block = _block_size(*periods)
    total_drop = round(sparsity * out_f * in_f) if nm is None else 0
    dropped = 0
    top = 2**grid.bits - 1 if grid is not None else 0
    lo, hi = (0, top) if grid is not None and grid.asymmetric else (-(top // 2), top // 2)
    for i1 in range(0, in_f, block):
        i2 = min(i1 + block, in_f)
        w1 = wt[i1:i2].clone()  # (b, out)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv_upper[i1:i2, i1:i2]
        diag1 = torch.diag(hinv1)
        d_list = diag1.tolist()
        p1 = torch.zeros_like(w1, dtype=torch.bool)
        if frozen_t is not None:
            p1 |= frozen_t[i1:i2]
        if pruning and nm is None:
            want = round(total_drop * i2 / in_f) - dropped
            if want > 0:
                score = (w1**2 / diag1.unsqueeze(1) ** 2).reshape(-1)
                p1.view(-1)[torch.topk(score, want, largest=False).indices] = True
            dropped += want
        s = z = None
        masking = nm is not None or bool(p1.any())  # else no column has a weight to zero
        for i in range(i2 - i1):
            col = w1[i]  # (out,)
            if nm is not None and i % nm[1] == 0:
                part = w1[i : i + nm[1]]  # (m, out)
                drop = part.shape[0] - min(nm[0], part.shape[0])
                if drop:
                    score = part**2 / diag1[i : i + nm[1]].unsqueeze(1) ** 2
                    idx = torch.topk(score, drop, dim=0, largest=False).indices
                    p1.scatter_(0, i + idx, True)
            q = col.masked_fill(p1[i], 0.0) if masking else col
            if grid is not None:
                k = col_group[i1 + i]
                if not static and (i1 + i) % g == 0:  # entering a group: its grid from now
                    live = w1[i : i + g].masked_fill(p1[i : i + g], 0.0).T  # (out, g)
                    scales[k], z_k = grid_params(live, grid.bits, grid.asymmetric)
                    if zeros is not None:
                        zeros[k] = z_k
                s = scales[k]
                z = zeros[k] if zeros is not None else None
                # round(q / s) to the grid and back, in one buffer (the same operations)
                if z is None:
                    q = q.div(s).round_().clamp_(lo, hi).mul_(s)
                else:
                    q = q.div(s).round_().add_(z).clamp_(lo, hi).sub_(z).mul_(s)
            q_t[i1 + i] = q
            e = torch.sub(col, q, out=err1[i]).div_(d_list[i])
            w1[i:].addr_(hinv1[i, i:], e, alpha=-1.0)  # spread the error over later columns
        pruned_t[i1:i2] = p1
        if i2 < in_f:
            wt[i2:] -= hinv_upper[i1:i2, i2:].T @ err1
    if perm is not None:
        inverse = torch.argsort(perm)
        q_t, pruned_t = q_t[inverse], pruned_t[inverse]
    keep = ~pruned_t.T if pruning else None
    scales = scales.T.contiguous() if scales is not None else None
    zeros = zeros.T.contiguous() if zeros is not None else None
    return q_t.T.contiguous().to(weight.dtype), keep, scales, zeros
