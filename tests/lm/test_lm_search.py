"""Accuracy-aware search on causal LMs (issue 16 item 5): the loss is the rise of the mean NLL per
token on the paper protocol's windows of validation texts from the training split, the exit rule
is the upper end of its paired interval over windows, and the pick's test objects are those
``evaluate --task perplexity --recipe`` writes. (Every test here failed before: the search
refused causal LMs.)"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from lmtiny import make_docs, make_tiny_lm

from llmopt.cli import main
from llmopt.compression import CompressionConfig, compress
from llmopt.data import TextDataset
from llmopt.experiments import ExperimentStore
from llmopt.lm.perplexity import perplexity
from llmopt.search import allowed_loss, search
from llmopt.sensitivity import nll_delta, split_validation

SEQ_LEN = 16
TRAIN = TextDataset(make_docs(120, seed=4, min_words=3), np.zeros(120), ["text"], name="tiny",
                    split="train")  # fmt: skip
TEST = TextDataset(make_docs(30, seed=9, min_words=3), np.zeros(30), ["text"], name="tiny",
                   split="test")  # fmt: skip
KEYS = ["tolerance", "relative", "objective", "recipe", "evaluations", "seconds", "validation",
        "test", "uniform_best", "run_id"]  # fmt: skip
LM_KEYS = {"perplexity", "bits_per_byte", "tokens", "documents", "tokens_per_second", "interval",
           "size_bytes", "params_total", "params_nonzero"}  # fmt: skip


@pytest.fixture(scope="module")
def searched(lms, tmp_path_factory):
    store = ExperimentStore(tmp_path_factory.mktemp("lmsearch") / "runs.sqlite")
    result = search(lms["gpt2"], TRAIN, TEST, tolerance=0.002, methods="rtn", max_evaluations=8,
                    validation_rows=60, sensitivity_rows=20, seq_len=SEQ_LEN,
                    store=store)  # fmt: skip
    return result, store


def test_loss_is_the_nll_rise_and_every_verdict_is_the_exit_rule(lms, searched):
    """The baseline is log(perplexity) of the validation texts; each candidate's loss and
    interval re-measure through the normal path (compress, perplexity, paired over windows);
    accepted exactly when the interval's upper end is within the tolerance."""
    lm = lms["gpt2"]
    result, _store = searched
    validation, _ = split_validation(TRAIN, 60)
    base = perplexity(lm, validation.texts, seq_len=SEQ_LEN)
    assert result.metric == "nll" and result.windows == len(base.nll)
    assert result.baseline == pytest.approx(math.log(base.perplexity), rel=1e-9)
    assert result.allowed == 0.002
    for c in result.candidates:
        assert c.accepted == (c.interval[1] <= result.allowed), c.label
    assert any(c.accepted for c in result.candidates)
    assert any(not c.accepted for c in result.candidates), "the space reaches a rejected level"
    best = result.best
    assert best is not None and best.interval[1] <= result.allowed
    made, _ = compress(lm, CompressionConfig.from_dict(result.recipe), seq_len=SEQ_LEN)
    other = perplexity(made, validation.texts, seq_len=SEQ_LEN)
    loss, interval = nll_delta(base.tokens, base.nll, other.nll)
    assert loss == pytest.approx(best.loss, abs=1e-9)
    assert loss == pytest.approx(math.log(other.perplexity / base.perplexity), abs=1e-9)
    assert interval == pytest.approx(best.interval, abs=1e-9)
    assert result.uniform_best is not None
    assert best.size_bytes <= result.uniform_best.size_bytes
    assert any(c.family == "per-layer" for c in result.candidates)


def test_json_shape_and_recorded_candidates(searched):
    result, store = searched
    data = json.loads(json.dumps(result.to_dict()))
    assert list(data) == KEYS
    assert data["validation"]["baseline"]["metric"] == "nll"
    assert (
        data["validation"]["best"]["loss_interval"][1] <= data["validation"]["best"]["allowed_loss"]
    )
    assert set(data["test"]["baseline"]) == LM_KEYS == set(data["test"]["compressed"])
    assert set(data["uniform_best"]) == {"recipe", "size_bytes"}
    for c in result.candidates:
        run = store.get(c.run_id)
        assert run.task == "perplexity" and run.kind == "variant"
        if c.parent is not None:
            assert run.parent == result.candidates[c.parent].run_id
    pick = store.get(result.run_id)
    assert pick.rows_fingerprint != store.get(result.candidates[0].run_id).rows_fingerprint
    assert pick.metrics["compressed"]["perplexity"] == data["test"]["compressed"]["perplexity"]


def test_relative_tolerance_bounds_the_perplexity_ratio(lms):
    """--relative 0.05: the perplexity may rise by at most 5%, so the NLL by log(1.05)."""
    assert allowed_loss(0.05, relative=True, metric="nll") == pytest.approx(math.log(1.05))
    result = search(lms["llama"], TRAIN, None, tolerance=0.05, relative=True, methods="rtn",
                    max_evaluations=3, validation_rows=60, per_layer=False,
                    seq_len=SEQ_LEN)  # fmt: skip
    assert result.allowed == pytest.approx(math.log(1.05))
    for c in result.candidates:
        assert c.accepted == (c.interval[1] <= math.log(1.05))


@pytest.fixture(scope="module")
def texts_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("lmsearchcsv") / "texts.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "label"])
        for i, doc in enumerate(make_docs(150, seed=7, min_words=3)):
            writer.writerow([doc, "pos" if i % 2 else "neg"])
    return path


def test_cli_search_then_evaluate_recipe_gives_the_same_test_numbers(tmp_path, texts_csv):
    model = make_tiny_lm("gpt2", tmp_path / "gpt2")
    out, recipe, again = tmp_path / "s.json", tmp_path / "r.json", tmp_path / "e.json"
    src = ["--model", str(model), "--dataset", str(texts_csv), "--text-column", "review",
           "--seq-len", str(SEQ_LEN), "--dtype", "fp32", "--device", "cpu"]  # fmt: skip
    argv = ["search", *src, "--tolerance", "0.05", "--methods", "rtn", "--max-evaluations", "4",
            "--validation-rows", "40", "--json", str(out), "--recipe-out", str(recipe),
            "--no-record"]  # fmt: skip
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert list(data) == KEYS and data["recipe"] == json.loads(recipe.read_text())
    argv = ["evaluate", *src, "--recipe", str(recipe), "--json", str(again), "--no-record"]
    assert main(argv) == 0
    rerun = json.loads(again.read_text())
    for key in ("baseline", "compressed"):
        mine, theirs = data["test"][key], rerun[key]
        assert set(mine) == set(theirs) == LM_KEYS
        for field in LM_KEYS - {"tokens_per_second"}:  # timing differs between runs
            assert mine[field] == theirs[field], (key, field)


def test_cli_refuses_lm_flags_for_a_classifier(tiny_bert_dir, tiny_csv, capsys):
    argv = ["search", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv),
            "--tolerance", "0.01", "--seq-len", "16"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--seq-len applies to causal LMs" in err and len(err.splitlines()) == 1


def test_a_candidate_with_an_overflowing_nll_still_draws(searched):
    """A broken candidate's mean NLL can exceed what exp() holds (~709.78): the Pareto figure
    and its hover show an infinite perplexity instead of raising OverflowError."""
    import math

    from llmopt.figures.search import perplexity, search_figure

    result, _store = searched
    assert perplexity(math.log(123.0)) == pytest.approx(123.0) and perplexity(1e4) == math.inf
    kept = result.candidates[0].metric
    result.candidates[0].metric = 1e4
    try:
        fig = search_figure(result)
    finally:
        result.candidates[0].metric = kept
    ys = [y for t in fig.data if t.y is not None for y in t.y]
    assert math.inf in ys and "perplexity inf" in str([t.customdata for t in fig.data])
