"""Attention maps have the right shape and are distributions; drift and JS divergence are right."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from torch.nn.utils import prune
from transformers.modeling_outputs import SequenceClassifierOutput

import llmopt
from llmopt.attention import AttentionMaps, attention_drift, attention_maps, js_divergence
from llmopt.errors import LlmoptError

TEXT = "the coffee was great but the box was broken"
TEXTS = [TEXT, "awful stale bread", "love this tea so much", "the price is very good"]


@pytest.fixture(scope="module")
def models(tiny_dirs):
    return {family: llmopt.load_model(str(d)) for family, d in tiny_dirs.items()}


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2"])
def test_maps_shape_tokens_and_rows_sum_to_one(models, family):
    loaded = models[family]
    n_tokens = len(loaded.tokenizer(TEXT)["input_ids"])
    result = attention_maps(loaded, TEXT)
    assert isinstance(result, AttentionMaps)
    assert result.maps.shape == (2, 4, n_tokens, n_tokens)  # (layers, heads, seq, seq)
    assert result.maps.dtype == np.float32
    assert len(result.tokens) == n_tokens
    np.testing.assert_allclose(result.maps.sum(-1), 1.0, atol=1e-5)
    assert (result.maps >= 0).all()


def test_tokens_are_the_tokenizers(models):
    loaded = models["bert"]
    result = attention_maps(loaded, TEXT)
    assert result.tokens[0] == "[CLS]" and result.tokens[-1] == "[SEP]"
    assert result.tokens[1:-1] == TEXT.split()


def test_gpt2_attention_is_causal(models):
    maps = attention_maps(models["gpt2"], TEXT).maps
    upper = np.triu(np.ones(maps.shape[-2:], dtype=bool), k=1)
    assert np.all(maps[..., upper] == 0)


def test_long_text_is_truncated_to_max_length(models):
    loaded = models["bert"]
    result = attention_maps(loaded, " ".join(["good coffee"] * 200))
    assert len(result.tokens) == loaded.max_length
    assert result.maps.shape[-1] == loaded.max_length


def test_empty_text_is_rejected(models):
    with pytest.raises(LlmoptError, match="empty"):
        attention_maps(models["bert"], "   ")


def test_model_without_attentions_gives_a_helpful_error(models):
    class NoAttention(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_):
            return SequenceClassifierOutput(logits=torch.zeros(input_ids.shape[0], 2))

    base = models["bert"]
    loaded = llmopt.LoadedModel(NoAttention(), base.tokenizer, "fake", ["a", "b"], "fake")
    with pytest.raises(LlmoptError, match="eager"):
        attention_maps(loaded, TEXT)


def test_js_divergence_equals_scipy():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7), size=(3, 5))  # (3, 5, 7)
    q = rng.dirichlet(np.ones(7), size=(3, 5))
    ours = js_divergence(p, q)
    ref = jensenshannon(p, q, base=2, axis=-1) ** 2
    assert ours.shape == (3, 5)
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    # along another axis, with zeros in the distributions
    p[..., 0] = 0.0
    ref0 = jensenshannon(p, q, base=2, axis=1) ** 2
    np.testing.assert_allclose(js_divergence(p, q, axis=1), ref0, atol=1e-12)


def test_js_divergence_bounds():
    p = np.array([0.5, 0.5, 0.0, 0.0])
    q = np.array([0.0, 0.0, 0.3, 0.7])
    assert js_divergence(p, q) == pytest.approx(1.0)  # disjoint supports: 1 bit
    assert js_divergence(p, p) == 0.0
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))


def test_drift_of_a_model_against_itself_is_zero(models):
    for family in ("bert", "gpt2"):
        drift = attention_drift(models[family], models[family], TEXTS)
        assert drift.shape == (2, 4)
        assert np.all(drift == 0.0)


def test_drift_against_a_pruned_copy_is_positive(models):
    base = models["bert"]
    pruned_model = copy.deepcopy(base.model)
    for module in pruned_model.modules():
        if isinstance(module, torch.nn.Linear):
            prune.l1_unstructured(module, "weight", amount=0.9)
            prune.remove(module, "weight")
    other = llmopt.LoadedModel(
        pruned_model, base.tokenizer, "pruned", base.label_names, base.source, base.max_length
    )
    drift = attention_drift(base, other, TEXTS)
    assert drift.shape == (2, 4)
    assert np.all(drift > 0) and np.all(drift <= 1)
    # the average over texts is the mean of per-text drifts
    singles = [attention_drift(base, other, [t]) for t in TEXTS]
    np.testing.assert_allclose(drift, np.mean(singles, axis=0), rtol=1e-6)


def test_drift_needs_texts(models):
    with pytest.raises(LlmoptError, match="text"):
        attention_drift(models["bert"], models["bert"], ["", "  "])


def test_int8_dynamic_model_still_returns_attention(models, tiny_dataset):
    compress_mod = pytest.importorskip("llmopt.compression")
    if not hasattr(compress_mod, "compress"):
        pytest.skip("llmopt.compression.compress is not available yet")
    base = models["bert"]
    other, _ = compress_mod.compress(base, compress_mod.CompressionConfig(int8_dynamic=True))
    maps = attention_maps(other, TEXT)
    np.testing.assert_allclose(maps.maps.sum(-1), 1.0, atol=1e-5)
    drift = attention_drift(base, other, TEXTS)
    assert np.all(drift >= 0) and np.all(drift < 0.5)
