"""Each method's explainer picture shows what its title says (the pictures are drawn by the
method files). Before: Wanda's expander drew a magnitude mask, the int8 picture said "8-bit"
beside a "drawn at 4 bits" caption with 255 tick marks, and the GPTQ title claimed error moved
to later columns while its own curves showed GPTQ's per-column error above rounding's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmopt.compression import CompressionConfig, compress, registry
from llmopt.compression.quantize import quantize_dynamic_int8
from llmopt.data import TextDataset
from llmopt.explain import Scene, get_weight, layer_statistics, mask_block


@pytest.fixture(scope="module")
def layer(tiny_models, tiny_texts):
    loaded = tiny_models["bert"]
    name, weight = get_weight(loaded)
    return loaded, name, weight, layer_statistics(loaded, name, tiny_texts)


@pytest.fixture(scope="module")
def tiny_texts():
    words = "good bad fine awful great poor lovely dull film plot acting story".split()
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=12)) for _ in range(12)]


def _draw(name: str, config: CompressionConfig, weight, stats):
    method = next(m for m in registry.all_methods() if m.name == name)
    return registry.picture(method)(Scene.of(weight, config, lambda: stats))


def test_wanda_picture_draws_wandas_own_mask(layer, tiny_texts):
    loaded, name, weight, stats = layer
    config = CompressionConfig(sparsity=0.5, sparsity_method="wanda")
    fig, caption = _draw("wanda", config, weight, stats)
    assert "magnitude" not in fig.layout.title.text and "Wanda" in fig.layout.title.text
    data = TextDataset(texts=tiny_texts, labels=[0] * len(tiny_texts), label_names=["a", "b"],
                       name="texts")  # fmt: skip
    config = CompressionConfig(sparsity=0.5, sparsity_method="wanda", calibration_samples=12)
    small, _ = compress(loaded, config,
                        calibration=data)  # fmt: skip
    engine = small.compression["masks"][name].numpy()
    block = np.asarray(fig.data[0].z).astype(bool)
    np.testing.assert_array_equal(block, engine[: block.shape[0], : block.shape[1]])
    magnitude = mask_block(weight, 0.5)
    assert not np.array_equal(block, magnitude)  # a different picture from magnitude's


def test_int8_picture_is_the_kernels_8_bit_grid(layer):
    _, _, weight, stats = layer
    config = CompressionConfig(int8_dynamic=True)
    fig, caption = _draw("int8", config, weight, stats)
    title = fig.layout.title.text
    assert "8-bit" in title and "256 levels" in title and "4 bits" not in caption
    from llmopt.compression.methods.int8 import weight_grid

    q = weight_grid(weight)
    assert len(q["grid"]) == 256 and np.allclose(np.diff(q["grid"]), q["step"])
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
    linear.weight.data = torch.as_tensor(weight)
    model = quantize_dynamic_int8(torch.nn.Sequential(linear), ["0"])
    kernel = model[0].weight().dequantize()[0].numpy()  # what the int8 kernel multiplies by
    np.testing.assert_allclose(q["dequantized"], kernel, rtol=0, atol=1e-7)
    marks = fig.data[1]
    assert len(marks.x) <= 33 and "256" in marks.name  # ticks, not a solid band of 256 lines


def test_gptq_picture_claims_what_its_data_show(layer):
    _, _, weight, stats = layer
    config = CompressionConfig(bits=3, quant_method="gptq")
    fig, caption = _draw("gptq", config, weight, stats)
    from llmopt.compression.methods.gptq import picture_data

    out = picture_data(weight, stats["xtx"], 3)
    rtn, gptq = (np.asarray(t.y) for t in fig.data)
    assert rtn[-1] == pytest.approx(out["output_error_rtn"], rel=1e-6)
    assert gptq[-1] == pytest.approx(out["output_error_gptq"], rel=1e-6)
    assert out["output_error_gptq"] < out["output_error_rtn"]  # GPTQ's point on real inputs
    assert "GPTQ ends lower" in fig.layout.title.text
    assert "moves it to later columns" not in fig.layout.title.text


def test_every_method_draws_a_titled_picture(layer):
    _, _, weight, stats = layer
    configs = {
        "prune": CompressionConfig(sparsity=0.5),
        "quantize": CompressionConfig(bits=4),
        "lowrank": CompressionConfig(rank=4),
        "kernel": CompressionConfig(int8_dynamic=True, smooth_alpha=0.5),
    }
    for method in registry.all_methods():
        assert method.draw is not None, method.name  # every built-in file draws its own
        fig, caption = method.draw(Scene.of(weight, configs[method.kind], lambda: stats))
        assert fig.layout.title.text and caption
