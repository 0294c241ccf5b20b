"""The task registry: a training task registered in one place appears in the CLI and in the
description of its stored runs (the Train page: tests/app/test_train.py); the built-in tasks
describe their recipes as before."""

from __future__ import annotations

import json

import pytest
from task_file import COMMAND, NAME, STEP, dummy_task

from llmopt import tasks
from llmopt.cli import build_parser, main
from llmopt.recording import describe_config, describe_training


def _commands() -> list[str]:
    return list(build_parser()._subparsers._group_actions[0].choices)


def test_builtin_tasks_and_their_descriptions():
    assert list(tasks.training()) == ["finetune", "recover", "prune", "distill"]
    assert {c for t in tasks.training().values() if (c := t.command)} <= set(_commands())
    assert tasks.for_step("recover-head").name == "recover"
    assert describe_training({"task": "recover-head"}) == "head re-fitted"
    assert describe_training({"task": "recover-finetune", "train": {"epochs": 1}}) == (
        "recovered by fine-tuning, 1 epoch"
    )
    pruned = {"task": "prune-gradual", "final_sparsity": 0.7, "method": "wanda",
              "train": {"epochs": 2}}  # fmt: skip
    assert describe_training(pruned) == "gradual wanda pruning to 70%, 2 epochs"
    distilled = {"task": "distill", "n_layers": 1, "temperature": 2.0, "alpha": 0.5}
    assert describe_training(distilled) == "distilled to 1 layer (T 2.0, α 0.5)"
    assert describe_training({"train": {"train_layers": 4}}) == "fine-tuned (4 layers)"
    assert "classify" in tasks.EVAL_TASKS and "accuracy" in tasks.EVAL_TASKS["classify"].metrics


def test_gradual_pruning_offers_the_registrys_gradual_methods():
    parser = build_parser()
    args = parser.parse_args(["prune-gradual", "--final-sparsity", "0.5", "--sparsity-method",
                              "wanda"])  # fmt: skip
    assert args.method == "wanda"
    with pytest.raises(SystemExit):
        parser.parse_args(["prune-gradual", "--sparsity-method", "sparsegpt"])


def test_a_registered_training_task_runs_from_the_cli_and_is_described(
    tiny_bert_dir, tiny_csv, tmp_path, capsys
):
    out = tmp_path / "run.json"
    with dummy_task():
        assert COMMAND in _commands()
        rc = main([COMMAND, "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv),
                   "--knob", "5", "--json", str(out), "--no-record"])  # fmt: skip
        assert rc == 0, capsys.readouterr().err
        payload = json.loads(out.read_text())
        assert payload["task"] == STEP and payload["recipe"]["knob"] == 5
        assert describe_training(payload["recipe"]) == "dummy-trained with knob 5"
        assert describe_config({"training": payload["recipe"]}) == "dummy-trained with knob 5"
    assert NAME not in tasks.training() and COMMAND not in _commands()
    assert describe_training({"task": STEP}).startswith("fine-tuned")  # unknown step: default
