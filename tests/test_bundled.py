"""Integration: the real bundled MiniLM model on a few real reviews."""

import numpy as np
import pytest
import torch

import llmopt
from llmopt.models import model_facts

pytestmark = pytest.mark.integration


def test_bundled_model_is_a_working_classifier(bundled_model):
    data = llmopt.load_dataset("bundled", "test", limit=60)
    result = llmopt.evaluate(bundled_model, data)
    assert result.label_names == ["great", "other"]
    assert result.metrics["accuracy"] > 0.65  # full test split: 0.78; chance is 0.5
    assert result.metrics["roc_auc"] > 0.7
    facts = model_facts(bundled_model)
    assert (facts["layers"], facts["heads"], facts["hidden_size"]) == (6, 12, 384)
    assert facts["size_bytes"] == result.size_bytes > 80e6


def test_bundled_model_gives_attentions_and_compressible_linears(bundled_model):
    enc = bundled_model.tokenizer(["the coffee was great"], return_tensors="pt")
    with torch.inference_mode():
        out = bundled_model.model(**enc, output_attentions=True)
    assert len(out.attentions) == 6
    att = out.attentions[0][0]  # (heads, seq, seq)
    np.testing.assert_allclose(att.sum(-1).numpy(), 1.0, atol=1e-5)
    linears = [
        n
        for n, m in bundled_model.model.named_modules()
        if isinstance(m, torch.nn.Linear) and ".layer." in n
    ]
    assert len(linears) == 36  # 6 blocks x (q, k, v, out, ffn in, ffn out)
