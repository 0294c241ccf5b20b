"""The fast paths of calibration give the statistics of the plain computations: the Gram
matrix from its upper triangle, hooks that skip an all-real mask, and the causal-LM path
labelling a model in any float type."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmopt.compression import CompressionConfig, compress
from llmopt.compression.calibrate import GRAM_BLOCK, _Hooks, gram
from llmopt.lm.device import DTYPES, dtype_name
from llmopt.lm.load import LoadedLM


@pytest.mark.parametrize("width", [7, GRAM_BLOCK, GRAM_BLOCK + 1, 2 * GRAM_BLOCK + 77])
def test_gram_equals_xtx_and_is_exactly_symmetric(width):
    x = torch.randn(300, width, generator=torch.Generator().manual_seed(width))
    got = gram(x)
    torch.testing.assert_close(got, x.T @ x, rtol=1e-5, atol=1e-3)
    assert torch.equal(got, got.T)


def _stats(mask):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    x = torch.randn(2, 5, 8)
    hooks = _Hooks(model, ["0", "2"], ("hessian", "absmax"))
    hooks.mask = mask
    with torch.no_grad():
        model(x)
    return hooks.close()


def test_an_all_real_mask_gives_the_statistics_of_no_mask_and_padding_still_counts_out():
    none, full = _stats(None), _stats(torch.ones(2, 5, dtype=torch.bool))
    padded = torch.ones(2, 5, dtype=torch.bool)
    padded[1, 3:] = False
    part = _stats(padded)
    for name in ("0", "2"):
        assert full[name].tokens == none[name].tokens == 10
        assert torch.equal(full[name].xtx, none[name].xtx)
        assert torch.equal(full[name].absmax, none[name].absmax)
        assert part[name].tokens == 8
        assert not torch.equal(part[name].xtx, none[name].xtx)


def test_dtype_names_cover_every_float_type():
    for name, dtype in DTYPES.items():
        assert dtype_name(dtype) == name
    assert dtype_name(torch.float64) == "float64"


def test_a_float64_causal_lm_compresses_and_is_labelled():
    """Pruning keeps the stored float type; the engine looked that up in a three-entry map and
    raised StopIteration for fp64."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=50,
        n_embd=16,
        n_layer=2,
        n_head=2,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(config).eval().double()
    lm = LoadedLM(
        model=model,
        tokenizer=None,
        name="tiny-fp64",
        source="random",
        dtype="float64",
        device="cpu",
        max_length=32,
    )
    out, _report = compress(lm, CompressionConfig(sparsity=0.5), seq_len=16)
    assert out.dtype == "float64"
    assert next(out.model.parameters()).dtype == torch.float64


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.o = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x):
        return self.o(torch.tanh(self.q(x) * self.k(x)))


def test_layers_fed_the_same_inputs_share_one_statistics_object_and_others_do_not():
    """GPTQ and SparseGPT invert a shared object's Hessian once (q/k/v, up/gate)."""
    torch.manual_seed(0)
    model = _Attention()
    hooks = _Hooks(model, ["q", "k", "o"], ("hessian",))
    with torch.no_grad():
        for _ in range(2):
            hooks.mask = None
            model(torch.randn(3, 4, 6))
    stats = hooks.close()
    assert stats["q"] is stats["k"]
    assert stats["o"] is not stats["q"]
    assert stats["q"].tokens == stats["o"].tokens == 24
