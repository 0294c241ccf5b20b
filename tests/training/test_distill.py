"""Distillation: the loss equals its definition, the student starts as the teacher's layers, the
teacher runs once, and the trained student saves and loads back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from train_data import LR, class_dataset

import llmopt
from llmopt.errors import LlmoptError
from llmopt.training.config import TrainConfig
from llmopt.training.distill import distill, distillation_loss, make_student, student_layers
from llmopt.training.loop import layer_groups


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 0.0), (2.0, 0.5), (4.0, 0.9)])
def test_loss_equals_the_direct_kl_div_computation(temperature, alpha):
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g) * 3
    y = torch.randint(0, 3, (8,), generator=g)
    t = temperature
    kl = torch.nn.functional.kl_div(
        torch.log_softmax(zs / t, -1), torch.softmax(zt / t, -1), reduction="batchmean"
    )
    direct = alpha * torch.nn.functional.cross_entropy(zs, y) + (1 - alpha) * t * t * kl
    got = distillation_loss(zs, zt, y, temperature=t, alpha=alpha)
    assert got.item() == pytest.approx(direct.item(), rel=1e-6, abs=1e-7)


def test_loss_is_zero_when_the_student_is_the_teacher():
    z = torch.randn(16, 5)
    y = torch.randint(0, 5, (16,))
    assert distillation_loss(z, z.clone(), y, temperature=3.0, alpha=0.0).item() == pytest.approx(
        0.0, abs=1e-7
    )
    assert distillation_loss(z + 1, z, y, temperature=3.0, alpha=0.0).item() == pytest.approx(
        0.0, abs=1e-6
    )  # a shift of every logit changes no probability


def test_layer_choices():
    assert student_layers(6, 3) == [1, 3, 5]  # every 2nd, ending with the last
    assert student_layers(6, 2) == [2, 5]
    assert student_layers(6, 4) == [1, 2, 4, 5]
    assert student_layers(6, 3, "first") == [0, 1, 2]
    assert student_layers(6, 6) == list(range(6))
    with pytest.raises(LlmoptError, match="between 1 and 6"):
        student_layers(6, 7)


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2"])
def test_student_has_the_requested_layers_with_the_teachers_weights(tiny_dirs, family):
    teacher = llmopt.load_model(str(tiny_dirs[family]))
    student = make_student(teacher, [1])
    blocks_t, prefix = layer_groups(teacher.model)
    blocks_s, _ = layer_groups(student.model)
    assert len(blocks_t) == 2 and len(blocks_s) == 1
    assert student.model.config.num_hidden_layers == 1
    ts, ss = teacher.model.state_dict(), student.model.state_dict()
    for key, value in ss.items():
        source = key.replace(f"{prefix}.0.", f"{prefix}.1.")  # block 0 of the student = 1
        assert torch.equal(value, ts[source]), key
    assert len(ss) < len(ts)
    data = class_dataset(10, 2, split="test")
    data.label_names = ["0", "1"]
    llmopt.evaluate(student, data)  # runs as a classifier


def test_distilled_student_learns_from_a_teacher_run_once(tiny3_dir, tmp_path):
    teacher = llmopt.load_model(str(tiny3_dir))
    calls = []
    own = teacher.model  # the student is a copy and inherits the hook: count the teacher's calls
    handle = own.register_forward_hook(lambda module, *_: calls.append(module is own))
    train, test = class_dataset(60, 3), class_dataset(30, 3, seed=1, split="test")
    config = TrainConfig(epochs=3, train_layers="all", learning_rate=LR, patience=None,
                         train_limit=None, batch_size=16)  # fmt: skip
    run = distill(
        teacher, train, n_layers=1, alpha=0.5, config=config, refit_head=False, eval_data=test
    )
    handle.remove()
    batches = -(-run.train_rows // 64)  # the teacher's logits: one pass over the training rows
    assert sum(calls) == batches + -(-len(test) // 32) + 1  # + its evaluation and warm-up
    assert run.model.model.config.num_hidden_layers == 1
    assert run.after.params_total < run.before.params_total
    losses = [h["loss"] for h in run.history if h["loss"] is not None]
    assert losses[-1] < losses[0]
    llmopt.save_model(run.model, tmp_path / "student")
    back = llmopt.evaluate(llmopt.load_model(str(tmp_path / "student")), test)
    np.testing.assert_allclose(back.y_score, run.after.y_score, rtol=0, atol=1e-6)
