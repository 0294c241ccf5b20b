"""Pruning: masks against torch.nn.utils.prune, N:M groups, Wanda's activation weighting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from llmopt.batching import encode, iter_batches
from llmopt.compression import CompressionConfig, compress
from llmopt.compression.calibrate import input_norms
from llmopt.compression.prune import global_masks, magnitude_mask, nm_mask, wanda_scores
from llmopt.compression.targets import find_targets, get_weight, in_blocks
from llmopt.data import TextDataset
from llmopt.errors import LlmoptError


@pytest.mark.parametrize("sparsity", [0.1, 0.3, 0.5, 0.77])
def test_magnitude_mask_equals_torch_l1_unstructured_row_by_row(sparsity):
    torch.manual_seed(0)
    weight = torch.randn(12, 37)
    ours = magnitude_mask(weight, sparsity)
    for i in range(weight.shape[0]):
        row = nn.Linear(37, 1, bias=False)
        row.weight.data = weight[i : i + 1].clone()
        torch_prune.l1_unstructured(row, "weight", amount=sparsity)
        assert torch.equal(ours[i], row.weight_mask[0].bool())
    assert (ours.sum(1) == 37 - round(sparsity * 37)).all()


def test_global_masks_equal_torch_global_unstructured():
    torch.manual_seed(1)
    layers = [nn.Linear(16, 8), nn.Linear(8, 24), nn.Linear(24, 4)]
    weights = [layer.weight.detach().clone() for layer in layers]
    ours = global_masks([w.abs() for w in weights], 0.6)
    torch_prune.global_unstructured(
        [(layer, "weight") for layer in layers], torch_prune.L1Unstructured, amount=0.6
    )
    for mine, layer in zip(ours, layers, strict=True):
        assert torch.equal(mine, layer.weight_mask.bool())
    total = sum(w.numel() for w in weights)
    assert sum(int((~m).sum()) for m in ours) == round(0.6 * total)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4), (3, 5)])
def test_nm_mask_keeps_the_n_largest_of_every_group(n, m):
    torch.manual_seed(2)
    scores = torch.rand(6, 8 * m)
    keep = nm_mask(scores, n, m)
    groups = scores.reshape(6, -1, m)
    kept = keep.reshape(6, -1, m)
    assert (kept.sum(2) == n).all()
    # every kept score is at least every dropped score of its group
    lowest_kept = torch.where(kept, groups, torch.inf).amin(2)
    highest_dropped = torch.where(~kept, groups, -torch.inf).amax(2)
    assert (lowest_kept >= highest_dropped).all()


def test_nm_mask_partial_last_group():
    keep = nm_mask(torch.rand(3, 37), 2, 4)  # 9 full groups and one of a single weight
    assert (keep[:, :36].reshape(3, 9, 4).sum(2) == 2).all()
    assert keep[:, 36].all()


def test_wanda_keeps_a_huge_norm_channel_that_magnitude_drops():
    torch.manual_seed(3)
    layer = nn.Linear(8, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(4, 8).abs() + 0.5)
        layer.weight[:, 3] = 0.05  # the smallest weights of every row ...
    x = torch.randn(256, 8)
    x[:, 3] *= 1000.0  # ... meet by far the largest inputs
    act_norm = torch.linalg.norm(x, dim=0)  # (in,)
    by_magnitude = magnitude_mask(layer.weight, 0.5)
    by_wanda = magnitude_mask(wanda_scores(layer.weight, act_norm), 0.5)
    assert not by_magnitude[:, 3].any()
    assert by_wanda[:, 3].all()
    # and Wanda's choice is the better one for this input
    dense = layer(x)
    err = {
        name: torch.linalg.norm(x @ (layer.weight * mask).T - dense)
        for name, mask in [("magnitude", by_magnitude), ("wanda", by_wanda)]
    }
    assert err["wanda"] < err["magnitude"]


def test_input_norms_count_real_tokens_only(tiny_models, tiny_dataset):
    loaded = tiny_models["bert"]
    names = find_targets(loaded.model, in_blocks(loaded.model))[:2]
    texts = tiny_dataset.texts[:10]
    norms = input_norms(loaded.model, loaded.tokenizer, texts, names, max_length=64)
    # reference: one unpadded text at a time, squares summed over all of its tokens
    sums = {n: 0.0 for n in names}
    hooks = [
        loaded.model.get_submodule(n).register_forward_hook(
            lambda _m, args, _o, n=n: sums.__setitem__(n, sums[n] + (args[0] ** 2).sum((0, 1)))
        )
        for n in names
    ]
    encoded = encode(loaded.tokenizer, texts, 64)
    with torch.no_grad():
        for _rows, inputs in iter_batches(encoded, 1):
            loaded.model(**inputs)
    for h in hooks:
        h.remove()
    for n in names:
        torch.testing.assert_close(norms[n], sums[n].sqrt(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2"])
@pytest.mark.parametrize("sparsity", [0.3, 0.5])
def test_measured_sparsity_per_row_equals_the_request(tiny_models, family, sparsity):
    loaded = tiny_models[family]
    compressed, report = compress(loaded, CompressionConfig(sparsity=sparsity))
    for row in report.rows:
        weight = get_weight(compressed.model.get_submodule(row["name"]))
        zeros_per_row = (weight == 0).sum(1)
        assert (zeros_per_row - round(sparsity * weight.shape[1])).abs().max() <= 1
        assert abs(row["sparsity"] - float((weight == 0).double().mean())) < 1e-12


@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_nm_pattern_in_compress(tiny_models, tiny_dataset, pattern, method):
    n, m = map(int, pattern.split(":"))
    loaded = tiny_models["gpt2"]  # input sizes 32 and 128: whole groups
    config = CompressionConfig(sparsity_method=method, sparsity_pattern=pattern, sparsity=0.9)
    compressed, report = compress(loaded, config, calibration=tiny_dataset)
    for row in report.rows:
        weight = get_weight(compressed.model.get_submodule(row["name"]))
        zeros = (weight.reshape(weight.shape[0], -1, m) == 0).sum(2)
        assert (zeros >= m - n).all()
        assert row["sparsity"] == pytest.approx((m - n) / m)
        assert row["format"].startswith(("bitmap", pattern))
    assert report.totals["sparsity"] == pytest.approx(config.effective_sparsity)
    assert any("ignored" in a for a in report.assumptions)  # the sparsity=0.9 setting


def test_wanda_differs_from_magnitude_and_needs_calibration(tiny_models, tiny_dataset):
    loaded = tiny_models["bert"]
    config = CompressionConfig(sparsity=0.5, sparsity_method="wanda")
    with pytest.raises(LlmoptError, match="Wanda measures activations on training texts"):
        compress(loaded, config)
    with pytest.raises(LlmoptError, match="Wanda measures activations on training texts"):
        compress(loaded, config, calibration=_empty(tiny_dataset))
    wanda, w_report = compress(loaded, config, calibration=tiny_dataset)
    magnitude, _ = compress(loaded, CompressionConfig(sparsity=0.5))
    masks_differ = False
    for row in w_report.rows:
        w = get_weight(wanda.model.get_submodule(row["name"]))
        g = get_weight(magnitude.model.get_submodule(row["name"]))
        assert row["sparsity"] == pytest.approx(round(0.5 * w.shape[1]) / w.shape[1])
        masks_differ |= not torch.equal(w == 0, g == 0)
    assert masks_differ


def _empty(dataset):
    return TextDataset([], np.array([], dtype=int), dataset.label_names, name="empty")


def test_global_scope_spreads_sparsity_unevenly(tiny_models):
    loaded = tiny_models["gpt2"]
    _, report = compress(loaded, CompressionConfig(sparsity=0.5, sparsity_scope="global"))
    per_layer = np.array([r["sparsity"] for r in report.rows])
    sizes = np.array([r["shape"][0] * r["shape"][1] for r in report.rows])
    assert (per_layer * sizes).sum() / sizes.sum() == pytest.approx(0.5, abs=1e-6)
    assert per_layer.std() > 0.01
