"""Model loading: tiny checkpoints of several families, errors, encoder + trained head."""

import json

import numpy as np
import pytest
import torch

import llmopt
from llmopt.errors import LlmoptError
from llmopt.models import count_params, dense_size_bytes, model_facts


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2"])
def test_local_checkpoint_loads_in_eval_mode_with_attentions(tiny_dirs, family):
    loaded = llmopt.load_model(str(tiny_dirs[family]))
    assert not loaded.model.training
    assert loaded.label_names == ["LABEL_0", "LABEL_1"] and not loaded.named_labels
    enc = loaded.tokenizer(["good coffee"], return_tensors="pt")
    if family == "distilbert":
        enc.pop("token_type_ids", None)
    out = loaded.model(**enc, output_attentions=True)
    assert out.logits.shape == (1, 2)
    assert len(out.attentions) == 2 and out.attentions[0].shape[:2] == (1, 4)
    facts = model_facts(loaded)
    assert facts["layers"] == 2 and facts["heads"] == 4
    assert facts["params_total"] == sum(p.numel() for p in loaded.model.parameters())


def test_size_and_params_are_measured_from_tensors(tiny_bert_dir):
    loaded = llmopt.load_model(str(tiny_bert_dir))
    total, nonzero = count_params(loaded.model)
    with torch.no_grad():
        loaded.model.classifier.weight.zero_()
    total2, nonzero2 = count_params(loaded.model)
    assert total2 == total and nonzero - nonzero2 == loaded.model.classifier.weight.numel()
    assert dense_size_bytes(loaded.model) >= 4 * total


def test_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(LlmoptError, match="no config.json"):
        llmopt.load_model(str(tmp_path))


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(LlmoptError, match="not found"):
        llmopt.load_model(str(tmp_path / "nope"))


def test_checkpoint_that_is_not_a_classifier(tiny_bert_dir, tmp_path):
    from transformers import BertModel

    BertModel.from_pretrained(tiny_bert_dir).save_pretrained(tmp_path / "enc")
    with pytest.raises(LlmoptError, match="not a sequence classifier.*encoder:"):
        llmopt.load_model(str(tmp_path / "enc"))


def test_unreachable_hub_id_fails_fast_with_advice(monkeypatch):
    import time

    monkeypatch.setattr("llmopt.models.hub_reachable", lambda timeout_s=3.0: False)
    start = time.perf_counter()
    with pytest.raises(LlmoptError, match="cannot be reached"):
        llmopt.load_model("some-org/no-such-model")
    assert time.perf_counter() - start < 30  # generous: the point is no minutes of retries


def test_invalid_source_string():
    with pytest.raises(LlmoptError, match="not a model this tool can load"):
        llmopt.load_model("not a valid id!")


def test_encoder_head_learns_the_training_split_and_is_cached(tiny_bert_dir):
    from tinymodels import make_texts

    texts, labels = make_texts(80, seed=1)
    train = llmopt.TextDataset(texts, np.array(labels), ["pos", "neg"], name="toy", split="train")
    calls = []
    loaded = llmopt.load_model(
        f"encoder:{tiny_bert_dir}", train_data=train, progress=lambda f, m: calls.append(f)
    )
    assert loaded.label_names == ["pos", "neg"] and calls and calls[-1] == 1.0
    result = llmopt.evaluate(loaded, train)
    assert result.metrics["accuracy"] > 0.8  # the words decide the label; a probe finds them
    again = []
    reloaded = llmopt.load_model(
        f"encoder:{tiny_bert_dir}", train_data=train, progress=lambda f, m: again.append(f)
    )
    assert again == []  # cached: no retraining
    assert torch.equal(reloaded.model.classifier.weight, loaded.model.classifier.weight)


def test_stale_cached_head_is_rebuilt(tiny_bert_dir, tmp_path, monkeypatch):
    from tinymodels import make_texts

    monkeypatch.setenv("LLMOPT_HOME", str(tmp_path))
    texts, labels = make_texts(30, seed=2)
    train = llmopt.TextDataset(texts, np.array(labels), ["pos", "neg"], name="toy", split="train")
    llmopt.load_model(f"encoder:{tiny_bert_dir}", train_data=train)
    (meta,) = tmp_path.glob("heads/*/meta.json")
    meta.write_text(json.dumps({"key": "something-else"}))
    calls = []
    llmopt.load_model(
        f"encoder:{tiny_bert_dir}", train_data=train, progress=lambda f, m: calls.append(f)
    )
    assert calls, "a head whose metadata does not match must be retrained"


def test_pooled_model_saves_and_loads_back(tiny_bert_dir, tmp_path, tiny_dataset):
    from tinymodels import make_texts

    from llmopt.compression import save_model

    texts, labels = make_texts(30, seed=2)
    train = llmopt.TextDataset(texts, np.array(labels), ["LABEL_0", "LABEL_1"], name="t")
    loaded = llmopt.load_model(f"encoder:{tiny_bert_dir}", train_data=train)
    save_model(loaded, tmp_path / "saved")
    back = llmopt.load_model(str(tmp_path / "saved"))
    a = llmopt.evaluate(loaded, tiny_dataset).y_score
    b = llmopt.evaluate(back, tiny_dataset).y_score
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_head_cannot_be_trained_for_a_label_without_training_rows(tiny_bert_dir):
    train = llmopt.TextDataset(
        ["good", "bad", "fine"], np.array([0, 1, 0]), ["a", "b", "c"], name="toy", split="train"
    )
    with pytest.raises(LlmoptError, match=r"\['c'\] have no rows"):
        llmopt.load_model(f"encoder:{tiny_bert_dir}", train_data=train)


def test_checkpoint_without_a_trained_head_is_refused(tiny_bert_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "nohead"
    loaded = llmopt.load_model(str(tiny_bert_dir))
    loaded.model.save_pretrained(broken)
    loaded.tokenizer.save_pretrained(broken)
    weights = load_file(str(broken / "model.safetensors"))
    save_file(
        {k: v for k, v in weights.items() if "classifier" not in k},
        str(broken / "model.safetensors"),
    )
    with pytest.raises(LlmoptError, match="no trained classification head"):
        llmopt.load_model(str(broken))
