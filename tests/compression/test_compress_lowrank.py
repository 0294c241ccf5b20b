"""Low-rank: Eckart–Young error, factorised forward, dense reconstruction above break-even."""

from __future__ import annotations

import pytest
import torch

from llmopt.compression import CompressionConfig, compress
from llmopt.compression.lowrank import LowRankLinear, break_even_rank, svd_factors
from llmopt.compression.targets import get_weight
from llmopt.errors import LlmoptError
from llmopt.models import count_params


@pytest.mark.parametrize("shape", [(40, 24), (24, 40), (30, 30)])
def test_svd_factors_are_the_eckart_young_optimum(shape):
    torch.manual_seed(0)
    weight = torch.randn(*shape)
    a, b, s = svd_factors(weight, 5)
    assert a.shape == (shape[0], 5) and b.shape == (5, shape[1])
    torch.testing.assert_close(a.norm(dim=0), b.norm(dim=1))  # balanced: sqrt(S) on each side
    reference = torch.linalg.svdvals(weight.double())
    torch.testing.assert_close(s.double(), reference, rtol=1e-5, atol=1e-5)
    err = torch.linalg.norm(weight.double() - (a @ b).double())
    assert err == pytest.approx(float(reference[5:].square().sum().sqrt()), rel=1e-5)


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2"])
@pytest.mark.parametrize("rank", [4, 12])
def test_reported_rel_error_equals_the_tail_of_singular_values(tiny_models, family, rank):
    loaded = tiny_models[family]
    compressed, report = compress(loaded, CompressionConfig(rank=rank))
    for row in report.rows:
        weight = get_weight(loaded.model.get_submodule(row["name"])).double()
        s = torch.linalg.svdvals(weight)
        expected = float(s[rank:].square().sum().sqrt() / torch.linalg.norm(weight))
        assert row["rel_error"] == pytest.approx(expected, abs=1e-5)
        assert row["rank"] == rank
        factorised = rank < break_even_rank(*row["shape"])
        module = compressed.model.get_submodule(row["name"])
        assert isinstance(module, LowRankLinear) == factorised
        assert row["dense_reconstruction"] == (not factorised)


def test_factorised_forward_equals_the_dense_rank_r_product():
    torch.manual_seed(1)
    weight, bias = torch.randn(30, 20), torch.randn(30)
    a, b, _ = svd_factors(weight, 6)
    layer = LowRankLinear(a, b, bias)
    x = torch.randn(7, 11, 20)  # (batch, seq, in)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ (a @ b).T + bias, atol=1e-5, rtol=1e-5)
        dense = layer.to_dense()
        torch.testing.assert_close(dense(x), layer(x), atol=1e-5, rtol=1e-5)


def test_gpt2_conv1d_factorised_forward(tiny_models):
    loaded = tiny_models["gpt2"]
    compressed, report = compress(loaded, CompressionConfig(rank=4))
    row = report.rows[0]  # c_attn: Conv1D with weight (32, 96) = (in, out)
    assert row["shape"] == [96, 32]
    original = loaded.model.get_submodule(row["name"])
    module = compressed.model.get_submodule(row["name"])
    assert module.conv1d
    a, b, _ = svd_factors(get_weight(original), 4)
    x = torch.randn(3, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(module(x), x @ (a @ b).T + original.bias, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(module.to_dense()(x), module(x), atol=1e-5, rtol=1e-5)


def test_rank_above_break_even_gives_a_flagged_dense_reconstruction(tiny_models):
    loaded = tiny_models["bert"]  # 32x32 attention layers: break-even rank 16
    compressed, report = compress(loaded, CompressionConfig(rank=20))
    square = [r for r in report.rows if r["shape"] == [32, 32]]
    assert square
    for row in square:
        assert row["dense_reconstruction"]
        assert "no size or speed gain" in row["note"]
        assert row["bytes_after"] == row["bytes_before"]
        assert isinstance(compressed.model.get_submodule(row["name"]), torch.nn.Linear)


def test_factorised_layers_store_fewer_bytes(tiny_models):
    compressed, report = compress(tiny_models["gpt2"], CompressionConfig(rank=4))
    total, _ = count_params(compressed.model)
    base_total, _ = count_params(tiny_models["gpt2"].model)
    moved = report.totals["params_before"] - report.totals["params_after"]
    assert moved > 0 and total == base_total - moved
    for row in report.rows:
        out_f, in_f = row["shape"]
        assert row["bytes_after"] == 4 * (4 * (out_f + in_f) + out_f)  # factors + bias, fp32


def test_rank_above_a_layers_limit_names_the_layer(tiny_models):
    with pytest.raises(LlmoptError) as info:
        compress(tiny_models["bert"], CompressionConfig(rank=33))
    message = str(info.value)
    assert "rank 33" in message and "at most 32" in message and "bert.encoder.layer" in message


def test_group_size_must_divide_the_factor_input(tiny_models):
    with pytest.raises(LlmoptError, match="rank 6"):
        compress(tiny_models["gpt2"], CompressionConfig(rank=6, bits=4, group_size=4))
    _, report = compress(tiny_models["gpt2"], CompressionConfig(rank=8, bits=4, group_size=8))
    assert all(r["group_size"] == 8 for r in report.rows)
