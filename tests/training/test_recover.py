"""Recovery keeps the compression exactly: masks, N:M patterns, quantization grids, factors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from train_data import LR, class_dataset

import llmopt
from llmopt.compression import CompressionConfig, compress
from llmopt.compression.lowrank import LowRankLinear
from llmopt.compression.prune import satisfies_nm
from llmopt.compression.quantize import fake_quantize
from llmopt.compression.targets import get_weight
from llmopt.training.config import TrainConfig
from llmopt.training.constraints import satisfies, snap
from llmopt.training.finetune import recover

SHORT = TrainConfig(epochs=1, train_layers="all", learning_rate=LR, patience=None, eval_every=4)
CASES = {
    "50% + 4-bit": CompressionConfig(sparsity=0.5, bits=4),
    "2:4 + 3-bit": CompressionConfig(sparsity_pattern="2:4", bits=3),
    "rank 8 + 40%": CompressionConfig(rank=8, sparsity=0.4),
}


def weights(loaded, names):
    return {n: get_weight(loaded.model.get_submodule(n)).clone() for n in names}


def check_kept(compressed, recovered, config):
    state = compressed.compression
    names = sorted(set(state["masks"]) | set(state["scales"]))
    assert names, "the compression left nothing to keep"
    assert all(satisfies(recovered.model, state).values())
    before, after = weights(compressed, names), weights(recovered, names)
    assert any(not torch.equal(before[n], after[n]) for n in names), "nothing trained"
    for n in names:
        w = after[n]
        if n in state["masks"]:  # zeros stay zero, exactly where they were
            assert torch.equal(w[~state["masks"][n]], torch.zeros_like(w[~state["masks"][n]]))
        if config.nm:
            assert satisfies_nm(w, *config.nm)
        if n in state["scales"]:  # weight == k * scale with |k| <= 2^(bits-1) - 1
            s = state["scales"][n]
            k = (w.reshape(w.shape[0], s.shape[1], -1) / s.unsqueeze(2)).reshape(w.shape)
            assert torch.equal(k, k.round()) or torch.allclose(k, k.round(), atol=1e-4)
            assert k.abs().max() <= 2 ** (config.bits - 1) - 1 + 1e-4
            assert torch.equal(snap(w, s, config.bits), w)
    if config.rank is not None:
        low = [m for m in recovered.model.modules() if isinstance(m, LowRankLinear)]
        assert low and all(m.rank == config.rank for m in low)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_recovery_finetune_keeps_masks_grids_and_factors(tiny_dirs, tiny2_dir, family, case):
    config = CASES[case]
    if family == "gpt2" and config.bits == 3:  # GPT-2's widths (32, 128) take groups of 16
        config = CompressionConfig(sparsity_pattern="2:4", bits=3, group_size=16)
    loaded = llmopt.load_model(str(tiny2_dir if family == "bert" else tiny_dirs["gpt2"]))
    compressed, _ = compress(loaded, config)
    data = class_dataset(40, 2)
    if family == "gpt2":  # LABEL_0/1 model: match by position
        data.label_names = ["0", "1"]
    run = recover(compressed, data, "finetune", SHORT)
    check_kept(compressed, run.model, config)
    assert run.task == "recover-finetune" and run.recipe["compression"] == config.to_dict()


def test_snap_reproduces_compressions_grid_and_handles_zero_points():
    w = torch.randn(6, 32)
    deq, scales = fake_quantize(w, 3, 8)
    assert torch.equal(snap(deq, scales, 3), deq)  # grid points stay where they are
    assert torch.equal(snap(w, scales, 3), fake_quantize(w, 3, 8)[0])  # same rounding
    zeros = torch.full_like(scales, 3.0)  # asymmetric: levels 0..7 around zero point 3
    q = snap(w, scales, 3, zeros) / scales.repeat_interleave(8, 1)
    assert torch.allclose(q, q.round(), atol=1e-5) and q.min() >= -3 - 1e-5 and q.max() <= 4 + 1e-5


def test_head_refit_recovers_a_damaged_head_and_keeps_the_rest(tiny3_dir):
    loaded = llmopt.load_model(str(tiny3_dir))
    compressed, _ = compress(loaded, CompressionConfig(sparsity=0.5, bits=4))
    train, test = class_dataset(90, 3), class_dataset(30, 3, seed=1, split="test")
    run = recover(compressed, train, "head", eval_data=test)
    assert run.after.metrics["accuracy"] > max(run.before.metrics["accuracy"], 0.6)
    assert all(satisfies(run.model.model, compressed.compression).values())
    a, b = compressed.model.state_dict(), run.model.model.state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed == {"classifier.weight", "classifier.bias"}


def test_int8_kernels_cannot_be_recovered(tiny2_dir):
    loaded = llmopt.load_model(str(tiny2_dir))
    compressed, _ = compress(loaded, CompressionConfig(int8_dynamic=True))
    with pytest.raises(llmopt.LlmoptError, match="int8"):
        recover(compressed, class_dataset(20, 2), "finetune", SHORT)


def test_recovered_model_saves_and_loads_with_the_same_predictions(tiny2_dir, tmp_path):
    loaded = llmopt.load_model(str(tiny2_dir))
    compressed, _ = compress(loaded, CompressionConfig(sparsity=0.5, bits=4))
    test = class_dataset(20, 2, seed=1, split="test")
    run = recover(compressed, class_dataset(40, 2), "finetune", SHORT, eval_data=test)
    llmopt.save_model(run.model, tmp_path / "rec")
    back = llmopt.load_model(str(tmp_path / "rec"))
    assert all(satisfies(back.model, compressed.compression).values())
    np.testing.assert_allclose(llmopt.evaluate(back, test).y_score, run.after.y_score, atol=1e-6)


def test_head_refit_on_gpt2_fits_its_bias_free_score_layer(tiny_dirs):
    """GPT-2's head reads the last real token and has no bias: the re-fit changes only
    ``score.weight``, and the re-fitted model predicts what the fitted linear head says."""
    loaded = llmopt.load_model(str(tiny_dirs["gpt2"]))
    compressed, _ = compress(loaded, CompressionConfig(sparsity=0.5, bits=4))
    train, test = class_dataset(90, 2), class_dataset(30, 2, seed=1, split="test")
    run = recover(compressed, train, "head", eval_data=test)
    a, b = compressed.model.state_dict(), run.model.model.state_dict()
    assert {k for k in a if not torch.equal(a[k], b[k])} == {"score.weight"}
    assert all(satisfies(run.model.model, compressed.compression).values())
    assert run.after.metrics["accuracy"] >= run.before.metrics["accuracy"]
