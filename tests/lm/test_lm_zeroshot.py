"""Zero-shot label scoring: probabilities are the softmax of verbalizer log-likelihoods after
the prompt, equal to lm-evaluation-harness's loglikelihood; acc_norm as the harness computes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lmtiny import FAMILIES, make_docs

from llmopt.errors import LlmoptError
from llmopt.lm.zeroshot import DEFAULT_VERBALIZERS, ZeroShotConfig, zero_shot

TEXTS = make_docs(8, seed=2, max_words=5) + ["{braces} stay text", ""]  # within 64 tokens
LONG = make_docs(4, seed=9, min_words=30, max_words=40)  # cut from the left, as the harness
LABELS = ["great", "other", "meh"]
Y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
CONFIG = ZeroShotConfig(
    prompt="Review: {text}\nVerdict:",
    verbalizers={"great": "great", "other": "bad taste", "meh": "café 🍪"},
)


def _direct_loglik(lm, context: str, continuation: str) -> float:
    """log p(continuation | context), tokens split as the whole text's tokenization."""
    tok = lm.tokenizer
    ctx = tok.encode(context)
    whole = tok.encode(context + continuation)
    assert whole[: len(ctx)] == ctx
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([whole[:-1]])).logits[0], -1)
    picked = logp[len(ctx) - 1 :].gather(-1, torch.tensor(whole[len(ctx) :])[:, None])
    return float(picked.sum())


@pytest.mark.parametrize("family", FAMILIES)
def test_probabilities_are_the_softmax_of_direct_logliks(lms, family):
    lm = lms[family]
    result = zero_shot(lm, TEXTS, LABELS, y_true=Y, config=CONFIG, batch_size=4)
    direct = np.array(
        [
            [_direct_loglik(lm, CONFIG.context(t), " " + CONFIG.verbalizers[n]) for n in LABELS]
            for t in TEXTS
        ]
    )
    np.testing.assert_allclose(result.loglik, direct, rtol=1e-5, atol=1e-5)
    expected = np.exp(direct) / np.exp(direct).sum(1, keepdims=True)
    np.testing.assert_allclose(result.y_score, expected, rtol=1e-5, atol=1e-7)
    assert result.metrics["acc"] == pytest.approx(np.mean(direct.argmax(1) == Y))
    assert result.metrics["accuracy"] == result.metrics["acc"]
    assert "{braces} stay text" in CONFIG.context(TEXTS[-2])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_logliks_equal_the_harness(lms, family):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = lms[family]
    texts = TEXTS + LONG
    result = zero_shot(lm, texts, LABELS, config=CONFIG)
    hf = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=4)
    requests = [
        Instance("loglikelihood", {}, (CONFIG.context(t), " " + CONFIG.verbalizers[n]), i)
        for i, (t, n) in enumerate((t, n) for t in texts for n in LABELS)
    ]
    harness = np.array([ll for ll, _greedy in hf.loglikelihood(requests, disable_tqdm=True)])
    np.testing.assert_allclose(result.loglik.ravel(), harness, rtol=1e-4, atol=1e-4)


def test_acc_norm_is_the_harness_definition(lms):
    from lm_eval.api.task import MultipleChoiceTask

    result = zero_shot(lms["qwen2"], TEXTS, LABELS, y_true=Y, config=CONFIG)
    choices = [CONFIG.verbalizers[n] for n in LABELS]
    per_row = [
        MultipleChoiceTask.process_results(
            None, {"choices": choices, "gold": int(y)}, [(ll, False) for ll in row]
        )
        for row, y in zip(result.loglik, Y, strict=True)
    ]
    assert result.metrics["acc_norm"] == pytest.approx(np.mean([r["acc_norm"] for r in per_row]))
    assert result.metrics["acc"] == pytest.approx(np.mean([r["acc"] for r in per_row]))
    norm = (result.loglik / np.array([len(c) for c in choices])).argmax(1)
    np.testing.assert_array_equal(result.y_pred_norm, norm)


def test_default_config_fits_the_bundled_labels(lms):
    result = zero_shot(lms["opt"], TEXTS[:3], ["great", "other"], y_true=[0, 1, 0])
    assert result.verbalizers == [DEFAULT_VERBALIZERS["great"], DEFAULT_VERBALIZERS["other"]]
    assert result.y_score.shape == (3, 2)
    np.testing.assert_allclose(result.y_score.sum(1), 1.0)


def test_bad_configs(lms):
    with pytest.raises(LlmoptError, match=r"must contain \{text\}"):
        ZeroShotConfig(prompt="no slot")
    with pytest.raises(LlmoptError, match="at least two labels"):
        ZeroShotConfig(verbalizers={"a": "x"})
    with pytest.raises(LlmoptError, match="verbalizer of label 'b' is empty"):
        ZeroShotConfig(verbalizers={"a": "x", "b": " "})
    with pytest.raises(LlmoptError, match="'a' and 'b' have the same verbalizer 'x'"):
        ZeroShotConfig(verbalizers={"a": "x", "b": " x "})  # always tied: argmax picks 'a'
    with pytest.raises(LlmoptError, match="no verbalizer for label"):
        zero_shot(lms["gpt2"], TEXTS, ["pos", "neg"])
