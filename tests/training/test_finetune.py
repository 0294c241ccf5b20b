"""Fine-tuning: the loss falls, only the chosen layers move, the start is untouched, saves load
back, Cancel stops at once and leaves nothing on disk."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from train_data import LR, class_dataset

import llmopt
from llmopt.errors import LlmoptError
from llmopt.training.config import TrainConfig
from llmopt.training.finetune import finetune
from llmopt.training.loop import select_trainable, split_train_val


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module", params=[2, 3], ids=["binary", "3-class"])
def trained(request, tiny2_dir, tiny3_dir):
    """A fine-tune of every layer on keyword texts, with the state of its start."""
    k = request.param
    loaded = llmopt.load_model(str(tiny2_dir if k == 2 else tiny3_dir))
    start = state(loaded.model)
    config = TrainConfig(epochs=4, train_layers="all", learning_rate=LR, warmup_ratio=0.0,
                         patience=None, eval_every=6)  # fmt: skip
    test = class_dataset(30, k, seed=1, split="test")
    run = finetune(loaded, class_dataset(96, k), config, eval_data=test)
    return k, loaded, start, run, test


def test_loss_decreases_and_validation_improves(trained):
    k, _, _, run, _ = trained
    losses = [h["loss"] for h in run.history if h["loss"] is not None]
    assert len(losses) >= 3
    assert np.mean(losses[-2:]) < 0.8 * losses[0], losses
    assert run.history[-1]["val_loss"] < run.history[0]["val_loss"]
    assert run.history[0]["val_accuracy"] == pytest.approx(1 / k, abs=0.15)  # random start
    assert max(h["val_accuracy"] for h in run.history) > 1 / k + 0.2
    assert run.after.metrics["accuracy"] > run.before.metrics["accuracy"]
    assert set(run.history[0]) >= {"step", "epoch", "loss", "val_accuracy"}


def test_the_starting_model_is_untouched(trained):
    _, loaded, start, run, _ = trained
    now = state(loaded.model)
    assert all(torch.equal(start[k], now[k]) for k in start)
    assert run.model.model is not loaded.model and not run.model.model.training


def test_early_stopping_keeps_the_best_validated_weights(trained):
    k, _, _, run, _ = trained
    from llmopt.training.loop import prepare_rows, validate

    train, val = prepare_rows(run.model, class_dataset(96, k), run_config(run))
    from llmopt.batching import encode

    enc = encode(run.model.tokenizer, val.texts, 64)
    acc, _ = validate(run.model.model, enc, val.labels)
    assert acc == max(h["val_accuracy"] for h in run.history)


def run_config(run):
    cfg = dict(run.recipe["train"])
    return TrainConfig.from_dict(cfg)


def test_save_and_load_predict_the_same(trained, tmp_path):
    _, _, _, run, test = trained
    llmopt.save_model(run.model, tmp_path / "ft")
    back = llmopt.evaluate(llmopt.load_model(str(tmp_path / "ft")), test)
    np.testing.assert_array_equal(back.y_pred, run.after.y_pred)
    np.testing.assert_allclose(back.y_score, run.after.y_score, rtol=0, atol=1e-6)


@pytest.mark.parametrize("layers", ["head", 1])
def test_only_the_chosen_layers_train(tiny2_dir, layers):
    loaded = llmopt.load_model(str(tiny2_dir))
    model = loaded.model
    select_trainable(model, layers)
    moving = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "classifier.weight" in moving and "bert.pooler.dense.weight" in moving
    assert not any("embeddings" in n for n in moving)
    assert not any(n.startswith("bert.encoder.layer.0.") for n in moving)
    assert any(n.startswith("bert.encoder.layer.1.") for n in moving) == (layers == 1)


def test_more_top_layers_than_the_model_has_means_every_block(tiny2_dir):
    from llmopt.training.loop import check_layers

    loaded = llmopt.load_model(str(tiny2_dir))
    assert select_trainable(loaded.model, 5) == select_trainable(loaded.model, 2)
    with pytest.raises(LlmoptError, match="at most 2"):  # the command line refuses it
        check_layers(loaded.model, 5)


def test_validation_rows_come_from_the_training_rows_stratified():
    data = class_dataset(60, 3)
    train, val = split_train_val(data, 0.2, seed=0)
    assert len(train) + len(val) == 60 and not set(train.indices) & set(val.indices)
    assert np.bincount(val.labels).tolist() == [4, 4, 4]


def test_cancel_stops_after_a_step_and_writes_nothing(tiny2_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    loaded = llmopt.load_model(str(tiny2_dir))
    cancel = threading.Event()
    steps = []

    def progress(fraction, message):
        steps.append(message)
        if "step 2/" in message:
            cancel.set()

    run = finetune(loaded, class_dataset(96, 2), TrainConfig(epochs=10, eval_every=1),
                   progress=progress, cancel=cancel)  # fmt: skip
    assert run.cancelled and run.history[-1]["step"] == 3  # set during step 2: one more step
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no temporary folder left
