"""The instant estimate must agree with what compress() then measures."""

from __future__ import annotations

import pytest

import llmopt
from llmopt.compression import CompressionConfig, compress
from llmopt.estimate import estimate_size
from llmopt.models import count_params

# Settings whose packed size is exact: rounding adds too few zeros to change the format.
EXACT = [
    CompressionConfig(),
    CompressionConfig(sparsity=0.5),
    CompressionConfig(sparsity=0.3),
    CompressionConfig(sparsity_pattern="2:4"),
    CompressionConfig(sparsity_pattern="4:8", bits=8),
    CompressionConfig(bits=8),
    CompressionConfig(rank=8),
    CompressionConfig(rank=8, sparsity=0.5),
    CompressionConfig(rank=8, bits=8),
    CompressionConfig(rank=30),  # above the break-even rank: stored as one dense matrix
    CompressionConfig(int8_dynamic=True),
    CompressionConfig(sparsity=0.5, include_head=True),
]
# The registry's newer methods and knobs: calibrated, asymmetric, smoothed, 16-bit.
METHODS = [
    CompressionConfig(sparsity=0.5, sparsity_method="sparsegpt"),
    CompressionConfig(
        sparsity_pattern="2:4", sparsity_method="sparsegpt", bits=8, quant_method="gptq"
    ),  # fmt: skip
    CompressionConfig(bits=8, quant_method="gptq", asymmetric=True),
    CompressionConfig(rank=8, lowrank_method="activation-aware", sparsity=0.3),
    CompressionConfig(int8_dynamic=True, smooth_alpha=0.5),
    CompressionConfig(precision="bf16", sparsity=0.5),
    CompressionConfig(precision="fp16", rank=8),
]
# Low bit-widths round many small weights to zero, which the packed size then exploits.
ROUNDING = [CompressionConfig(bits=2), CompressionConfig(bits=3), CompressionConfig(bits=4)]


def _describe(config: CompressionConfig) -> str:
    defaults = CompressionConfig().to_dict()
    changed = {k: v for k, v in config.to_dict().items() if v != defaults[k]}
    return ",".join(f"{k}={v}" for k, v in changed.items()) or "identity"


@pytest.fixture(scope="module")
def tiny_models(tiny_dirs):
    return {family: llmopt.load_model(str(d)) for family, d in tiny_dirs.items()}


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2"])
@pytest.mark.parametrize("config", EXACT, ids=lambda c: _describe(c))
def test_estimate_equals_measured_size_and_params(tiny_models, family, config):
    loaded = tiny_models[family]
    estimate = estimate_size(loaded, config)
    compressed, report = compress(loaded, config)
    assert estimate["size_bytes"] == compressed.size_bytes
    assert estimate["size_bytes"] == report.totals["model_bytes_after"]
    assert estimate["layers"] == (0 if config.is_identity else report.totals["layers"])
    if not config.int8_dynamic:  # int8 kernels keep weights outside nn.Parameters
        total, nonzero = count_params(compressed.model)
        assert estimate["params_total"] == total
        if config.bits is None:
            assert estimate["params_nonzero"] == nonzero
        else:  # a few tiny weights round to zero even at 8 bits
            assert nonzero <= estimate["params_nonzero"] <= total
        if report.rows and config.rank is None and config.bits is None:
            assert estimate["sparsity"] == pytest.approx(report.totals["sparsity"], abs=1e-12)


@pytest.mark.parametrize(
    ("family", "config"),
    [("bert", c) for c in METHODS] + [("gpt2", METHODS[0]), ("gpt2", METHODS[4])],
    ids=lambda x: x if isinstance(x, str) else _describe(x),
)
def test_estimate_equals_measured_size_for_every_kind_of_method(
    tiny_models, tiny_dataset, family, config
):
    loaded = tiny_models[family]
    compressed, report = compress(loaded, config, calibration=tiny_dataset)
    estimate = estimate_size(loaded, config)
    assert compressed.size_bytes == report.totals["model_bytes_after"]
    if config.bits is None:
        assert estimate["size_bytes"] == compressed.size_bytes
    else:  # rounding may zero a few more weights: the packed size can only shrink
        assert 0.99 * estimate["size_bytes"] <= compressed.size_bytes <= estimate["size_bytes"]
    if not config.int8_dynamic:
        total, nonzero = count_params(compressed.model)
        assert estimate["params_total"] == total
        assert nonzero <= estimate["params_nonzero"] <= total


@pytest.mark.parametrize("family", ["bert", "gpt2"])
@pytest.mark.parametrize("config", ROUNDING, ids=lambda c: f"bits{c.bits}")
def test_estimate_is_an_upper_bound_when_rounding_adds_zeros(tiny_models, family, config):
    loaded = tiny_models[family]
    compressed, _ = compress(loaded, config)
    assert compressed.size_bytes <= estimate_size(loaded, config)["size_bytes"]


def test_estimate_leaves_the_model_alone_and_reports_the_dense_size(tiny_models):
    loaded = tiny_models["bert"]
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    estimate = estimate_size(loaded, CompressionConfig(sparsity=0.5, bits=4))
    assert estimate["size_bytes_before"] == llmopt.models.dense_size_bytes(loaded.model)
    assert estimate["ratio"] == pytest.approx(
        estimate["size_bytes_before"] / estimate["size_bytes"]
    )
    assert estimate["ratio"] > 1
    after = loaded.model.state_dict()
    assert all((before[k] == after[k]).all() for k in before)


def test_estimate_rejects_what_compress_rejects(tiny_models):
    loaded = tiny_models["bert"]
    with pytest.raises(llmopt.LlmoptError, match="rank 33"):
        estimate_size(loaded, CompressionConfig(rank=33))
    with pytest.raises(llmopt.LlmoptError, match="group_size 5"):
        estimate_size(loaded, CompressionConfig(bits=4, group_size=5))
