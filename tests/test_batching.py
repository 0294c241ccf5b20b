"""Length-sorted batches: every row exactly once, padded to its own batch's longest text, and
with ``max_tokens`` no batch holds more padded tokens than that (a single longer row alone)."""

from __future__ import annotations

import numpy as np
import pytest

from llmopt.batching import Encoded, iter_batches


def _encoded(lengths):
    return Encoded([[7] * n for n in lengths], None, 0, max(lengths), 0)


LENGTHS = [5, 80, 3, 80, 41, 12, 300, 9, 64, 64, 1, 27]


@pytest.mark.parametrize("sort", [True, False])
@pytest.mark.parametrize("max_tokens", [None, 1, 100, 160, 256, 10_000])
def test_every_row_once_and_within_the_token_budget(sort, max_tokens):
    batches = list(iter_batches(_encoded(LENGTHS), 4, sort=sort, max_tokens=max_tokens))
    rows = np.concatenate([r for r, _ in batches])
    assert sorted(rows.tolist()) == list(range(len(LENGTHS)))
    for r, inputs in batches:
        assert 1 <= len(r) <= 4
        width = max(LENGTHS[i] for i in r)
        assert inputs["input_ids"].shape == (len(r), width)
        assert inputs["attention_mask"].sum(1).tolist() == [LENGTHS[i] for i in r]
        if max_tokens is not None and len(r) > 1:
            assert len(r) * width <= max_tokens
    if not sort:
        assert rows.tolist() == list(range(len(LENGTHS)))


def test_the_budget_packs_greedily():
    """Longest first: 300 alone, then 80+80 (160 tokens), 64+64, ...; no budget: fours."""
    sizes = [len(r) for r, _ in iter_batches(_encoded(LENGTHS), 4, max_tokens=160)]
    assert sizes == [1, 2, 2, 3, 4]
    assert [len(r) for r, _ in iter_batches(_encoded(LENGTHS), 4)] == [4, 4, 4]
