"""Perplexity by both protocols: the paper protocol equals the model's own labels= loss, the
per-document protocol equals lm-evaluation-harness's loglikelihood_rolling, and the bootstrap
intervals behave."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from lmtiny import FAMILIES, make_docs

from llmopt.errors import LlmoptError
from llmopt.lm.intervals import paired_interval, perplexity_interval
from llmopt.lm.perplexity import default_seq_len, perplexity
from llmopt.lm.windows import rolling_windows

DOCS = make_docs(24, seed=7) + ["", "one", "  spaced   out  ", "naïve café 🍪\n\nend"]


@pytest.mark.parametrize("family", FAMILIES)
def test_paper_protocol_equals_the_models_own_loss(lms, family):
    lm = lms[family]
    seq_len = 16
    result = perplexity(lm, DOCS, protocol="paper", seq_len=seq_len, batch_size=5)
    ids = lm.tokenizer("\n\n".join(DOCS), return_tensors="pt").input_ids[0]
    n = ids.numel() // seq_len
    assert n == len(result.nll) > 5
    with torch.no_grad():
        losses = [
            float(lm.model(w[None], labels=w[None]).loss)
            for w in ids[: n * seq_len].view(n, seq_len)
        ]
    expected = math.exp(np.mean(losses))
    assert result.perplexity == pytest.approx(expected, rel=1e-5)
    assert result.tokens.tolist() == [seq_len - 1] * n
    np.testing.assert_allclose(result.nll / (seq_len - 1), losses, rtol=1e-4)
    assert result.tokens_per_second > 0


def test_paper_bytes_are_the_scored_text(lms):
    """Each window's bytes are the bytes of the text its scored tokens (1..) cover."""
    lm = lms["gpt2"]
    ascii_docs = [d.encode("ascii", "ignore").decode() for d in DOCS]
    result = perplexity(lm, ascii_docs, seq_len=16)
    for tokens, n_bytes in zip(result.windows.tokens, result.bytes, strict=True):
        assert n_bytes == len(lm.tokenizer.decode(tokens[1:]).encode("utf-8"))
    assert result.bits_per_byte == pytest.approx(
        result.nll.sum() / result.bytes.sum() / math.log(2)
    )
    text = "good naïve café 🍪 crème brûlée"  # one window: every byte but the first token's
    n = len(lm.tokenizer(text).input_ids)
    one = perplexity(lm, [text], seq_len=n)
    first = lm.tokenizer.decode(one.windows.tokens[0][:1])
    assert one.bytes.tolist() == [len(text.encode("utf-8")) - len(first.encode("utf-8"))]


def test_utf8_prefix_bytes():
    from llmopt.lm.windows import utf8_prefix_bytes

    text = "aé€🍪b"
    expected = [len(text[:k].encode("utf-8")) for k in range(len(text) + 1)]
    assert utf8_prefix_bytes(text).tolist() == expected


def test_rolling_windows_match_the_harness_utilities():
    from lm_eval import utils

    tokens = list(range(10, 47))
    for max_len in (1, 2, 5, 8, 36, 37, 40):
        expected = [
            utils.make_disjoint_window(w)
            for w in utils.get_rolling_token_windows(tokens, 0, max_len, 1)
        ]
        ours = rolling_windows(tokens, 0, max_len)
        assert len(ours) == len(expected)
        for (window, n), (context, cont) in zip(ours, expected, strict=True):
            assert window == (context + cont)[-(max_len + 1) :]
            assert n == len(cont)


@pytest.fixture(scope="module")
def harness_results(lms):
    """lm-evaluation-harness's loglikelihood_rolling of every document, for each family."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    out = {}
    for family, lm in lms.items():
        hf = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, max_length=16, batch_size=4)
        requests = [Instance("loglikelihood_rolling", {}, (doc,), i) for i, doc in enumerate(DOCS)]
        out[family] = np.array(hf.loglikelihood_rolling(requests, disable_tqdm=True))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_document_protocol_equals_the_harness(lms, harness_results, family):
    lm = lms[family]
    result = perplexity(lm, DOCS, protocol="document", seq_len=16, batch_size=3)
    loglik = harness_results[family]
    np.testing.assert_allclose(-result.nll, loglik, rtol=1e-4, atol=1e-4)
    words = sum(len(re.split(r"\s+", d)) for d in DOCS)
    n_bytes = sum(len(d.encode("utf-8")) for d in DOCS)
    from lm_eval.api.metrics import bits_per_byte, weighted_perplexity

    pairs_words = list(zip(loglik, [len(re.split(r"\s+", d)) for d in DOCS], strict=True))
    pairs_bytes = list(zip(loglik, [len(d.encode("utf-8")) for d in DOCS], strict=True))
    assert result.words.sum() == words and result.bytes.sum() == n_bytes
    assert result.word_perplexity == pytest.approx(weighted_perplexity(pairs_words), rel=1e-4)
    assert result.byte_perplexity == pytest.approx(weighted_perplexity(pairs_bytes), rel=1e-4)
    assert result.bits_per_byte == pytest.approx(bits_per_byte(pairs_bytes), rel=1e-4)
    assert result.documents == len(DOCS)


def test_document_protocol_prefixes_bos_or_end_of_text(lms):
    llama = perplexity(lms["llama"], ["good tea"], protocol="document", seq_len=16)
    gpt2 = perplexity(lms["gpt2"], ["good tea"], protocol="document", seq_len=16)
    assert llama.windows.tokens[0][0] == lms["llama"].tokenizer.bos_token_id
    assert gpt2.windows.tokens[0][0] == lms["gpt2"].tokenizer.eos_token_id


def test_interval_contains_the_estimate_and_narrows_with_more_documents(lms):
    lm = lms["qwen2"]
    widths = []
    for n in (10, 80):
        result = perplexity(lm, make_docs(n, seed=3), protocol="document", seq_len=32)
        lo, hi = perplexity_interval(result)
        assert lo < result.perplexity < hi
        lo_b, hi_b = perplexity_interval(result, "bits_per_byte")
        assert lo_b < result.bits_per_byte < hi_b
        widths.append((hi - lo) / result.perplexity)
    assert widths[1] < 0.6 * widths[0]


def test_paired_interval(lms):
    lm = lms["opt"]
    docs = make_docs(40, seed=5)
    base = perplexity(lm, docs, protocol="document", seq_len=32)
    assert paired_interval(base, base) == (0.0, 0.0)
    noisy = lm.model.__class__(lm.model.config)
    noisy.load_state_dict(lm.model.state_dict())
    with torch.no_grad():
        for p in noisy.parameters():
            p.mul_(1.6)
    other = perplexity(replace(lm, model=noisy.eval()), docs, protocol="document", seq_len=32)
    lo, hi = paired_interval(base, other)
    delta = other.perplexity - base.perplexity
    assert lo <= delta <= hi
    assert lo > 0 or hi < 0  # scaling every weight by 1.6 is not noise
    paper = perplexity(lm, docs, seq_len=32)
    with pytest.raises(LlmoptError, match="not scored on the same"):
        paired_interval(base, paper)


def test_default_seq_len_and_errors(lms):
    lm = lms["gpt2"]
    assert default_seq_len(lm) == 64
    with pytest.raises(LlmoptError, match="fewer than one window"):
        perplexity(lm, ["good"], seq_len=64)
    with pytest.raises(LlmoptError, match="longer than"):
        perplexity(lm, DOCS, seq_len=65)
    with pytest.raises(LlmoptError, match="protocol 'wiki'"):
        perplexity(lm, DOCS, protocol="wiki", seq_len=16)
    with pytest.raises(LlmoptError, match="no texts"):
        perplexity(lm, [], seq_len=16)
    with pytest.raises(LlmoptError, match="empty"):
        perplexity(lm, ["", ""], protocol="document", seq_len=16)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_16_bit_weights_score_close_to_fp32(lm_dirs, lms, dtype):
    from llmopt.lm.load import load_causal_lm

    half = load_causal_lm(str(lm_dirs["llama"]), dtype=dtype, device="cpu")
    assert next(half.model.parameters()).dtype != torch.float32
    full = perplexity(lms["llama"], DOCS, seq_len=16)
    low = perplexity(half, DOCS, seq_len=16)
    assert low.perplexity == pytest.approx(full.perplexity, rel=0.03)
