"""compress(): the base never changes, results are reproducible, reports are measured."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import llmopt
from llmopt.compression import CompressionConfig, CompressionReport, compress, registry
from llmopt.compression.lowrank import LowRankLinear
from llmopt.compression.quantize import is_dynamic_int8
from llmopt.compression.targets import get_weight
from llmopt.errors import LlmoptError
from llmopt.models import count_params, dense_size_bytes

CONFIGS = {
    "magnitude": CompressionConfig(sparsity=0.5),
    "global": CompressionConfig(sparsity=0.4, sparsity_scope="global"),
    "wanda-2:4": CompressionConfig(sparsity_method="wanda", sparsity_pattern="2:4"),
    "rtn-4": CompressionConfig(bits=4),
    "lowrank": CompressionConfig(rank=6),
    "int8": CompressionConfig(int8_dynamic=True, sparsity=0.3),
    "all": CompressionConfig(rank=8, sparsity=0.5, sparsity_method="wanda", bits=3),
    "head": CompressionConfig(bits=6, include_head=True),
}
ROW_KEYS = {"name", "shape", "sparsity", "bits", "group_size", "rank", "rel_error"}
ROW_KEYS |= {"bytes_before", "bytes_after", "note", "format", "dense_reconstruction"}


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2"])
@pytest.mark.parametrize("method", list(CONFIGS))
def test_base_is_untouched_and_results_reproducible(
    tiny_models, tiny_dataset, state_bytes, family, method
):
    loaded = tiny_models[family]
    before = state_bytes(loaded.model)
    config = CONFIGS[method]
    first, report = compress(loaded, config, calibration=tiny_dataset)
    assert state_bytes(loaded.model) == before
    second, _ = compress(loaded, config, calibration=tiny_dataset)
    assert state_bytes(loaded.model) == before
    if not config.int8_dynamic:  # packed int8 weights are not in the state_dict as tensors
        assert state_bytes(first.model) == state_bytes(second.model)
    assert first.model is not loaded.model and first.tokenizer is loaded.tokenizer
    assert first.name == f"{loaded.name} (compressed)"
    # masks are permanent: no torch.nn.utils.prune reparametrisation, no hooks left behind
    assert not any(k.endswith(("_orig", "_mask")) for k in first.model.state_dict())
    for module in first.model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    # every row is plain JSON with the contract's keys
    rows = json.loads(json.dumps(report.to_rows()))
    assert rows and all(ROW_KEYS <= set(r) for r in rows)
    frame = report.to_frame()
    assert len(frame) == len(rows) and list(frame["name"]) == [r["name"] for r in rows]
    assert first.size_bytes == report.totals["model_bytes_after"]
    assert first.size_bytes < dense_size_bytes(loaded.model) or config.rank is not None
    with torch.no_grad():
        probs, _, _ = llmopt.evaluate(first, tiny_dataset).y_score, None, None
    assert np.isfinite(probs).all()


@pytest.mark.parametrize(
    ("family", "blocks"),
    [("bert", "bert.encoder.layer."), ("distilbert", "distilbert.transformer.layer."),
     ("gpt2", "transformer.h.")],
)  # fmt: skip
def test_targets_are_the_block_linears_unless_the_head_is_included(tiny_models, family, blocks):
    loaded = tiny_models[family]
    _, report = compress(loaded, CompressionConfig(bits=8))
    names = [r["name"] for r in report.rows]
    assert len(names) == (8 if family == "gpt2" else 12)  # 2 blocks x (4 or 6) layers
    assert all(n.startswith(blocks) for n in names)
    _, with_head = compress(loaded, CompressionConfig(bits=8, include_head=True))
    extra = {r["name"] for r in with_head.rows} - set(names)
    head = {"bert": {"bert.pooler.dense", "classifier"}, "gpt2": {"score"}}
    assert extra == head.get(family, {"pre_classifier", "classifier"})


def test_report_rows_are_measured_from_the_tensors(tiny_models):
    loaded = tiny_models["gpt2"]
    compressed, report = compress(loaded, CompressionConfig(sparsity=0.5, bits=4, group_size=16))
    assert isinstance(report, CompressionReport)
    for row in report.rows:
        w = get_weight(loaded.model.get_submodule(row["name"])).double()
        w_hat = get_weight(compressed.model.get_submodule(row["name"])).double()
        assert row["rel_error"] == pytest.approx(float(torch.linalg.norm(w - w_hat) / w.norm()))
        assert row["sparsity"] == pytest.approx(float((w_hat == 0).double().mean()))
        assert row["format"].startswith("bitmap 4-bit")
        out_f, in_f = row["shape"]
        nnz = int((w_hat != 0).sum())
        bits = out_f * in_f + nnz * 4 + out_f * (in_f // 16) * 16 + out_f * 32
        assert row["bytes_after"] == -(-bits // 8)
    totals = report.totals
    assert totals["layers"] == len(report.rows)
    assert totals["bytes_before"] == sum(r["bytes_before"] for r in report.rows)
    assert totals["mean_rel_error"] == pytest.approx(np.mean([r["rel_error"] for r in report.rows]))
    assert totals["compression_ratio"] > 3
    total, nonzero = count_params(compressed.model)
    base_total, base_nonzero = count_params(loaded.model)
    assert total == base_total
    targeted = [loaded.model.get_submodule(r["name"]) for r in report.rows]
    nonzero_before = sum(int(torch.count_nonzero(p)) for m in targeted for p in m.parameters())
    assert nonzero == base_nonzero - nonzero_before + totals["params_nonzero_after"]
    assert totals["params_after"] == totals["params_before"]  # no factorisation here
    assert any("bitmap" in a for a in report.assumptions)


def test_identity_config_copies_the_model(tiny_models, state_bytes):
    loaded = tiny_models["bert"]
    copy, report = compress(loaded, CompressionConfig())
    assert report.rows == [] and copy.model is not loaded.model
    assert state_bytes(copy.model) == state_bytes(loaded.model)
    assert copy.size_bytes == dense_size_bytes(loaded.model)


def test_group_size_not_dividing_a_layer_names_layer_and_sizes(tiny_models):
    with pytest.raises(LlmoptError) as info:
        compress(tiny_models["bert"], CompressionConfig(bits=4, group_size=8))
    message = str(info.value)
    assert "group_size 8" in message and "output.dense" in message and "37" in message


def test_progress_reaches_one_and_filters_choose_layers(tiny_models, tiny_dataset):
    calls = []
    config = CompressionConfig(sparsity=0.5, sparsity_method="wanda", bits=8)
    _, report = compress(
        tiny_models["bert"],
        config,
        calibration=tiny_dataset,
        progress=lambda f, m: calls.append((f, m)),
        filter_fn=lambda module, name: name.endswith("attention.self.query"),
    )
    assert [r["name"] for r in report.rows] == [
        f"bert.encoder.layer.{i}.attention.self.query" for i in range(2)
    ]
    assert all(0.0 <= f <= 1.0 for f, _ in calls) and calls[-1][0] == 1.0
    assert any("calibrating" in m for _, m in calls)


def test_methods_are_registered_by_kind_and_run_in_order():
    assert registry.ORDER == ("lowrank", "prune", "quantize", "kernel")
    assert registry.KINDS["prune"].active(CompressionConfig(sparsity_pattern="2:4"))
    assert not registry.KINDS["quantize"].active(CompressionConfig(sparsity=0.5))
    config = CompressionConfig(rank=4, sparsity=0.5, sparsity_method="wanda", bits=4,
                               quant_method="gptq")  # fmt: skip
    assert [m.name for m in registry.active(config)] == ["svd", "wanda", "gptq"]
    assert registry.needs_calibration(config)
    assert not registry.needs_calibration(CompressionConfig(sparsity=0.5, bits=4, rank=4))


def test_combined_steps_apply_in_order(tiny_models, tiny_dataset):
    config = CompressionConfig(rank=8, sparsity=0.5, bits=4, group_size=8)
    compressed, report = compress(tiny_models["gpt2"], config, calibration=tiny_dataset)
    for row in report.rows:
        module = compressed.model.get_submodule(row["name"])
        assert isinstance(module, LowRankLinear)
        for factor in (module.down.weight, module.up.weight):
            rows_zeros = (factor == 0).sum(1)
            assert (rows_zeros >= round(0.5 * factor.shape[1])).all()  # pruned, then quantized
        assert row["format"].count("bitmap 4-bit") == 2


def test_int8_dynamic_on_low_rank_factors(tiny_models):
    compressed, report = compress(tiny_models["bert"], CompressionConfig(rank=4, int8_dynamic=True))
    module = compressed.model.get_submodule(report.rows[0]["name"])
    assert is_dynamic_int8(module.down) and is_dynamic_int8(module.up)
    assert all(0 < r["rel_error"] < 1 for r in report.rows)


def test_mean_pool_classifier_is_supported(tiny_dirs, tiny_dataset, tmp_path):
    from transformers import BertModel

    from llmopt.head import MeanPoolClassifier

    encoder = BertModel.from_pretrained(str(tiny_dirs["bert"]), attn_implementation="eager")
    tok = llmopt.load_model(str(tiny_dirs["bert"])).tokenizer
    model = MeanPoolClassifier(encoder, 2).eval()
    loaded = llmopt.LoadedModel(model, tok, "pooled", ["LABEL_0", "LABEL_1"], "x", 64)
    compressed, report = compress(loaded, CompressionConfig(sparsity=0.5, bits=4))
    assert len(report.rows) == 12
    assert all(r["name"].startswith("encoder.encoder.layer.") for r in report.rows)
    assert compressed.size_bytes < dense_size_bytes(model)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_compression_state_holds_the_masks_and_grids_later_steps_must_keep(tiny_models, family):
    config = CompressionConfig(sparsity=0.5, bits=4)  # one scale per row (37 inputs: prime)
    small, _ = compress(tiny_models[family], config)
    state = small.compression
    assert state["config"] == config.to_dict() and state["bits"] == 4
    assert set(state["masks"]) == set(state["scales"]) and state["masks"]
    for name, mask in state["masks"].items():
        weight = get_weight(small.model.get_submodule(name))
        assert mask.dtype == torch.bool and mask.shape == weight.shape
        assert not weight[~mask].any()  # pruned weights are zero
        scales = state["scales"][name].expand(-1, weight.shape[1])  # (out, in)
        steps = weight / scales
        torch.testing.assert_close(steps, steps.round(), atol=1e-4, rtol=0)  # on the grid
        assert steps.abs().max() <= 7
    assert tiny_models[family].compression is None
