"""Attention maps of causal LMs: causal rows, a blank masked triangle, windows, drift."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from lmtiny import make_docs

from llmopt import figures
from llmopt.attention import attention_drift, attention_maps, attention_window
from llmopt.errors import LlmoptError

TEXT = "good coffee, but the tea was stale and the cookie was perfect"


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_rows_sum_to_one_over_earlier_tokens(lms, family):
    """Each query's row sums to 1 over itself and the earlier tokens and is 0 after it."""
    maps = attention_maps(lms[family], TEXT)
    assert maps.causal and maps.y_score is None
    layers, heads, n, _ = maps.maps.shape
    assert (layers, heads) == (2, 4) and n == len(maps.tokens) > 5
    np.testing.assert_allclose(maps.maps.sum(-1), 1.0, atol=1e-5)
    assert np.all(maps.maps[..., np.triu_indices(n, k=1)[0], np.triu_indices(n, k=1)[1]] == 0)
    lower = np.tril(np.ones((n, n), dtype=bool))
    np.testing.assert_allclose(np.where(lower, maps.maps, 0).sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_the_masked_triangle_is_blank_in_every_figure(lms, family):
    """Figures carry NaN (no colour), not 0, above the diagonal; the lower triangle is drawn.
    The old figures drew the zeros of the mask as zero-coloured cells."""
    maps = attention_maps(lms[family], TEXT)
    n = maps.n_tokens
    upper, lower = np.triu_indices(n, k=1), np.tril_indices(n)
    for fig in (
        figures.attention_figure(maps, 0, 1),
        figures.attention_compare_figure(maps, maps, 1, 0),
        figures.attention_heads_figure(maps, 1),
    ):
        for trace in fig.data:
            z = np.asarray(trace.z, dtype=float)
            assert np.isnan(z[upper]).all()
            assert not np.isnan(z[lower]).any()


def test_a_long_text_is_shown_through_a_window(lms):
    """A 2,000-token text gives a 64 × 64 map at the window's positions, never the whole
    sequence; moving the window moves the positions, clamped inside the text."""
    loaded = copy.copy(lms["llama"])  # rotary positions: no hard limit of the tiny model
    loaded.max_length = None
    text = " ".join(make_docs(400, seed=5))
    maps = attention_maps(loaded, text)
    assert maps.n_text_tokens >= 2000
    assert maps.n_tokens <= 512  # run at most MAX_LM_TOKENS
    window = attention_window(maps, 100, 64)
    assert window.maps.shape == (2, 4, 64, 64) and len(window.tokens) == 64
    assert window.offset == 100
    np.testing.assert_array_equal(window.maps, maps.maps[:, :, 100:164, 100:164])
    fig = figures.attention_figure(maps, 0, 0, start=100, size=64)
    assert np.asarray(fig.data[0].z).shape == (64, 64)
    assert list(fig.data[0].x) == list(range(100, 164))
    assert min(fig.layout.xaxis.tickvals) >= 100
    default = figures.attention_figure(maps, 0, 0)  # no window given: the first 64 tokens
    assert np.asarray(default.data[0].z).shape == (64, 64)
    last = attention_window(maps, 10**6, 64)
    assert last.offset == maps.n_tokens - 64
    with pytest.raises(LlmoptError, match="at least 1 token"):
        attention_window(maps, 0, 0)


def test_drift_of_an_lm_with_itself_is_zero_and_compression_moves_it(lms):
    from llmopt.compression import CompressionConfig, compress

    texts = make_docs(3, seed=9, min_words=5)
    base = lms["gpt2"]
    same = attention_drift(base, base, texts)
    assert same.shape == (2, 4)
    np.testing.assert_allclose(same, 0.0, atol=1e-7)
    other, _ = compress(base, CompressionConfig(sparsity=0.7))
    moved = attention_drift(base, other, texts)
    assert moved.max() > 1e-3
    fig = figures.drift_figure(moved)
    assert np.asarray(fig.data[0].z).shape == (2, 4)


def test_next_tokens_show_spaces_and_line_breaks(lms):
    """A predicted newline showed as an empty cell in the next-token table; the labels of the
    maps already mark spaces and line breaks, so the predictions do the same."""
    from llmopt.attention import visible_text

    assert visible_text(" I") == "␣I" and visible_text("\n\n") == "⏎⏎"
    assert visible_text("\t") == "⇥" and visible_text("") == "∅"
    maps = attention_maps(lms["gpt2"], "the coffee was great")
    assert maps.next_tokens and all(
        token.strip() and " " not in token and "\n" not in token for token, _ in maps.next_tokens
    )
