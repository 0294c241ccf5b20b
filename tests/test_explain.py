"""Teaching data is the real thing: engine targets, Eckart–Young errors, grid values, N:M masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import llmopt
from llmopt.errors import LlmoptError
from llmopt.explain import (
    FORMULAS,
    get_weight,
    mask_block,
    nm_block,
    quant_grid,
    spectrum,
    weight_matrices,
)


@pytest.fixture(scope="module")
def bert(tiny_dirs):
    return llmopt.load_model(str(tiny_dirs["bert"]))


@pytest.fixture(scope="module")
def gpt2(tiny_dirs):
    return llmopt.load_model(str(tiny_dirs["gpt2"]))


@pytest.fixture()
def weight():
    return np.random.default_rng(0).normal(size=(24, 40))  # (out, in)


def test_weight_matrices_are_the_block_linears(bert, gpt2):
    names = weight_matrices(bert)
    expected = [
        n
        for n, m in bert.model.named_modules()
        if isinstance(m, torch.nn.Linear) and ".encoder.layer." in n
    ]
    assert names == expected and len(names) == 12
    assert not any("pooler" in n or "classifier" in n for n in names)
    assert len(weight_matrices(gpt2)) == 8  # c_attn, c_proj, c_fc, mlp.c_proj per block


def test_get_weight_default_is_the_first_query_as_out_by_in(bert, gpt2):
    name, w = get_weight(bert)
    assert name == "bert.encoder.layer.0.attention.self.query"
    np.testing.assert_array_equal(w, bert.model.get_submodule(name).weight.detach().numpy())
    name, w = get_weight(gpt2)
    conv = gpt2.model.get_submodule(name)
    assert name == "transformer.h.0.attn.c_attn"
    assert w.shape == (96, 32)  # Conv1D stores (in=32, out=96)
    np.testing.assert_array_equal(w, conv.weight.detach().numpy().T)


def test_get_weight_by_name_and_unknown_name(bert):
    name = "bert.encoder.layer.1.intermediate.dense"
    assert get_weight(bert, name)[1].shape == (37, 32)
    with pytest.raises(LlmoptError, match="choose one of"):
        get_weight(bert, "bert.pooler.dense")


@pytest.mark.parametrize("rank", [1, 5, 17, 24])
def test_spectrum_matches_eckart_young(weight, rank):
    w = weight
    result = spectrum(w, rank)
    sigma = torch.linalg.svdvals(torch.tensor(w, dtype=torch.float64)).numpy()
    expected = np.sqrt(np.sum(sigma[rank:] ** 2)) / np.linalg.norm(w)
    assert result["rel_error"] == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert result["rel_error_factors"] == pytest.approx(expected, rel=1e-3, abs=1e-5)
    assert result["energy_kept"] == pytest.approx(np.sum(sigma[:rank] ** 2) / np.sum(sigma**2))
    np.testing.assert_allclose(result["singular_values"], sigma, rtol=1e-5)
    assert np.all(np.diff(result["energy"]) >= -1e-12)


def test_spectrum_full_rank_keeps_everything(weight):
    w = weight
    result = spectrum(w)
    assert result["rank"] == 24
    assert result["energy"][-1] == pytest.approx(1.0)
    assert result["energy_kept"] == pytest.approx(1.0)
    assert result["rel_error"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(LlmoptError, match="rank"):
        spectrum(w, 25)


@pytest.mark.parametrize(("bits", "group_size"), [(8, None), (4, None), (3, 8), (2, 20)])
def test_quant_grid_values_lie_on_the_grid(weight, bits, group_size):
    w = weight
    q = quant_grid(w, bits, group_size, row=3)
    levels = 2 ** (bits - 1) - 1
    assert len(q["grid"]) == 2 * levels + 1
    assert len(q["weights"]) == (group_size or w.shape[1])
    np.testing.assert_array_equal(q["weights"], w[3, : len(q["weights"])].astype(np.float32))
    # every dequantized value is one of the grid levels
    distance = np.abs(q["dequantized"][:, None] - q["grid"][None, :]).min(axis=1)
    assert np.all(distance <= 1e-6 * q["step"])
    # the step makes the largest |w| the top level (scales are stored in fp16)
    top = np.abs(q["weights"]).max()
    assert q["step"] * levels == pytest.approx(top, rel=1e-3)
    # rounding to nearest: no value moves by more than half a step
    assert np.all(np.abs(q["weights"] - q["dequantized"]) <= 0.5 * q["step"] * (1 + 1e-3))
    assert q["mse"] == pytest.approx(np.mean((q["weights"] - q["dequantized"]) ** 2), rel=1e-6)


def test_quant_grid_rejects_a_group_that_does_not_divide(weight):
    w = weight
    with pytest.raises(LlmoptError, match="divides 40"):
        quant_grid(w, 4, 64)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4)])
def test_nm_block_has_m_minus_n_zeros_per_group(weight, n, m):
    w = weight
    block = nm_block(w, n, m, rows=16, cols=30)
    assert block.dtype == bool
    assert block.shape == (16, 30 - 30 % m)
    groups = block.reshape(16, -1, m)  # (rows, groups, m)
    assert np.all((~groups).sum(axis=2) >= m - n)
    # the kept ones are the largest |w| of their group
    abs_groups = np.abs(w[:16, : block.shape[1]]).reshape(16, -1, m)
    kept_min = np.where(groups, abs_groups, np.inf).min(axis=2)
    dropped_max = np.where(groups, -np.inf, abs_groups).max(axis=2)
    assert np.all(kept_min >= dropped_max)


def test_mask_block_unstructured_keeps_the_largest_of_each_row(weight):
    w = weight
    block = mask_block(w, 0.75, rows=8, cols=40)
    n_drop = round(0.75 * w.shape[1])
    for r in range(8):
        dropped = np.argsort(np.abs(w[r]), kind="stable")[:n_drop]
        expected = np.ones(w.shape[1], dtype=bool)
        expected[dropped] = False
        np.testing.assert_array_equal(block[r], expected)
    assert mask_block(w, 0.5, "2:4").shape == (16, 32)
    with pytest.raises(LlmoptError):
        mask_block(w, 0.5, "3:2")


def test_formulas_cover_every_method_with_maths():
    for key in ("attention", "quantization", "wanda", "nm", "svd", "eckart_young", "kl", "js"):
        assert "$" in FORMULAS[key] and "—" in FORMULAS[key], key
    assert "agreement" in FORMULAS
