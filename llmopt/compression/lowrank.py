"""Low-rank factorisation by truncated SVD, and the two-Linear module that replaces a layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init


def svd_factors(weight: Tensor, rank: int) -> tuple[Tensor, Tensor, Tensor]:
    """The best rank-``rank`` factorisation ``W ~ A @ B`` (Eckart–Young), balanced.

    The singular values are split evenly (``A = U sqrt(S)``, ``B = sqrt(S) V^T``) so both
    factors have the same scale, which suits pruning and quantizing them afterwards.

    Args:
        weight: (out, in) matrix.
        rank: number of singular values kept, 1..min(out, in).

    Returns:
        (A (out, rank), B (rank, in), all singular values (min(out, in),), descending).
    """
    if weight.shape[0] < weight.shape[1]:  # LAPACK is faster on tall matrices: W^T = B^T A^T
        b_t, a_t, s = svd_factors(weight.T, rank)
        return a_t.T, b_t.T, s
    u, s, vh = torch.linalg.svd(weight.float(), full_matrices=False)
    root = s[:rank].sqrt()
    a = (u[:, :rank] * root).to(weight.dtype)  # (out, rank)
    b = (root.unsqueeze(1) * vh[:rank]).to(weight.dtype)  # (rank, in)
    return a, b, s.to(weight.dtype)


def break_even_rank(out_features: int, in_features: int) -> float:
    """The rank at which two factors hold as many numbers as the dense matrix: mn / (m + n)."""
    return out_features * in_features / (out_features + in_features)


class LowRankLinear(nn.Module):
    """``up(down(x))``: in -> rank (no bias) -> out (the original bias); replaces one layer.

    ``conv1d`` remembers that the replaced layer was a GPT-2 ``Conv1D`` (weight stored
    (in, out)), so ``to_dense`` can rebuild a module of the original kind for saving.
    """

    def __init__(self, a: Tensor, b: Tensor, bias: Tensor | None, conv1d: bool = False):
        super().__init__()
        rank, in_features = b.shape
        out_features = a.shape[0]
        # skip_init: no random initialisation (and no use of the global RNG) before the copy
        self.down = skip_init(nn.Linear, in_features, rank, bias=False)
        self.up = skip_init(nn.Linear, rank, out_features, bias=bias is not None)
        self.conv1d = conv1d
        with torch.no_grad():
            self.down.weight.copy_(b)
            self.up.weight.copy_(a)
            if bias is not None:
                self.up.bias.copy_(bias)

    @property
    def in_features(self) -> int:
        return self.down.in_features

    @property
    def out_features(self) -> int:
        return self.up.out_features

    @property
    def rank(self) -> int:
        return self.down.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(x))  # (..., in) -> (..., rank) -> (..., out)

    @torch.no_grad()
    def dense_weight(self) -> Tensor:
        """The product ``up.weight @ down.weight``: (out, in)."""
        return self.up.weight @ self.down.weight

    @torch.no_grad()
    def to_dense(self) -> nn.Module:
        """One dense module computing the same function: ``nn.Linear``, or ``Conv1D`` if it was."""
        weight, bias = self.dense_weight(), self.up.bias
        if not self.conv1d:
            from llmopt.compression.quantize import linear_from

            return linear_from(weight, bias)
        from transformers.pytorch_utils import Conv1D

        with torch.random.fork_rng(devices=[]):  # its random init must not move the global RNG
            layer = Conv1D(self.out_features, self.in_features)
        layer.weight.copy_(weight.T)  # Conv1D stores (in, out)
        if bias is not None:
            layer.bias.copy_(bias)
        else:
            layer.bias.zero_()
        return layer.eval()
