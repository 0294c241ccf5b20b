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


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_the_maps_carry_the_models_prediction_for_the_text(models, family):
    """The Attention page showed no prediction for the typed text; the maps now carry the
    probabilities of the same forward pass, equal to evaluate's for that text."""
    from llmopt.attention import attention_predictions
    from llmopt.evaluation import predict_proba

    loaded = models[family]
    maps = attention_maps(loaded, TEXT)
    expected, _, _ = predict_proba(loaded, [TEXT], fused=False)
    np.testing.assert_allclose(maps.y_score, expected[0], rtol=1e-5, atol=1e-7)
    label, probability = maps.prediction
    assert label == loaded.label_names[int(expected[0].argmax())]
    assert probability == pytest.approx(expected[0].max(), rel=1e-5)
    table = attention_predictions(maps, maps)
    assert list(table["model"]) == ["uncompressed", "compressed"]
    assert list(table["prediction"]) == [label, label]


def test_long_token_labels_are_thinned_and_shortened_with_full_tokens_on_hover():
    """With a long input every key token was labelled (up to 48, each in full): the labels ran
    into each other. Now at most a readable number is labelled, each shortened and turned;
    the hover still names every token in full."""
    from llmopt import figures
    from llmopt.figures.attention import MAX_TICKS, TICK_CHARS

    n = 40  # up to 48 were all labelled before
    tokens = [f"extraordinarily_long_token_{i}" for i in range(n)]
    rng = np.random.default_rng(0)
    raw = rng.random((1, 4, n, n))
    maps = AttentionMaps(tokens=tokens, maps=(raw / raw.sum(-1, keepdims=True)).astype("f4"))
    for fig, limit in (
        (figures.attention_figure(maps, 0, 0), MAX_TICKS),
        (figures.attention_compare_figure(maps, maps, 0, 0), MAX_TICKS),
        (figures.attention_heads_figure(maps, 0), MAX_TICKS),
    ):
        layout = fig.to_plotly_json()["layout"]
        axes = [v for k, v in layout.items() if k.startswith(("xaxis", "yaxis"))]
        for axis in axes:
            shown = list(axis["ticktext"]) if axis.get("showticklabels", True) else []
            assert len(shown) <= limit and all(len(t) <= TICK_CHARS for t in shown)
            assert [tokens[i][: TICK_CHARS - 1] for i in axis["tickvals"]] == [
                t.rstrip("…") for t in axis["ticktext"]
            ]  # each label sits on its own token's position
        x_axes = [v for k, v in layout.items() if k.startswith("xaxis")]
        assert all(a.get("tickangle") for a in x_axes if a.get("showticklabels", True))
        hover = fig.data[0].customdata
        assert {hover[0, j, 1] for j in range(n)} == set(tokens)  # full tokens on hover


def test_tokens_from_typed_text_are_shown_as_text_in_hovers_and_labels():
    """Tokens come from text a user types: plotly reads hover texts and tick labels as HTML,
    so a typed ``<b>`` or ``<a href=...>`` rendered as bold text or a link. Now every token is
    escaped. On the old code the raw tags sat in the hover data and on the axis."""
    from llmopt import figures

    tokens = ["<b>bold</b>", '<a href="https://evil.example">x</a>', "{y}", "plain"]
    n = len(tokens)
    maps = AttentionMaps(tokens=tokens, maps=np.full((1, 2, n, n), 1 / n, dtype="f4"))
    for fig in (
        figures.attention_figure(maps, 0, 0),
        figures.attention_compare_figure(maps, maps, 0, 0),
        figures.attention_heads_figure(maps, 0),
    ):
        shown = [str(t) for trace in fig.data for t in np.ravel(trace.customdata)]
        layout = fig.to_plotly_json()["layout"]
        shown += [t for k, v in layout.items() if k[1:5] == "axis" for t in v.get("ticktext", [])]
        assert shown and "plain" in shown
        assert not any("<" in t or "{" in t for t in shown), shown
        assert "&lt;b&gt;bold&lt;/b&gt;" in shown


def test_the_drift_caption_matches_the_colour_scale():
    """The caption said 'bright cells' for the heads that moved most, which the figure draws
    darkest: the page's words and the figure's scale must agree."""
    import re

    from plotly.colors import get_colorscale

    from llmopt import figures

    fig = figures.drift_figure(np.array([[0.0, 0.5]]))
    scale = fig.data[0].colorscale
    scale = get_colorscale(scale) if isinstance(scale, str) else scale

    def lightness(colour: str) -> float:
        r, g, b = (int(v) for v in re.findall(r"\d+", colour)[:3])
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    assert lightness(scale[-1][1]) < lightness(scale[0][1])  # most drift = darkest;
    # the page's caption says so (tests/app/test_pages.py checks the page shows it)
