"""Quantization: RTN grid, SNR at 8 bits, error against bits and groups, real int8 kernels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmopt.compression import CompressionConfig, compress
from llmopt.compression.quantize import fake_quantize, is_dynamic_int8
from llmopt.compression.targets import get_weight
from llmopt.evaluation import predict_proba
from llmopt.models import count_params, dense_size_bytes


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("group_size", [None, 8, 16])
def test_dequantized_weights_lie_on_their_grid(bits, group_size):
    torch.manual_seed(bits)
    weight = torch.randn(10, 48) * 0.05
    weight[3] = 0.0  # an all-zero row keeps a usable scale
    deq, scales = fake_quantize(weight, bits, group_size)
    g = group_size or 48
    assert deq.shape == weight.shape and scales.shape == (10, 48 // g)
    levels = deq.reshape(10, -1, g) / scales.unsqueeze(2)
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert levels.abs().max() <= 2 ** (bits - 1) - 1 + 1e-4
    assert (deq[3] == 0).all()
    # round to nearest: no weight moves by more than half a step (plus the fp16 scale rounding)
    step = scales.repeat_interleave(g, dim=1)
    assert ((deq - weight).abs() <= 0.5 * step * (1 + 2e-3)).all()


def test_zeros_stay_zeros_when_pruning_meets_quantization():
    torch.manual_seed(0)
    weight = torch.randn(8, 32)
    weight[weight.abs() < 0.7] = 0.0
    deq, _ = fake_quantize(weight, 3, 8)
    assert ((weight == 0) <= (deq == 0)).all()


def test_error_shrinks_with_bits_and_groups_help(tiny_models):
    loaded = tiny_models["gpt2"]  # input sizes 32 and 128
    errors = {}
    for bits in range(2, 9):
        for group in (None, 16):
            _, report = compress(loaded, CompressionConfig(bits=bits, group_size=group))
            errors[bits, group] = report.totals["mean_rel_error"]
    per_channel = [errors[b, None] for b in range(2, 9)]
    assert all(a > b for a, b in zip(per_channel, per_channel[1:], strict=False))
    assert all(errors[b, 16] <= errors[b, None] for b in range(2, 9))


def test_group_wise_error_at_most_per_channel_on_one_matrix():
    torch.manual_seed(5)
    weight = torch.randn(64, 128) * torch.logspace(-1, 1, 128)  # uneven input channels
    for bits in (3, 4, 8):
        per_row = torch.linalg.norm(fake_quantize(weight, bits)[0] - weight)
        grouped = torch.linalg.norm(fake_quantize(weight, bits, 32)[0] - weight)
        assert grouped <= per_row


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2"])
def test_8_bit_outputs_keep_snr_above_35_db(tiny_models, tiny_dataset, family):
    loaded = tiny_models[family]
    compressed, _ = compress(loaded, CompressionConfig(bits=8))
    batch = loaded.tokenizer(tiny_dataset.texts, padding=True, return_tensors="pt")
    if family == "distilbert":
        batch.pop("token_type_ids", None)
    with torch.no_grad():
        ref = loaded.model(**batch).logits
        out = compressed.model(**batch).logits
    snr_db = 10 * math.log10(float((ref**2).sum() / ((ref - out) ** 2).sum()))
    assert snr_db >= 35.0


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_int8_dynamic_uses_real_int8_kernels(tiny_models, tiny_dataset, family):
    loaded = tiny_models[family]
    compressed, report = compress(loaded, CompressionConfig(int8_dynamic=True))
    quantized = [n for n, m in compressed.model.named_modules() if is_dynamic_int8(m)]
    assert sorted(quantized) == sorted(r["name"] for r in report.rows)
    base_p, _, _ = predict_proba(loaded, tiny_dataset.texts)
    int8_p, _, _ = predict_proba(compressed, tiny_dataset.texts)
    assert (base_p.argmax(1) == int8_p.argmax(1)).mean() >= 0.9
    assert np.abs(base_p - int8_p).max() < 0.05
    assert compressed.size_bytes < dense_size_bytes(loaded.model)
    assert count_params(compressed.model)[0] == count_params(loaded.model)[0]  # packed ones too
    for row in report.rows:
        assert row["bytes_after"] < row["bytes_before"] / 3  # int8 + scales vs fp32
        weight = get_weight(compressed.model.get_submodule(row["name"]))
        assert 0 < row["rel_error"] < 0.02 and weight.dtype == torch.float32
    assert any("measured" in note for note in compressed.notes)


def test_quantized_storage_accounting(tiny_models):
    loaded = tiny_models["gpt2"]
    compressed, report = compress(loaded, CompressionConfig(bits=4, group_size=16))
    for row in report.rows:
        out_f, in_f = row["shape"]
        expected_bits = out_f * in_f * 4 + out_f * (in_f // 16) * 16 + out_f * 32  # + fp32 bias
        assert row["bytes_after"] == math.ceil(expected_bits / 8)
        assert row["bytes_before"] == (out_f * in_f + out_f) * 4
    moved = sum(r["bytes_before"] - r["bytes_after"] for r in report.rows)
    assert compressed.size_bytes == dense_size_bytes(loaded.model) - moved
    assert report.totals["model_bytes_after"] == compressed.size_bytes
