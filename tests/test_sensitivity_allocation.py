"""Knapsack bit allocation: optimal against brute force on small random cases, within the
average-bits budget, and usable as per-layer overrides."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmopt.allocation import allocate_bits, losses_from_sensitivity
from llmopt.errors import LlmoptError
from llmopt.sensitivity import LayerSensitivity, SensitivityResult

BITS = (2, 3, 4, 8)


@st.composite
def cases(draw):
    n = draw(st.integers(1, 4))
    names = [f"block.{i}.m" for i in range(n)]
    sizes = {m: draw(st.integers(1, 40)) for m in names}
    losses = {}
    for m in names:
        offered = draw(st.lists(st.sampled_from(BITS), min_size=1, max_size=4, unique=True))
        losses[m] = {b: draw(st.floats(-1, 10, allow_nan=False)) for b in offered}
    budget = draw(st.floats(1.5, 8.5, allow_nan=False))
    return losses, sizes, budget


def _brute(losses, sizes, budget):
    names = list(losses)
    total = sum(sizes.values())
    best = None
    for combo in itertools.product(*[sorted(losses[n]) for n in names]):
        if sum(sizes[n] * b for n, b in zip(names, combo, strict=True)) <= budget * total + 1e-9:
            loss = sum(losses[n][b] for n, b in zip(names, combo, strict=True))
            best = loss if best is None else min(best, loss)
    return best


@settings(max_examples=300, deadline=None)
@given(cases())
def test_optimal_against_brute_force(case):
    losses, sizes, budget = case
    expect = _brute(losses, sizes, budget)
    if expect is None:
        with pytest.raises(LlmoptError, match="below the fewest bits"):
            allocate_bits(losses, sizes, budget)
        return
    got = allocate_bits(losses, sizes, budget)
    assert got.exact
    assert got.predicted_loss == pytest.approx(expect, abs=1e-9)
    assert got.predicted_loss == pytest.approx(sum(losses[n][b] for n, b in got.bits.items()))
    total = sum(sizes.values())
    assert got.average_bits <= budget + 1e-9
    assert got.average_bits == pytest.approx(sum(sizes[n] * b for n, b in got.bits.items()) / total)
    assert got.overrides() == {n: {"bits": b} for n, b in got.bits.items()}


@settings(max_examples=50, deadline=None)
@given(cases())
def test_coarse_budget_stays_within_it(case):
    """With a tiny DP table the costs are rounded up: never over budget, maybe not optimal."""
    losses, sizes, budget = case
    if _brute(losses, sizes, budget) is None:
        return
    try:
        got = allocate_bits(losses, sizes, budget, max_states=7)
    except LlmoptError:
        return  # too coarse to fit: said so
    assert got.average_bits <= budget + 1e-9


def test_spends_bits_where_they_matter():
    """Two equal matrices, 3 average bits: the sensitive one gets 4 bits, the other 2."""
    losses = {"a": {2: 5.0, 4: 0.1}, "b": {2: 0.2, 4: 0.1}}
    got = allocate_bits(losses, {"a": 100, "b": 100}, 3.0)
    assert got.bits == {"a": 4, "b": 2}
    assert got.average_bits == 3.0


def test_from_sensitivity_result_and_bad_inputs():
    rows = [
        LayerSensitivity("q", 4, -0.01, (-0.02, 0.0), {}),
        LayerSensitivity("q", 2, -0.20, (-0.3, -0.1), {}),
    ]
    result = SensitivityResult("rtn", "quantize", [4, 2], "accuracy", "matrix", 1.0, 0.9, 100,
                               rows, {})  # fmt: skip
    assert losses_from_sensitivity(result) == {"q": {4: 0.01, 2: 0.20}}
    with pytest.raises(LlmoptError, match="positive"):
        allocate_bits({"q": {4: 0.0}}, {"q": 10}, 0)
    with pytest.raises(LlmoptError, match="size"):
        allocate_bits({"q": {4: 0.0}}, {}, 4)
    with pytest.raises(LlmoptError, match="no matrices"):
        allocate_bits({}, {}, 4)
    result.kind = "prune"
    with pytest.raises(LlmoptError, match="quantization"):
        losses_from_sensitivity(result)
