"""Generation side by side: the KV cache changes nothing but speed, each token's probability
under both models equals a teacher-forced pass, and the first divergence is found."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from lmtiny import FAMILIES

from llmopt.errors import LlmoptError
from llmopt.lm.generate import first_divergence, generate_side_by_side

PROMPT = "good coffee, the"


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_tokens_are_the_same_with_and_without_the_cache(lms, family):
    lm = lms[family]
    cached = generate_side_by_side(lm, None, PROMPT, max_new_tokens=20, stop_at_eos=False)
    plain = generate_side_by_side(
        lm, None, PROMPT, max_new_tokens=20, stop_at_eos=False, use_cache=False
    )
    assert len(cached.baseline.token_ids) == 20
    assert cached.baseline.token_ids == plain.baseline.token_ids
    assert cached.baseline.probs == pytest.approx(plain.baseline.probs, rel=1e-4)
    assert cached.compressed is None and cached.first_divergence is None


def _scaled(lm, factor):
    model = lm.model.__class__(lm.model.config)
    model.load_state_dict(lm.model.state_dict())
    with torch.no_grad():
        model.lm_head.weight.mul_(factor) if hasattr(model, "lm_head") else None
        for name, p in model.named_parameters():
            if "mlp" in name and p.dim() == 2:
                p.mul_(factor)
    return replace(lm, model=model.eval())


def test_probabilities_under_both_models_and_divergence(lms):
    base = lms["llama"]
    other = _scaled(base, 1.7)
    gen = generate_side_by_side(base, other, PROMPT, max_new_tokens=12, stop_at_eos=False)
    ids = base.tokenizer(PROMPT).input_ids
    for side, own, rival in ((gen.baseline, base, other), (gen.compressed, other, base)):
        seq = torch.tensor([ids + side.token_ids[:-1]])
        with torch.no_grad():
            for lm, probs in ((own, side.probs), (rival, side.probs_other)):
                p = torch.softmax(lm.model(seq).logits[0, len(ids) - 1 :], -1)
                picked = p.gather(-1, torch.tensor(side.token_ids)[:, None]).squeeze(-1)
                assert probs == pytest.approx(picked.tolist(), rel=1e-4)
        assert side.text == base.tokenizer.decode(side.token_ids)
        assert side.tokens_per_second > 0
    d = gen.first_divergence
    assert d is not None
    assert gen.baseline.token_ids[:d] == gen.compressed.token_ids[:d]
    assert gen.baseline.token_ids[d] != gen.compressed.token_ids[d]
    out = gen.to_dict()
    assert set(out) == {"prompt", "baseline", "compressed", "first_divergence"}
    assert {"text", "tokens", "tokens_per_second"} <= set(out["baseline"])


def test_seeded_sampling_repeats_and_identical_models_never_diverge(lms):
    lm = lms["qwen2"]
    a = generate_side_by_side(lm, lm, PROMPT, max_new_tokens=15, sample=True, seed=3)
    b = generate_side_by_side(lm, None, PROMPT, max_new_tokens=15, sample=True, seed=3)
    c = generate_side_by_side(lm, None, PROMPT, max_new_tokens=15, sample=True, seed=4)
    greedy = generate_side_by_side(lm, None, PROMPT, max_new_tokens=15)
    assert a.baseline.token_ids == b.baseline.token_ids == a.compressed.token_ids
    assert a.first_divergence is None
    assert c.baseline.token_ids != a.baseline.token_ids or greedy.baseline.token_ids != (
        a.baseline.token_ids
    )


def test_stops_at_end_of_text(lms):
    lm = lms["gpt2"]
    eos = lm.tokenizer.eos_token_id
    model = lm.model.__class__(lm.model.config)
    model.load_state_dict(lm.model.state_dict())
    assert eos == 0
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: greedy argmax picks token 0, end-of-text
    lm = replace(lm, model=model.eval())
    gen = generate_side_by_side(lm, None, PROMPT, max_new_tokens=9)
    assert gen.baseline.token_ids == [eos]
    longer = generate_side_by_side(lm, None, PROMPT, max_new_tokens=9, stop_at_eos=False)
    assert longer.baseline.token_ids == [eos] * 9


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2


def test_bad_arguments(lms):
    lm = lms["gpt2"]
    with pytest.raises(LlmoptError, match="max_new_tokens"):
        generate_side_by_side(lm, None, PROMPT, max_new_tokens=0)
    with pytest.raises(LlmoptError, match="temperature"):
        generate_side_by_side(lm, None, PROMPT, sample=True, temperature=0)
    with pytest.raises(LlmoptError, match="exceeds the model's 64 positions"):
        generate_side_by_side(lm, None, PROMPT, max_new_tokens=60)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_buffered_cache_returns_what_concatenation_returns(lms, family):
    """Each family's cache gets the preallocated layers, and a forward over the prompt and
    then one token at a time gives the logits of transformers' own concatenating cache, also
    when the buffers must grow past the capacity given."""
    from transformers.cache_utils import DynamicCache

    from llmopt.lm.generate import buffered_cache, cache_argument

    model = lms[family].model
    kw = cache_argument(model)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    steps = [torch.tensor([[t]]) for t in (10, 11, 12, 13)]
    buffered = buffered_cache(model, 6)  # two positions short: the buffers grow once
    assert buffered is not None
    assert {type(layer).__name__ for layer in buffered.layers} == {"BufferedLayer"}
    outs = []
    for cache in (buffered, DynamicCache(config=model.config)):
        with torch.no_grad():
            logits = [model(input_ids=ids, use_cache=True, **{kw: cache}).logits]
            for step in steps:
                logits.append(model(input_ids=step, use_cache=True, **{kw: cache}).logits)
        outs.append(logits)
    for ours, theirs in zip(*outs, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert buffered.get_seq_length() == 9
