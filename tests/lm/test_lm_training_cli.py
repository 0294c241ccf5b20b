"""``llmopt finetune`` and ``llmopt distill`` on a causal LM: they print and write perplexity and
bits per byte before and after with intervals (not a classifier's accuracy), record the run with
its lineage, and save a model whose perplexity is the one reported."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lmtiny import make_docs

from llmopt.cli import main
from llmopt.data import load_dataset
from llmopt.lm import load_causal_lm, perplexity

FAST = ["--epochs", "1", "--lr", "0.01", "--batch-size", "4"]
LM_KEYS = {"perplexity", "bits_per_byte", "tokens", "documents", "tokens_per_second", "interval"}


@pytest.fixture(scope="module")
def docs_csv(tmp_path_factory):
    """Review-like texts the tiny LMs' tokenizer was trained on, with labels (unused)."""
    path = tmp_path_factory.mktemp("lm_docs") / "docs.csv"
    texts = make_docs(120, seed=5, min_words=10)
    pd.DataFrame({"text": texts, "label": np.arange(120) % 2}).to_csv(path, index=False)
    return path


def _run(args, capsys):
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def _check_side(side: dict, model, texts) -> None:
    assert LM_KEYS <= set(side)
    lo, hi = side["interval"]
    assert lo <= side["perplexity"] <= hi
    direct = perplexity(model, texts)
    assert side["perplexity"] == pytest.approx(direct.perplexity, rel=1e-4)
    assert side["bits_per_byte"] == pytest.approx(direct.bits_per_byte, rel=1e-4)


def test_distill_an_lm_reports_perplexity_and_records_it(lm_dirs, docs_csv, tmp_path, capsys):
    """Before: the classifier's report compared two floats with ``llmopt.compare`` (a crash,
    after the model loader refused the LM outright)."""
    out, saved = tmp_path / "d.json", tmp_path / "student"
    rc, printed, err = _run(
        ["distill", "--model", str(lm_dirs["gpt2"]), "--dataset", str(docs_csv),
         "--student-layers", "1", *FAST, "--json", str(out), "--save-model", str(saved)],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    data = json.loads(out.read_text())
    assert data["task"] == "distill" and data["recipe"]["objective"] == "token-kl"
    assert data["protocol"] == "paper" and data["recipe"]["layers"] == [1]
    test = load_dataset(str(docs_csv), "test")
    teacher = load_causal_lm(str(lm_dirs["gpt2"]), dtype="fp32", device="cpu")
    student = load_causal_lm(str(saved), dtype="fp32", device="cpu")
    assert student.model.config.n_layer == 1
    _check_side(data["teacher"], teacher, test.texts)
    _check_side(data["student"], student, test.texts)
    assert 0 <= data["fidelity"]["top1_agreement"] <= 1
    assert set(data["delta_intervals"]) >= {"perplexity", "bits_per_byte"}
    assert "accuracy" not in printed and "perplexity: teacher" in printed
    assert "bits per byte: teacher" in printed and "student keeps teacher layers [1]" in printed
    from llmopt.experiments import ExperimentStore

    store = ExperimentStore()
    run = store.get(data["run_id"])
    assert run.task == "perplexity" and run.kind == "variant" and run.steps[-1] == "distill"
    assert run.parent == store.find_base(run.model_fingerprint, run.rows_fingerprint)
    assert run.metrics["compressed"]["perplexity"] == pytest.approx(data["student"]["perplexity"])


def test_finetune_an_lm_lowers_its_perplexity(lm_dirs, docs_csv, tmp_path, capsys):
    """Recovery's objective on an uncompressed LM: the next-token NLL falls, and the JSON's
    before/after are perplexity with intervals and a paired difference."""
    out = tmp_path / "f.json"
    rc, printed, err = _run(
        ["finetune", "--model", str(lm_dirs["llama"]), "--dataset", str(docs_csv),
         "--train-layers", "all", *FAST, "--json", str(out), "--no-record"],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    data = json.loads(out.read_text())
    assert data["task"] == "finetune" and data["recipe"]["objective"] == "nll"
    assert LM_KEYS <= set(data["before"]) and LM_KEYS <= set(data["after"])
    assert data["after"]["perplexity"] < data["before"]["perplexity"]
    lo, hi = data["delta_intervals"]["perplexity"]
    assert hi < 0  # a real fall, not noise
    assert data["run_id"] is None and "perplexity: before" in printed
    assert all({"step", "loss"} <= set(h) for h in data["history"])
