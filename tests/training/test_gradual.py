"""Gradual pruning follows its schedule: measured sparsity per step, exact final sparsity, N:M at
the end, masks recorded, the size counted like a one-shot compression's."""

from __future__ import annotations

import pytest
import torch
from train_data import LR, class_dataset

import llmopt
from llmopt.compression import CompressionConfig, compress
from llmopt.compression.prune import satisfies_nm
from llmopt.compression.targets import find_targets, get_weight, in_blocks
from llmopt.training.config import TrainConfig
from llmopt.training.gradual import plan, prune_gradual
from llmopt.training.schedules import PolynomialDecay

CONFIG = TrainConfig(epochs=2, train_layers="all", learning_rate=LR, patience=None, batch_size=16)


def zeros_per_row(loaded, name):
    w = get_weight(loaded.model.get_submodule(name))
    return (w == 0).sum(1)


@pytest.fixture(scope="module")
def pruned(tiny3_dir):
    loaded = llmopt.load_model(str(tiny3_dir))
    train, test = class_dataset(90, 3), class_dataset(30, 3, seed=1, split="test")
    schedule = PolynomialDecay(0.0, 0.6, begin_step=0, end_step=6, frequency=2)
    run = prune_gradual(loaded, train, 0.6, schedule=schedule, config=CONFIG, eval_data=test)
    return loaded, run


def test_measured_sparsity_follows_the_schedule_step_by_step(pruned):
    _, run = pruned
    assert [p["step"] for p in run.schedule] == list(range(len(run.schedule)))
    for p in run.schedule:  # measured right after each step's pruning: the staircase itself
        assert p["achieved"] == pytest.approx(p["sparsity"], abs=0.02), p
    assert run.schedule[0]["sparsity"] == 0.0 and run.schedule[-1]["sparsity"] == 0.6
    assert [h["sparsity"] for h in run.history][-1] == pytest.approx(0.6, abs=0.02)


def test_final_sparsity_is_exact_per_row_and_masks_are_recorded(pruned):
    loaded, run = pruned
    names = find_targets(run.model.model, in_blocks(run.model.model))
    assert sorted(run.model.compression["masks"]) == sorted(names)
    for n in names:
        w = get_weight(run.model.model.get_submodule(n))
        assert (zeros_per_row(run.model, n) == round(0.6 * w.shape[1])).all(), n
        assert torch.equal(w != 0, run.model.compression["masks"][n]), n
    one_shot, _ = compress(loaded, CompressionConfig(sparsity=0.6))
    assert run.model.size_bytes == one_shot.size_bytes  # same packed format, same count


def test_only_validations_after_the_last_pruning_step_can_be_kept(pruned):
    _, run = pruned
    last = max(p["step"] for p in run.schedule if p["sparsity"] == 0.6 and p["step"] <= 6)
    assert run.history[-1]["step"] > last


def test_nm_pattern_is_applied_at_the_end(tiny_dirs):
    loaded = llmopt.load_model(str(tiny_dirs["gpt2"]))  # Conv1D weights: stored transposed
    train = class_dataset(48, 2)
    train.label_names = ["0", "1"]
    config = TrainConfig(epochs=1, train_layers="all", learning_rate=LR, patience=None)
    run = prune_gradual(loaded, train, method="wanda", pattern="2:4", config=config)
    assert run.recipe["final_sparsity"] == 0.5
    for n in run.model.compression["masks"]:
        assert satisfies_nm(get_weight(run.model.model.get_submodule(n)), 2, 4), n
    assert run.schedule[-1]["achieved"] == pytest.approx(0.5)
    assert run.model.compression["config"]["sparsity_method"] == "wanda"


def test_plan_shows_the_schedule_before_training(tiny3_dir):
    loaded = llmopt.load_model(str(tiny3_dir))
    schedule, points = plan(loaded, class_dataset(90, 3), 0.7, config=CONFIG)
    assert len(points) == 2 * -(-81 // 16)  # 81 training rows after validation, 2 epochs
    assert points[-1]["sparsity"] == pytest.approx(0.7)
    assert schedule.kind == "polynomial" and schedule.end_step < len(points)
