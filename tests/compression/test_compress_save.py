"""save_model: compressed checkpoints load back through llmopt.load_model unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import llmopt
from llmopt.compression import CompressionConfig, compress, save_model
from llmopt.compression.lowrank import LowRankLinear
from llmopt.errors import LlmoptError
from llmopt.evaluation import predict_proba


@pytest.mark.parametrize(
    ("family", "config"),
    [
        ("bert", CompressionConfig(sparsity=0.5, bits=4)),
        ("bert", CompressionConfig(rank=6)),
        ("gpt2", CompressionConfig(rank=6, sparsity_pattern="2:4", bits=4, group_size=2)),
        ("distilbert", CompressionConfig(sparsity=0.3, sparsity_scope="global", bits=3)),
    ],
)
def test_round_trip_gives_the_same_probabilities(
    tiny_models, tiny_dataset, tmp_path, family, config
):
    compressed, _ = compress(tiny_models[family], config, calibration=tiny_dataset)
    path = save_model(compressed, tmp_path / "saved")
    assert any(p.suffix == ".safetensors" for p in path.iterdir())
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in path.rglob("*"))
    reloaded = llmopt.load_model(str(path))
    assert not any(isinstance(m, LowRankLinear) for m in reloaded.model.modules())
    expected, _, _ = predict_proba(compressed, tiny_dataset.texts)
    got, _, _ = predict_proba(reloaded, tiny_dataset.texts)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert reloaded.label_names == compressed.label_names
    # the saved model is a copy: the compressed model still has its factors
    if config.rank:
        assert any(isinstance(m, LowRankLinear) for m in compressed.model.modules())


def test_mean_pool_round_trip(tiny_dirs, tiny_dataset, tmp_path):
    from transformers import BertModel

    from llmopt.head import MeanPoolClassifier

    encoder = BertModel.from_pretrained(str(tiny_dirs["bert"]), attn_implementation="eager")
    tok = llmopt.load_model(str(tiny_dirs["bert"])).tokenizer
    loaded = llmopt.LoadedModel(
        MeanPoolClassifier(encoder, 2).eval(), tok, "pooled", ["neg", "pos"], "x", 64
    )
    compressed, _ = compress(loaded, CompressionConfig(rank=5, sparsity=0.5, bits=6))
    path = save_model(compressed, tmp_path / "pooled")
    reloaded = llmopt.load_model(str(path))
    assert isinstance(reloaded.model, MeanPoolClassifier)
    expected, _, _ = predict_proba(compressed, tiny_dataset.texts)
    got, _, _ = predict_proba(reloaded, tiny_dataset.texts)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_int8_dynamic_models_cannot_be_saved(tiny_models, tmp_path):
    compressed, _ = compress(tiny_models["bert"], CompressionConfig(int8_dynamic=True))
    with pytest.raises(LlmoptError, match="int8_dynamic"):
        save_model(compressed, tmp_path / "int8")
    assert not (tmp_path / "int8").exists()


def test_saving_onto_a_file_is_an_error(tiny_models, tmp_path):
    target = tmp_path / "model.txt"
    target.write_text("mine")
    compressed, _ = compress(tiny_models["bert"], CompressionConfig(bits=8))
    with pytest.raises(LlmoptError, match="is a file"):
        save_model(compressed, target)
    assert target.read_text() == "mine"
