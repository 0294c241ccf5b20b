"""Fidelity of a compressed LM: top-1 agreement and KL(base ‖ compressed) per token on the same
windows, computed directly here, and the tokens whose loss rose most."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from lmtiny import make_docs

from llmopt.errors import LlmoptError
from llmopt.lm.fidelity import compare_lms
from llmopt.lm.perplexity import perplexity

DOCS = make_docs(20, seed=11)


def _perturbed(lm, scale=0.08, seed=1):
    model = lm.model.__class__(lm.model.config)
    model.load_state_dict(lm.model.state_dict())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return replace(lm, model=model.eval())


@pytest.mark.parametrize("protocol", ["paper", "document"])
def test_fidelity_equals_direct_computation(lms, protocol):
    base = lms["llama"]
    other = _perturbed(base)
    pb, pc, fid = compare_lms(base, other, DOCS, protocol=protocol, seq_len=16, batch_size=4)
    # each perplexity equals the single-model function on the same texts
    for lm, result in ((base, pb), (other, pc)):
        alone = perplexity(lm, DOCS, protocol=protocol, seq_len=16)
        np.testing.assert_allclose(result.nll, alone.nll, rtol=1e-6)
    agree = kl = n = 0
    with torch.no_grad():
        for tokens, scored in zip(pb.windows.tokens, pb.windows.n_scored, strict=True):
            ids = torch.tensor([tokens[:-1]])
            lb = torch.log_softmax(base.model(ids).logits[0], -1)[-scored:]
            lc = torch.log_softmax(other.model(ids).logits[0], -1)[-scored:]
            agree += int((lb.argmax(-1) == lc.argmax(-1)).sum())
            kl += float((lb.exp() * (lb - lc)).sum())
            n += int(scored)
    assert fid.tokens.sum() == n
    assert fid.top1_agreement == pytest.approx(agree / n, abs=1e-12)
    assert fid.mean_kl == pytest.approx(kl / n, rel=1e-4)
    assert 0 < fid.top1_agreement < 1 and fid.mean_kl > 0
    lo, hi = fid.interval("mean_kl")
    assert lo < fid.mean_kl < hi


def test_a_model_agrees_with_itself(lms):
    lm = lms["gpt2"]
    _, _, fid = compare_lms(lm, lm, DOCS, seq_len=16)
    assert fid.top1_agreement == 1.0
    assert abs(fid.mean_kl) < 1e-6
    assert fid.harder == []


def test_harder_tokens_are_the_largest_loss_increases_in_context(lms):
    base = lms["qwen2"]
    other = _perturbed(base, scale=0.15)
    pb, _, fid = compare_lms(base, other, DOCS, seq_len=16, top_k=5)
    assert len(fid.harder) == 5
    rises = [h.loss_increase for h in fid.harder]
    assert rises == sorted(rises, reverse=True) and rises[-1] > 0
    tok = base.tokenizer
    with torch.no_grad():
        for h in fid.harder:
            seq = pb.windows.tokens[h.window]
            assert h.token == tok.decode([seq[h.position + 1]])
            assert tok.decode(seq[: h.position + 1]).endswith(h.context)
            ids = torch.tensor([seq[: h.position + 1]])
            for lm, loss, top, prob in (
                (base, h.base_loss, h.base_top, h.base_top_prob),
                (other, h.compressed_loss, h.compressed_top, h.compressed_top_prob),
            ):
                logp = torch.log_softmax(lm.model(ids).logits[0, -1], -1)
                assert loss == pytest.approx(float(-logp[seq[h.position + 1]]), rel=1e-4)
                assert top == tok.decode([int(logp.argmax())])
                assert prob == pytest.approx(float(logp.max().exp()), rel=1e-4)


def test_different_tokenizers_are_refused(lms, tmp_path):
    from tinymodels import tiny_tokenizer

    other = replace(lms["gpt2"], tokenizer=tiny_tokenizer(tmp_path))  # a WordPiece vocabulary
    with pytest.raises(LlmoptError, match="different tokenizers"):
        compare_lms(lms["gpt2"], other, DOCS, seq_len=16)
