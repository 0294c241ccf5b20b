"""Per-layer sensitivity of causal LMs (issue 16 item 5): NLL per token on the paper protocol's
windows of validation texts from the training split; the suffix-only shortcut reproduces the
compressed model's logits, and each delta is the log-perplexity change of the normal path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lmtiny import FAMILIES, make_docs

from llmopt import sensitivity as S
from llmopt.compression import compress
from llmopt.data import TextDataset
from llmopt.lm.perplexity import perplexity

SEQ_LEN = 16
TRAIN = TextDataset(make_docs(80, seed=4), np.zeros(80), ["text"], name="tiny", split="train")


@pytest.mark.parametrize("family", FAMILIES)
def test_suffix_logits_equal_full_forward(lms, family):
    """Each family's blocks take their own keyword inputs (masks, rotary position embeddings):
    replaying the first block from the cache must leave the later ones computing as usual."""
    lm = lms[family]
    validation, _ = S.split_validation(TRAIN, 40)
    val = S.Validation(lm, validation, SEQ_LEN)
    val.cache_outputs(lm.model, {0})
    unit = next(u for u in S.units(lm.model, "matrix") if u.first_block == 1)
    compressed, _ = compress(
        lm,
        S.level_config("quantize", "rtn", 2),
        filter_fn=lambda _m, n: n in unit.matrices,
        seq_len=SEQ_LEN,
    )
    full = val.logits(compressed.model, 0)
    suffix = val.logits(compressed.model, 1)
    for a, b in zip(full, suffix, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_nll_delta_equals_perplexity_change(lms, family):
    lm = lms[family]
    result = S.sensitivity(
        lm, TRAIN, kind="prune", method="wanda", levels=[0.7], granularity="block",
        validation_rows=40, calibration_samples=4, seq_len=SEQ_LEN,
    )  # fmt: skip
    assert result.metric == "nll"
    validation, calibration = S.split_validation(TRAIN, 40)
    base = perplexity(lm, validation.texts, seq_len=SEQ_LEN)
    assert result.baseline == pytest.approx(math.log(base.perplexity), rel=1e-6)
    units = {u.name: u for u in S.units(lm.model, "block")}
    changed = 0.0
    for row in result.layers:
        config = S.level_config("prune", "wanda", 0.7, 4, calibration="one-pass")
        compressed, _ = compress(
            lm,
            config,
            calibration=calibration,
            filter_fn=lambda _m, n, u=units[row.name]: n in u.matrices,
            seq_len=SEQ_LEN,
        )
        other = perplexity(compressed, validation.texts, seq_len=SEQ_LEN)
        expect = math.log(other.perplexity) - math.log(base.perplexity)
        assert row.delta == pytest.approx(expect, rel=1e-5, abs=1e-7)
        assert row.interval[0] <= row.delta <= row.interval[1]
        changed += abs(row.delta)
    assert changed > 0
    assert set(result.proxy_correlation) == set(S.PROXIES)


def test_cli_on_a_causal_lm(lm_dirs, tmp_path):
    """``llmopt sensitivity --model <causal LM>`` reports the NLL per token by matrix type."""
    import csv
    import json

    from llmopt.cli import main

    data = tmp_path / "texts.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i, doc in enumerate(make_docs(60, seed=8, min_words=5)):
            writer.writerow([doc, i % 2])
    out = tmp_path / "s.json"
    argv = ["sensitivity", "--model", str(lm_dirs["qwen2"]), "--dataset", str(data),
            "--quant-method", "rtn", "--levels", "2", "--granularity", "type",
            "--validation-rows", "20", "--seq-len", str(SEQ_LEN), "--dtype", "fp32",
            "--device", "cpu", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["metric"] == "nll" and result["granularity"] == "type"
    names = [r["name"] for r in result["layers"]]
    assert len(names) == len(set(names)) >= 4 and all("layers." not in n for n in names)


def test_quantizing_a_bf16_lm_measures_the_normal_path(lm_dirs):
    """A bf16 LM's quantized copy comes back in fp32 while the dense prefix's cached outputs
    are bf16: the measurement ran the cached bf16 hidden states into fp32 matrices and failed
    ('mat1 and mat2 must have the same dtype'; found by `llmopt search` on lm:bundled). Each
    delta now equals the log-perplexity change of compressing that unit alone."""
    from llmopt.lm.load import load_causal_lm

    lm = load_causal_lm(str(lm_dirs["gpt2"]), dtype="bf16", device="cpu")
    result = S.sensitivity(
        lm, TRAIN, kind="quantize", method="rtn", levels=[3], granularity="block",
        validation_rows=40, seq_len=SEQ_LEN,
    )  # fmt: skip
    validation, _ = S.split_validation(TRAIN, 40)
    base = perplexity(lm, validation.texts, seq_len=SEQ_LEN)
    units = {u.name: u for u in S.units(lm.model, "block")}
    assert len(result.layers) == len(units) == 2
    for row in result.layers:
        compressed, _ = compress(
            lm,
            S.level_config("quantize", "rtn", 3),
            filter_fn=lambda _m, n, unit=units[row.name]: n in unit.matrices,
            seq_len=SEQ_LEN,
        )
        other = perplexity(compressed, validation.texts, seq_len=SEQ_LEN)
        expected = math.log(other.perplexity) - math.log(base.perplexity)
        assert row.delta == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_inner_replay_logits_equal_full_forward(lms, family):
    """Each family's block computes its attention and MLP in its own order (a fused QKV, a
    gate and an up projection): replaying what block 1 computes before each matrix must give
    the full forward's logits."""
    lm = lms[family]
    validation, _ = S.split_validation(TRAIN, 40)
    val = S.Validation(lm, validation, SEQ_LEN)
    val.cache_outputs(lm.model, {0})
    units = [u for u in S.units(lm.model, "matrix") if u.first_block == 1]
    plan = val.cache_inner(lm.model, 1, {u.name: u.matrices for u in units})
    assert any(plan.values())
    for unit in units:
        compressed, _ = compress(
            lm,
            S.level_config("quantize", "rtn", 2),
            filter_fn=lambda _m, n, u=unit: n in u.matrices,
            seq_len=SEQ_LEN,
        )
        full = val.logits(compressed.model, 0)
        fast = val.logits(compressed.model, 1, plan[unit.name])
        assert all(torch.equal(a, b) for a, b in zip(full, fast, strict=True)), unit.name
