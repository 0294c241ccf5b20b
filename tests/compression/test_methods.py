"""GPTQ, SparseGPT, activation-aware SVD and SmoothQuant against references and theorems."""

from __future__ import annotations

import copy

import pytest
import torch

import llmopt
from llmopt.compression import CompressionConfig, compress
from llmopt.compression.calibrate import Feeder
from llmopt.compression.lowrank import svd_factors
from llmopt.compression.methods.asvd import factors
from llmopt.compression.methods.gptq import quantize_layer
from llmopt.compression.methods.int8 import SmoothedLinear, smooth_layers
from llmopt.compression.obs import inverse_hessian_factor, obs_columns
from llmopt.compression.prune import magnitude_mask, satisfies_nm
from llmopt.compression.quantize import qmax, rtn_quantize
from llmopt.compression.targets import get_weight, replace, select_targets


def correlated_inputs(n: int, dim: int, seed: int) -> torch.Tensor:
    """Inputs with correlated channels and a few outlier channels, like real activations."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g) @ torch.randn(dim, dim, generator=g) / dim**0.5
    x[:, :3] *= 8.0  # outlier channels
    return x


def output_error(w: torch.Tensor, w_hat: torch.Tensor, x: torch.Tensor) -> float:
    """‖X Wᵀ − X Ŵᵀ‖_F."""
    return float(torch.linalg.norm(x.double() @ (w - w_hat).double().T))


def hessian(x: torch.Tensor) -> torch.Tensor:
    return 2.0 * x.double().T @ x.double() / x.shape[0]


def tiny_stats(loaded, texts, kinds=("hessian",)):
    names = select_targets(loaded.model)
    feeder = Feeder(
        loaded.model, loaded.tokenizer, texts, max_length=64, blocks=None, base_id=id(loaded.model)
    )
    return feeder.stats(0, names, kinds)


# ------------------------------------------------------------------------------------- GPTQ


@pytest.mark.parametrize("group", [None, 16])
@pytest.mark.parametrize("asymmetric", [False, True])
def test_gptq_with_an_identity_hessian_is_round_to_nearest(group, asymmetric):
    torch.manual_seed(0)
    w = torch.randn(24, 48)
    config = CompressionConfig(bits=3, group_size=group, asymmetric=asymmetric, quant_method="gptq")
    new, scales, zeros = quantize_layer(w, torch.eye(48, dtype=torch.float64), config)
    ref, ref_scales, ref_zeros = rtn_quantize(w, 3, group, asymmetric=asymmetric)
    assert torch.equal(new, ref) and torch.equal(scales, ref_scales)
    assert (zeros is None) == (ref_zeros is None) and (
        zeros is None or torch.equal(zeros, ref_zeros)
    )


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize(
    ("bits", "group", "act_order"),
    [(2, None, False), (3, None, True), (3, 16, False), (4, 16, True)],
)
def test_gptq_output_error_is_never_above_rtn_on_random_layers(seed, bits, group, act_order):
    torch.manual_seed(seed)
    w = torch.randn(32, 64)
    x = correlated_inputs(512, 64, seed)
    config = CompressionConfig(
        bits=bits, group_size=group, quant_method="gptq", act_order=act_order
    )
    gptq, scales, _ = quantize_layer(w, hessian(x), config)
    rtn = rtn_quantize(w, bits, group)[0]
    assert output_error(w, gptq, x) < output_error(w, rtn, x)
    steps = gptq / scales.repeat_interleave(group or 64, dim=1)  # on the symmetric grid
    torch.testing.assert_close(steps, steps.round(), atol=1e-4, rtol=0)
    assert steps.abs().max() <= qmax(bits)


def test_gptq_output_error_is_below_rtn_on_real_layers(tiny_models, tiny_dataset):
    loaded = tiny_models["bert"]
    stats = tiny_stats(loaded, tiny_dataset.texts)
    x_dim_ok = 0
    for name, s in stats.items():
        w = get_weight(loaded.model.get_submodule(name)).float()
        config = CompressionConfig(bits=3, quant_method="gptq")
        gptq = quantize_layer(w, s.hessian(), config)[0]
        rtn = rtn_quantize(w, 3)[0]
        err = {
            k: float(torch.einsum("oi,ij,oj->", d.double(), s.xtx.double(), d.double()))
            for k, d in (("gptq", w - gptq), ("rtn", w - rtn))
        }
        assert err["gptq"] <= err["rtn"], name  # ‖(W − Ŵ)X‖² from XᵀX
        x_dim_ok += 1
    assert x_dim_ok == 12


def test_gptq_keeps_pruned_weights_at_zero_and_asymmetric_grids_hold(tiny_models, tiny_dataset):
    config = CompressionConfig(
        sparsity=0.5,
        sparsity_method="wanda",
        bits=3,
        quant_method="gptq",
        asymmetric=True,
        act_order=True,
    )
    small, _ = compress(tiny_models["gpt2"], config, calibration=tiny_dataset)
    state = small.compression
    assert state["asymmetric"] and set(state["zeros"]) == set(state["scales"]) == set(
        state["masks"]
    )
    for name, mask in state["masks"].items():
        weight = get_weight(small.model.get_submodule(name))
        assert not weight[~mask].any()  # pruned weights stay zero through GPTQ's updates
        scales = state["scales"][name].expand(-1, weight.shape[1])
        zeros = state["zeros"][name].expand(-1, weight.shape[1])
        k = weight / scales + zeros  # weight == (k - zero) * scale, k in [0, 2^b - 1]
        torch.testing.assert_close(k, k.round(), atol=1e-4, rtol=0)
        assert k.round().min() >= 0 and k.round().max() <= 7
        assert torch.equal(zeros, zeros.round())


# ---------------------------------------------------------------------------------- SparseGPT


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_sparsegpt_hits_the_sparsity_exactly_and_beats_magnitude(sparsity):
    torch.manual_seed(1)
    w = torch.randn(48, 200)  # 200 columns: two lazy blocks, the second partial
    x = correlated_inputs(800, 200, 1)
    upper, _ = inverse_hessian_factor(hessian(x))
    new, keep, _, _ = obs_columns(w, upper, sparsity=sparsity)
    assert int((~keep).sum()) == round(sparsity * w.numel())
    assert not new[~keep].any()
    magnitude = w * magnitude_mask(w, sparsity)
    assert output_error(w, new, x) < output_error(w, magnitude, x)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 3)])
def test_sparsegpt_nm_pattern_holds_and_beats_magnitude(n, m):
    torch.manual_seed(2)
    w = torch.randn(32, 130)  # 130 = not a multiple of 4 or 8: a partial last group
    x = correlated_inputs(600, 130, 2)
    upper, _ = inverse_hessian_factor(hessian(x))
    new, keep, _, _ = obs_columns(w, upper, nm=(n, m))
    full = (130 // m) * m
    assert (keep[:, :full].reshape(32, -1, m).sum(2) == n).all()
    assert satisfies_nm(new, n, m)
    from llmopt.compression.prune import nm_mask

    magnitude = w * nm_mask(w.abs(), n, m)
    assert output_error(w, new, x) < output_error(w, magnitude, x)


def test_sparsegpt_prunes_and_quantizes_in_one_pass(tiny_models, tiny_dataset):
    config = CompressionConfig(
        sparsity_pattern="2:4", sparsity_method="sparsegpt", bits=4, quant_method="gptq"
    )
    small, report = compress(tiny_models["bert"], config, calibration=tiny_dataset)
    state = small.compression
    for name, mask in state["masks"].items():
        weight = get_weight(small.model.get_submodule(name))
        assert satisfies_nm(weight, 2, 4) and not weight[~mask].any()
        steps = weight / state["scales"][name].expand(-1, weight.shape[1])
        torch.testing.assert_close(steps, steps.round(), atol=1e-4, rtol=0)
    assert all("one SparseGPT pass" in r["note"] for r in report.rows)


# ------------------------------------------------------------------------ activation-aware SVD


def test_activation_aware_svd_reconstructs_at_full_rank_and_beats_svd_at_every_rank():
    torch.manual_seed(3)
    w = torch.randn(20, 28)
    x = correlated_inputs(400, 28, 3)
    xtx = x.double().T @ x.double()
    a, b, _ = factors(w, xtx, 20)
    torch.testing.assert_close(a @ b, w, atol=1e-4, rtol=1e-4)
    slack = 1e-5 * float(torch.linalg.norm(x @ w.T))  # float32 rounding of the plain SVD
    for rank in range(1, 21):
        aa, bb, _ = factors(w, xtx, rank)
        pa, pb, _ = svd_factors(w, rank)
        assert output_error(w, aa @ bb, x) <= output_error(w, pa @ pb, x) + slack


def test_activation_aware_low_rank_on_a_model(tiny_models, tiny_dataset):
    config = CompressionConfig(rank=8, lowrank_method="activation-aware")
    plain, _ = compress(tiny_models["distilbert"], CompressionConfig(rank=8))
    aware, report = compress(tiny_models["distilbert"], config, calibration=tiny_dataset)
    stats = tiny_stats(tiny_models["distilbert"], tiny_dataset.texts)
    name = report.rows[0]["name"]  # the first block's input is the same for both models
    w = get_weight(tiny_models["distilbert"].model.get_submodule(name)).double()
    xtx = stats[name].xtx.double()

    def err(model):
        d = w - get_weight(model.model.get_submodule(name)).double()
        return float(torch.einsum("oi,ij,oj->", d, xtx, d))

    assert err(aware) <= err(plain)
    assert "factorised" in report.rows[0]["note"]


# -------------------------------------------------------------------------------- SmoothQuant


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2"])
def test_smoothing_leaves_the_float_function_unchanged(tiny_models, tiny_dataset, family):
    from llmopt.compression.engine import Context

    loaded = tiny_models[family]
    stats = tiny_stats(loaded, tiny_dataset.texts, ("absmax",))
    model = copy.deepcopy(loaded.model)
    names = select_targets(model)
    for n in names:  # Conv1D as a Linear, as the int8 step does
        module = model.get_submodule(n)
        if not isinstance(module, torch.nn.Linear):
            from llmopt.compression.quantize import linear_from

            replace(model, n, linear_from(get_weight(module), module.bias))
    config = CompressionConfig(int8_dynamic=True, smooth_alpha=0.5)
    ctx = Context(model, config, loaded, names, None, lambda f, m: None)
    inverse = smooth_layers(ctx, names, stats, 0.5)
    for n, inv in inverse.items():
        replace(model, n, SmoothedLinear(inv, model.get_submodule(n)))
    assert inverse and (family == "gpt2" or len(inverse) < len(names))  # BERT folds into value
    inputs = loaded.tokenizer(tiny_dataset.texts[:8], padding=True, return_tensors="pt")
    if family != "bert":
        inputs.pop("token_type_ids", None)
    with torch.no_grad():
        before = loaded.model(**inputs).logits
        after = model(**inputs).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_smoothquant_int8_runs_and_reports_its_extra_storage(tiny_models, tiny_dataset):
    config = CompressionConfig(int8_dynamic=True, smooth_alpha=0.5)
    small, report = compress(tiny_models["bert"], config, calibration=tiny_dataset)
    plain, plain_report = compress(tiny_models["bert"], CompressionConfig(int8_dynamic=True))
    result = llmopt.evaluate(small, tiny_dataset)
    assert result.y_score.shape == (len(tiny_dataset), 2)
    folded = [r for r in report.rows if "folded" in r["note"]]
    assert len(folded) == 2  # the attention output layer of each block
    for row, plain_row in zip(report.rows, plain_report.rows, strict=True):
        extra = 0 if row in folded else row["shape"][1] * 4  # one fp32 1/s per input
        assert row["bytes_after"] == plain_row["bytes_after"] + extra


# ------------------------------------------------------------------------------- calibration


def one_block(loaded):
    model = copy.deepcopy(loaded.model)
    model.bert.encoder.layer = model.bert.encoder.layer[:1]
    model.config.num_hidden_layers = 1
    return llmopt.LoadedModel(model, loaded.tokenizer, "one block", loaded.label_names, "x", 64)


@pytest.mark.parametrize(
    "config",
    [
        CompressionConfig(bits=3, quant_method="gptq"),
        CompressionConfig(sparsity=0.5, sparsity_method="wanda"),
        CompressionConfig(
            rank=6, lowrank_method="activation-aware", sparsity=0.4, sparsity_method="sparsegpt"
        ),
    ],
)
def test_sequential_calibration_of_one_block_equals_one_pass(
    tiny_models, tiny_dataset, config, state_bytes
):
    import dataclasses

    model = one_block(tiny_models["bert"])
    seq, _ = compress(model, config, calibration=tiny_dataset)
    one, _ = compress(
        model, dataclasses.replace(config, calibration="one-pass"), calibration=tiny_dataset
    )
    for key, value in seq.model.state_dict().items():
        torch.testing.assert_close(value, one.model.state_dict()[key], atol=1e-6, rtol=1e-5)


def test_sequential_calibration_sees_the_compressed_blocks(tiny_models, tiny_dataset):
    import dataclasses

    config = CompressionConfig(bits=2, quant_method="gptq")
    seq, _ = compress(tiny_models["bert"], config, calibration=tiny_dataset)
    one, _ = compress(
        tiny_models["bert"],
        dataclasses.replace(config, calibration="one-pass"),
        calibration=tiny_dataset,
    )
    first = "bert.encoder.layer.0.attention.self.query.weight"
    second = "bert.encoder.layer.1.attention.self.query.weight"
    assert torch.equal(seq.model.state_dict()[first], one.model.state_dict()[first])
    assert not torch.equal(seq.model.state_dict()[second], one.model.state_dict()[second])


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2"])
def test_calibrated_methods_need_texts_and_leave_the_base_untouched(
    tiny_models, tiny_dataset, family, state_bytes
):
    loaded = tiny_models[family]
    before = state_bytes(loaded.model)
    for config in (
        CompressionConfig(bits=4, quant_method="gptq"),
        CompressionConfig(int8_dynamic=True, smooth_alpha=0.6),
    ):
        with pytest.raises(llmopt.LlmoptError, match="calibration"):
            compress(loaded, config)
        compress(loaded, config, calibration=tiny_dataset)
    assert state_bytes(loaded.model) == before


def test_bf16_precision_runs_16_bit_and_halves_the_floats(tiny_models, tiny_dataset):
    from llmopt.estimate import estimate_size

    loaded = tiny_models["bert"]
    config = CompressionConfig(precision="bf16")
    small, report = compress(loaded, config)
    assert all(p.dtype == torch.bfloat16 for p in small.model.parameters())
    base, other = llmopt.evaluate(loaded, tiny_dataset), llmopt.evaluate(small, tiny_dataset)
    assert abs(other.y_score - base.y_score).max() < 0.05
    assert small.size_bytes == estimate_size(loaded, config)["size_bytes"]
    assert small.size_bytes < 0.55 * llmopt.models.dense_size_bytes(loaded.model)
