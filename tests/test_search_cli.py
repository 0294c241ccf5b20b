"""``llmopt search``: the JSON contract, the recipe re-run by ``evaluate --recipe`` giving the
same test numbers, and one-line errors (exit 2) before any work."""

from __future__ import annotations

import json

import pytest

from llmopt.cli import main

KEYS = ["tolerance", "relative", "objective", "recipe", "evaluations", "seconds", "validation",
        "test", "uniform_best", "run_id"]  # fmt: skip


def test_json_contract_and_the_recipe_reruns_identically(tiny_bert_dir, tiny_csv, tmp_path):
    out, recipe, again = tmp_path / "s.json", tmp_path / "recipe.json", tmp_path / "e.json"
    src = ["--model", str(tiny_bert_dir), "--dataset", str(tiny_csv)]
    argv = ["search", *src, "--tolerance", "0.01", "--relative", "--methods", "magnitude,rtn",
            "--max-evaluations", "5", "--validation-rows", "12", "--uniform-only",
            "--json", str(out), "--recipe-out", str(recipe)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert list(data) == KEYS
    assert data["tolerance"] == 0.01 and data["relative"] is True and data["objective"] == "size"
    assert 1 <= data["evaluations"] <= 5 and data["seconds"] > 0
    assert set(data["validation"]) == {"baseline", "best"}
    assert set(data["test"]) == {"baseline", "compressed"}
    assert isinstance(data["run_id"], int)
    assert data["recipe"] == json.loads(recipe.read_text())
    best = data["validation"]["best"]
    assert best["loss_interval"][1] <= best["allowed_loss"]
    assert set(data["uniform_best"]) == {"recipe", "size_bytes"}
    assert data["uniform_best"]["size_bytes"] >= best["size_bytes"]
    # the test objects are evaluate --json's, and the recipe re-run gives the same numbers
    argv = ["evaluate", *src, "--recipe", str(recipe), "--json", str(again), "--no-record"]
    assert main(argv) == 0
    rerun = json.loads(again.read_text())
    for key in ("baseline", "compressed"):
        assert set(data["test"][key]) == set(rerun[key])
        assert data["test"][key]["metrics"] == rerun[key]["metrics"]
        assert data["test"][key]["size_bytes"] == rerun[key]["size_bytes"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--tolerance", "-1"], "must be a finite number >= 0"),
        (["--tolerance", "abc"], "expected a number"),
        (["--tolerance", "nan"], "must be a finite number"),
        ([], "required"),
        (["--tolerance", "0.01", "--methods", "nope"], "method 'nope' has no level"),
        (["--tolerance", "0.01", "--methods", "int8"], "has no level to search"),
        (["--tolerance", "0.01", "--methods", ","], "at least one method"),
        (["--tolerance", "0.01", "--max-evaluations", "0"], "must be a positive number"),
        (["--tolerance", "0.01", "--objective", "speed"], "invalid choice"),
        (["--tolerance", "0.01", "--json", "/nonexistent/dir/x.json"], "does not exist"),
        (["--tolerance", "0.01", "--validation-rows", "999"], "leaves none"),
        (["--tolerance", "0.01", "--validation-rows", "12", "--sensitivity-rows", "20"],
         "must be between 1 and the 12 validation rows"),
        (["--tolerance", "0.01", "--dtype", "bf16"], "--dtype applies to causal LMs"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2(tiny_bert_dir, tiny_csv, capsys, extra, message):
    argv = ["search", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv), *extra]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_same_path_for_both_outputs_is_refused(tiny_bert_dir, tiny_csv, tmp_path, capsys):
    path = str(tmp_path / "x.json")
    argv = ["search", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv),
            "--tolerance", "0.01", "--json", path, "--recipe-out", path]  # fmt: skip
    assert main(argv) == 2
    assert "same file" in capsys.readouterr().err
