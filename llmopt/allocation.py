"""Mixed-precision bit allocation: per-matrix bit-widths that minimise the predicted loss (the
sum of each matrix's measured sensitivity at its bit-width) under an average-bits budget, as an
exact multiple-choice knapsack solved by dynamic programming over the budget."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np

from llmopt.errors import LlmoptError

TIE = 1e-12  # relative: predicted losses this close are equal (the cheaper choice wins)
MAX_STATES = 400_000  # budget cells of the exact DP: ~36 matrices x this is a few MB of choices


@dataclass(frozen=True)
class Allocation:
    """The chosen bit-width of each matrix and what it costs and predicts."""

    bits: dict[str, int]  # matrix name -> bits
    predicted_loss: float  # sum of the chosen sensitivities
    average_bits: float  # weight-weighted mean of the chosen bits
    budget_bits: float  # the average the allocation had to stay within
    exact: bool  # True: optimal; False: the budget was discretised coarser (still within it)

    def overrides(self) -> dict[str, dict[str, int]]:
        """Per-layer overrides ``{"matrix name": {"bits": b}}`` (a recipe's layers entry)."""
        return {name: {"bits": b} for name, b in self.bits.items()}


def allocate_bits(
    losses: Mapping[str, Mapping[int, float]],
    sizes: Mapping[str, int],
    budget_bits: float,
    *,
    max_states: int = MAX_STATES,
) -> Allocation:
    """Choose one bit-width per matrix minimising the total predicted loss, subject to
    ``sum(size * bits) <= budget_bits * sum(size)`` (the average bits per weight).

    Args:
        losses: ``{matrix: {bits: predicted loss}}`` (e.g. the accuracy drop of quantizing that
            matrix alone to ``bits``: ``SensitivityResult.loss``); each matrix lists the
            bit-widths it may take.
        sizes: ``{matrix: weights}`` (numbers of weights, positive whole numbers).
        budget_bits: the allowed average bits per weight.
        max_states: the largest DP table; a budget needing more cells is discretised in
            coarser steps, each matrix's cost rounded up (so the result stays within budget,
            and ``exact`` is False).

    Returns:
        The ``Allocation``; among equally good choices, the one using the fewest bits.

    Raises:
        LlmoptError: no matrices, a matrix without options or size, a bad size or budget, or a
            budget below what the fewest bits of every matrix need.
    """
    names = list(losses)
    if not names:
        raise LlmoptError("no matrices to allocate bits to")
    if isinstance(budget_bits, bool) or not isinstance(budget_bits, (int, float)):
        raise LlmoptError(f"the bits budget must be a number, got {budget_bits!r}")
    if not math.isfinite(budget_bits) or budget_bits <= 0:
        raise LlmoptError(f"the bits budget must be a positive number, got {budget_bits!r}")
    options: list[list[tuple[int, float]]] = []
    for name in names:
        size = sizes.get(name)
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
            raise LlmoptError(f"matrix {name!r} needs a positive whole size, got {size!r}")
        opts = sorted((int(b), float(v)) for b, v in losses[name].items())
        if not opts or any(b < 1 for b, _ in opts) or any(math.isnan(v) for _, v in opts):
            raise LlmoptError(f"matrix {name!r} needs bit-widths >= 1 with numeric losses")
        options.append(opts)
    total = sum(int(sizes[n]) for n in names)
    capacity_bits = budget_bits * total
    fewest = sum(int(sizes[n]) * opts[0][0] for n, opts in zip(names, options, strict=True))
    if fewest > capacity_bits + 1e-9:
        raise LlmoptError(
            f"an average of {budget_bits:g} bits is below the fewest bits offered "
            f"({fewest / total:.3f} on average); raise the budget or offer fewer bits"
        )
    costs = [[int(sizes[n]) * b for b, _ in opts] for n, opts in zip(names, options, strict=True)]
    unit: float = reduce(math.gcd, [c for row in costs for c in row])
    capacity = int(math.floor(capacity_bits / unit + 1e-9))
    exact = capacity <= max_states
    if not exact:  # coarser cells; rounding each cost up keeps every choice within budget
        unit = capacity_bits / max_states
        capacity = max_states
    steps = [[math.ceil(c / unit - 1e-9) for c in row] for row in costs]
    best, choice = _knapsack(steps, [[v for _, v in opts] for opts in options], capacity)
    if not exact and not np.isfinite(best).any():
        raise LlmoptError("the budget is too tight for the coarse discretisation; raise it")
    # the lowest loss at any used capacity; among totals equal up to float rounding (sums of
    # the same losses in another order differ in the last bits), the cheapest
    finite = best[np.isfinite(best)]
    scale = float(np.abs(finite).max()) if finite.size else 0.0
    end = int(np.flatnonzero(best <= best.min() + TIE * max(1.0, scale))[0])
    picked: dict[str, int] = {}
    for i in range(len(names) - 1, -1, -1):
        k = int(choice[i][end])
        picked[names[i]] = options[i][k][0]
        end -= steps[i][k]
    bits = {n: picked[n] for n in names}
    loss = sum(dict(opts)[bits[n]] for n, opts in zip(names, options, strict=True))
    average = sum(int(sizes[n]) * bits[n] for n in names) / total
    return Allocation(bits, float(loss), float(average), float(budget_bits), exact)


def _knapsack(
    steps: list[list[int]], values: list[list[float]], capacity: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Multiple-choice knapsack: one option per item, total steps <= capacity.

    Returns:
        (best[c]: the least total value using exactly c steps (inf: unreachable), the option
        each item took in the best solution ending at each c).
    """
    best = np.full(capacity + 1, np.inf)
    best[0] = 0.0
    choices = []
    for item_steps, item_values in zip(steps, values, strict=True):
        new = np.full(capacity + 1, np.inf)
        took = np.zeros(capacity + 1, dtype=np.int32)
        # later options win ties only when strictly better: the first listed (fewest bits)
        # wins equal totals at equal cost
        for k in range(len(item_steps) - 1, -1, -1):
            s, v = item_steps[k], item_values[k]
            if s > capacity:
                continue
            cand = np.full(capacity + 1, np.inf)
            cand[s:] = best[: capacity + 1 - s] + v
            better = cand <= new
            new = np.where(better, cand, new)
            took = np.where(better, k, took)
        best = new
        choices.append(took)
    return best, choices


def losses_from_sensitivity(result, measure: str = "metric") -> dict[str, dict[int, float]]:
    """``{unit: {bits: loss}}`` from a ``SensitivityResult`` of a quantization method.

    Args:
        result: the sensitivity of a quantization method.
        measure: ``"metric"``: how much worse the unit alone makes the metric (positive is
            worse); ``"kl"``: a classifier's mean KL divergence from the dense predictions
            (continuous, where accuracy on a few hundred rows moves in steps of one row and
            ties at 0 for most matrices above 2 bits); a causal LM has no KL and uses its NLL
            change either way.

    Raises:
        LlmoptError: the result is not of a quantization method, or an unknown measure.
    """
    if result.kind != "quantize":
        raise LlmoptError(
            f"bit allocation needs the sensitivity of a quantization method, got {result.kind}"
        )
    if measure not in ("metric", "kl"):
        raise LlmoptError(f"measure {measure!r} is unknown; allowed: metric, kl")
    out: dict[str, dict[int, float]] = {}
    for row in result.layers:
        kl = row.extra.get("mean_kl") if measure == "kl" else None
        loss = float(result.loss(row)) if kl is None else float(kl)
        out.setdefault(row.name, {})[int(row.level)] = loss
    return out


def bit_candidates(budget_bits: float) -> list[int]:
    """The bit-widths a matrix may take under an average of ``budget_bits``: 2, 3, 4 and 8
    and the whole numbers either side of the budget (2..8)."""
    around = {math.floor(budget_bits), math.ceil(budget_bits)}
    return sorted(b for b in {2, 3, 4, 8} | around if 2 <= b <= 8)


def factor_params(shape: tuple[int, int], rank: int) -> int:
    """Weights of the two factors of an (out, in) matrix at ``rank``: rank·(out + in)."""
    return int(rank) * (int(shape[0]) + int(shape[1]))


def allocate_ranks(
    spectra: Mapping[str, np.ndarray | Sequence[float]],
    shapes: Mapping[str, tuple[int, int]],
    rank: int,
) -> tuple[dict[str, int], float]:
    """Per-matrix ranks from the singular-value spectra, as many factor weights as ``rank``
    everywhere: every matrix keeps the same fraction ``tau`` of its spectrum's energy
    (``sum(s[:k]**2) / sum(s**2)``, the share of its squared Frobenius norm the rank-k SVD
    keeps), with the largest ``tau`` whose ranks' factor weights (``factor_params``) stay
    within those of the uniform rank. A matrix with a flatter spectrum needs more rank for
    the same fraction, so it gets more; a steep one gives rank away.

    Args:
        spectra: ``{matrix: its singular values}`` (any order; ``torch.linalg.svdvals``).
        shapes: ``{matrix: (out, in)}``.
        rank: the uniform rank whose total factor weights bound the allocation.

    Returns:
        (``{matrix: rank}``, each at least 1 and at most min(out, in); the retained fraction).

    Raises:
        LlmoptError: no matrices, a rank below 1 or above a matrix's smaller side.
    """
    names = list(spectra)
    if not names:
        raise LlmoptError("no matrices to allocate ranks to")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise LlmoptError(f"rank must be a whole number >= 1, got {rank!r}")
    limit = {n: min(int(shapes[n][0]), int(shapes[n][1])) for n in names}
    small = min(limit, key=lambda n: limit[n])
    if rank > limit[small]:
        raise LlmoptError(f"rank {rank} is above what {small!r} allows ({limit[small]})")
    budget = sum(factor_params(shapes[n], rank) for n in names)
    cumulative = {}
    for n in names:
        s = np.sort(np.abs(np.asarray(spectra[n], dtype=np.float64)))[::-1][: limit[n]]
        energy = np.cumsum(s**2)
        total = energy[-1] if energy.size and energy[-1] > 0 else 1.0
        cumulative[n] = energy / total

    def ranks_at(tau: float) -> dict[str, int]:
        out = {}
        for n in names:  # the fewest values whose energy reaches tau (one at least)
            k = int(np.searchsorted(cumulative[n], tau - 1e-12, side="left")) + 1
            out[n] = max(1, min(k, limit[n]))
        return out

    def cost(ranks: dict[str, int]) -> int:
        return sum(factor_params(shapes[n], ranks[n]) for n in names)

    # the candidate fractions are the cumulative energies themselves: ranks change only there
    taus = np.unique(np.concatenate([c for c in cumulative.values()]))
    lo, hi = 0, len(taus) - 1  # cost is non-decreasing in tau: the last tau within budget
    best = 0.0
    while lo <= hi:
        mid = (lo + hi) // 2
        if cost(ranks_at(float(taus[mid]))) <= budget:
            best, lo = float(taus[mid]), mid + 1
        else:
            hi = mid - 1
    return ranks_at(best), best


def matrix_sizes(model, names) -> dict[str, int]:
    """``{name: number of weights}`` of the named layers' (out, in) matrices."""
    from llmopt.compression.targets import get_weight

    return {n: int(get_weight(model.get_submodule(n)).numel()) for n in names}
