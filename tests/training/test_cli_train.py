"""The training commands: JSON shapes of the contract, saved models that load back, progress with
an ETA on stderr, and one line with exit status 2 for every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from contract import RESULT_KEYS

import llmopt
from llmopt.cli import main

FAST = ["--epochs", "1", "--lr", "0.01"]


def run_cli(args, capsys):
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_finetune_json_and_saved_model(tiny_bert_dir, tiny_csv, tmp_path, capsys):
    out, saved = tmp_path / "ft.json", tmp_path / "model"
    rc, printed, err = run_cli(
        ["finetune", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv),
         "--train-layers", "all", *FAST, "--json", str(out), "--save-model", str(saved)],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    assert "ETA" in err and "finetune: step" in err  # the progress bar, on stderr
    data = json.loads(out.read_text())
    assert {"before", "after", "history"} <= set(data)
    assert set(data["before"]) == set(data["after"]) == RESULT_KEYS
    assert all({"step", "epoch", "loss", "val_accuracy"} <= set(h) for h in data["history"])
    assert data["history"][0]["step"] == 0 and data["history"][-1]["step"] > 0
    test = llmopt.load_dataset(str(tiny_csv), "test")
    back = llmopt.evaluate(llmopt.load_model(str(saved)), test)
    assert back.confusion.tolist() == data["after"]["confusion_matrix"]
    assert back.metrics["accuracy"] == pytest.approx(data["after"]["metrics"]["accuracy"])
    assert "trained model saved" in printed


def test_distill_json(tiny_bert_dir, tiny_csv, tmp_path, capsys):
    out = tmp_path / "d.json"
    rc, printed, err = run_cli(
        ["distill", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv),
         "--student-layers", "1", *FAST, "--json", str(out)],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    data = json.loads(out.read_text())
    assert {"teacher", "student", "history"} <= set(data)
    assert set(data["student"]) == RESULT_KEYS
    assert data["student"]["params_total"] < data["teacher"]["params_total"]
    assert data["recipe"]["layers"] == [1] and 0 <= data["fidelity"]["agreement"] <= 1
    assert "student keeps teacher layers [1]" in printed


def test_prune_gradual_json_has_the_schedule(tiny_bert_dir, tiny_csv, tmp_path, capsys):
    out = tmp_path / "g.json"
    rc, _, err = run_cli(
        ["prune-gradual", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv),
         "--final-sparsity", "0.5", "--schedule", "constant", *FAST, "--json", str(out)],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    data = json.loads(out.read_text())
    assert {"before", "after", "history", "schedule"} <= set(data)
    assert all({"step", "sparsity"} <= set(p) for p in data["schedule"])
    assert data["schedule"][-1]["sparsity"] == 0.5
    assert data["schedule"][-1]["achieved"] == pytest.approx(0.5, abs=0.02)
    assert data["after"]["params_nonzero"] < data["before"]["params_nonzero"]


def test_evaluate_recover_adds_recovered_and_its_fidelity(tiny_bert_dir, tiny_csv, tmp_path,
                                                          capsys):  # fmt: skip
    out = tmp_path / "r.json"
    rc, printed, err = run_cli(
        ["evaluate", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv),
         "--sparsity", "0.5", "--bits", "4", "--recover", "head", "--json", str(out)],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    data = json.loads(out.read_text())
    assert set(data["recovered"]) == RESULT_KEYS
    assert set(data["recovered_fidelity"]) == {"agreement", "mean_kl", "flipped"}
    assert data["compressed"] is not None and "recovered (head)" in printed
    kept = np.asarray(data["recovered"]["confusion_matrix"]).sum()
    assert kept == data["n"]
    # the lineage: base -> compressed -> recovered, with the recovered run's own metrics
    from llmopt.experiments import ExperimentStore

    store = ExperimentStore()
    recovered, compressed = store.get(data["recovered_run_id"]), store.get(data["run_id"])
    assert recovered.parent == compressed.id
    chain = [compressed]  # up the lineage (earlier tests' variants may sit between): a base
    while chain[-1].parent is not None:
        chain.append(store.get(chain[-1].parent))
    assert chain[-1].kind == "base" and chain[-1].model_fingerprint == compressed.model_fingerprint
    assert recovered.steps == ["prune", "quantize", "recover"]
    assert recovered.metrics["compressed"]["accuracy"] == data["recovered"]["metrics"]["accuracy"]
    assert recovered.config["training"]["task"] == "recover-head"
    assert recovered.latency_simulated  # same kernels as the base: no latency delta shown


def test_training_runs_are_recorded_with_their_task(tiny_bert_dir, tiny_csv, tmp_path, capsys):
    from llmopt.comparison import lineage_layout
    from llmopt.experiments import ExperimentStore
    from llmopt.recording import load_recipe

    out = tmp_path / "d.json"
    rc, printed, err = run_cli(
        ["distill", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv),
         "--student-layers", "1", *FAST, "--json", str(out)],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    data = json.loads(out.read_text())
    store = ExperimentStore()
    run = store.get(data["run_id"])
    assert f"recorded as run {run.id}" in printed
    assert run.steps == ["distill"] and store.get(run.parent).kind == "base"
    assert run.metrics["compressed"]["accuracy"] == data["student"]["metrics"]["accuracy"]
    assert not run.latency_simulated and run.latency["method"] == "paired"  # a smaller model
    layout = lineage_layout([store.get(run.parent), run])
    assert layout.set_index("id").loc[run.id, "step"].startswith("distilled to 1 layer (T 2")
    exported = tmp_path / "run.json"
    assert main(["runs", "export", str(run.id), "-o", str(exported)]) == 0
    with pytest.raises(llmopt.LlmoptError, match="training run"):
        load_recipe(exported)
    rc, _, _ = run_cli(
        ["finetune", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv), *FAST,
         "--json", str(out), "--no-record"],
        capsys,
    )  # fmt: skip
    assert rc == 0 and json.loads(out.read_text())["run_id"] is None


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["distill", "--student-layers", "5"], "between 1 and 2"),
        (["distill"], "--student-layers"),
        (["prune-gradual"], "--final-sparsity"),
        (["prune-gradual", "--final-sparsity", "1.5"], "--final-sparsity"),
        (["prune-gradual", "--final-sparsity", "0.5", "--sparsity-pattern", "2:4"], "drop"),
        (["finetune", "--train-layers", "0"], "top layers"),
        (["finetune", "--train-layers", "9"], "at most 2"),
        (["finetune", "--epochs", "0"], "epochs"),
        (["finetune", "--lr", "2"], "learning rate"),
        (["finetune", "--overwrite"], "--save-model"),
        (["evaluate", "--recover", "head"], "--recover"),
        (["evaluate", "--recover", "finetune", "--int8-dynamic"], "int8"),
    ],
)
def test_bad_training_inputs_exit_2_with_one_line(tiny_bert_dir, tiny_csv, capsys, args, match):
    try:
        rc = main([*args[:1], "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv),
                   *args[1:]])  # fmt: skip
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len([line for line in err if "error" in line]) == 1 and match in err[-1], err
