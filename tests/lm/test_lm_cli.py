"""The causal-LM command line: ``evaluate --task perplexity|zero-shot``, ``generate``, the
registries' LM entries, and LM runs in the experiment store.

Every test fails on the code before this change: ``evaluate`` refused causal LMs (and had no
``--task``), there was no ``generate`` command, and the registries had no LM entries."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from contract import METRIC_NAMES, RESULT_KEYS
from contract import TOP_KEYS as TOP_KEYS_CLASSIFY
from lmtiny import make_docs, make_tiny_lm
from sklearn import metrics as skm

from llmopt.cli import main

LM_KEYS = {"perplexity", "bits_per_byte", "tokens", "documents", "tokens_per_second", "interval",
           "size_bytes", "params_total", "params_nonzero"}  # fmt: skip
TOP_KEYS = {"task", "protocol", "seq_len", "model", "dataset", "n", "config", "baseline",
            "compressed", "fidelity", "run_id"}  # fmt: skip


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return make_tiny_lm("gpt2", tmp_path_factory.mktemp("lmcli") / "gpt2")


@pytest.fixture(scope="module")
def texts_csv(tmp_path_factory):
    """Review-like texts in a column named 'review', labels pos/neg, 40 rows."""
    path = tmp_path_factory.mktemp("lmcsv") / "texts.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "label"])
        for i, doc in enumerate(make_docs(40, seed=7, min_words=3)):
            writer.writerow([doc, "pos" if i % 2 else "neg"])
    return path


def _evaluate(model, csv_path, *args) -> int:
    common = ["--text-column", "review", "--dtype", "fp32", "--device", "cpu"]
    return main(["evaluate", "--model", str(model), "--dataset", str(csv_path), *common, *args])


def _split_texts(csv_path):
    from llmopt.data import load_dataset

    return load_dataset(str(csv_path), "test", text_column="review")


def _lm(directory):
    from llmopt.lm import load_causal_lm

    return load_causal_lm(str(directory), dtype="fp32", device="cpu")


def test_perplexity_json_contract_equals_the_library(gpt2_dir, texts_csv, tmp_path):
    from llmopt.lm import perplexity, perplexity_interval
    from llmopt.loaded import count_params

    out = tmp_path / "p.json"
    assert _evaluate(gpt2_dir, texts_csv, "--seq-len", "32", "--json", str(out)) == 0
    data = json.loads(out.read_text())
    assert set(data) == TOP_KEYS
    assert set(data["baseline"]) == LM_KEYS  # the paper protocol: no word/byte perplexity
    assert (data["task"], data["protocol"], data["seq_len"]) == ("perplexity", "paper", 32)
    assert data["compressed"] is None and data["fidelity"] is None and data["config"] is None
    assert isinstance(data["run_id"], int)
    dataset = _split_texts(texts_csv)
    lm = _lm(gpt2_dir)
    direct = perplexity(lm, dataset.texts, protocol="paper", seq_len=32)
    assert data["n"] == len(dataset)
    assert data["baseline"]["perplexity"] == pytest.approx(direct.perplexity, rel=1e-9)
    assert data["baseline"]["bits_per_byte"] == pytest.approx(direct.bits_per_byte, rel=1e-9)
    assert data["baseline"]["tokens"] == direct.n_tokens
    low, high = data["baseline"]["interval"]
    assert [low, high] == pytest.approx(list(perplexity_interval(direct)), rel=1e-9)
    assert low <= data["baseline"]["perplexity"] <= high
    total, nonzero = count_params(lm.model)
    assert (data["baseline"]["params_total"], data["baseline"]["params_nonzero"]) == (
        total,
        nonzero,
    )


def test_document_protocol_adds_word_and_byte_perplexity(gpt2_dir, texts_csv, tmp_path):
    from llmopt.lm import perplexity

    out = tmp_path / "d.json"
    assert _evaluate(gpt2_dir, texts_csv, "--protocol", "document", "--json", str(out)) == 0
    data = json.loads(out.read_text())
    assert data["protocol"] == "document"
    assert set(data["baseline"]) == LM_KEYS | {"word_perplexity", "byte_perplexity"}
    direct = perplexity(_lm(gpt2_dir), _split_texts(texts_csv).texts, protocol="document")
    for key in ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert data["baseline"][key] == pytest.approx(getattr(direct, key), rel=1e-9), key


def test_zero_shot_metrics_equal_sklearn_on_its_predictions(gpt2_dir, texts_csv, tmp_path):
    out, preds = tmp_path / "z.json", tmp_path / "z.csv"
    prompt = "Review: {text}\\nIt was"
    rc = _evaluate(gpt2_dir, texts_csv, "--task", "zero-shot", "--prompt", prompt,
                   "--verbalizer", "pos=good", "--verbalizer", "neg=bad",
                   "--json", str(out), "--predictions", str(preds))  # fmt: skip
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data) == TOP_KEYS_CLASSIFY | {"prompt", "verbalizers"}
    assert set(data["baseline"]) == RESULT_KEYS
    assert set(data["baseline"]["metrics"]) == METRIC_NAMES | {"acc_norm"}
    assert data["prompt"] == "Review: {text}\nIt was"
    assert data["verbalizers"] == {"pos": "good", "neg": "bad"}
    assert {"metrics", "confusion_matrix", "size_bytes"} <= set(data["baseline"])
    rows = list(csv.DictReader(preds.open(encoding="utf-8")))
    names = data["label_names"]
    y_true = np.array([names.index(r["label"]) for r in rows])
    y_pred = np.array([names.index(r["pred_baseline"]) for r in rows])
    y_score = np.array([[float(r[f"prob_baseline_{n}"]) for n in names] for r in rows])
    assert np.allclose(y_score.sum(1), 1)
    assert (y_score.argmax(1) == y_pred).all()
    m = data["baseline"]["metrics"]
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, y_score[:, 1]))
    assert data["baseline"]["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred).tolist()


def test_generate_json_shape_and_seeded_determinism(gpt2_dir, tmp_path):
    runs = []
    for i in range(2):
        out = tmp_path / f"g{i}.json"
        rc = main(["generate", "--model", str(gpt2_dir), "--prompt", "the coffee",
                   "--max-new-tokens", "6", "--sample", "--seed", "3", "--dtype", "fp32",
                   "--json", str(out)])  # fmt: skip
        assert rc == 0
        runs.append(json.loads(out.read_text()))
    data = runs[0]
    assert {"prompt", "baseline", "compressed", "first_divergence"} == set(data)
    assert {"text", "tokens", "tokens_per_second"} <= set(data["baseline"])
    assert data["prompt"] == "the coffee" and data["compressed"] is None
    assert data["first_divergence"] is None
    assert 1 <= len(data["baseline"]["tokens"]) <= 6
    same = [{k: v for k, v in r["baseline"].items() if k != "tokens_per_second"} for r in runs]
    assert same[0] == same[1]


def test_task_that_the_model_kind_does_not_take_exits_2(gpt2_dir, tiny_dirs, texts_csv, capsys):
    assert _evaluate(gpt2_dir, texts_csv, "--task", "classify") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "causal language model" in err
    # a GPT-2 *classifier* shares GPT-2's model type: the architectures decide
    rc = main(["evaluate", "--model", str(tiny_dirs["gpt2"]), "--dataset", str(texts_csv),
               "--text-column", "review", "--task", "perplexity"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sequence classifier" in err
    assert _evaluate(gpt2_dir, texts_csv, "--prompt", "{text} is") == 2  # a zero-shot flag
    assert "--prompt does not apply to --task perplexity" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_dirs["gpt2"]), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "generate needs a causal LM" in err


def test_model_kind_reads_the_config_only(lm_dirs, tiny_dirs, tmp_path):
    from llmopt.lm.load import CAUSAL_LM, CLASSIFIER, model_kind

    for family, directory in lm_dirs.items():
        assert model_kind(str(directory)) == CAUSAL_LM, family
    for family, directory in tiny_dirs.items():
        assert model_kind(str(directory)) == CLASSIFIER, family
    assert model_kind("bundled") == CLASSIFIER
    assert model_kind(f"encoder:{lm_dirs['gpt2']}") == CLASSIFIER
    bare = tmp_path / "bare"  # no architectures: the model type decides (BERT is an encoder)
    bare.mkdir()
    (bare / "config.json").write_text('{"model_type": "llama"}')
    assert model_kind(str(bare)) == CAUSAL_LM
    (bare / "config.json").write_text('{"model_type": "bert"}')
    assert model_kind(str(bare)) == CLASSIFIER
    assert model_kind(str(tmp_path / "missing")) == CLASSIFIER  # its loader says what is wrong


def test_compression_flag_compresses_or_says_it_cannot(gpt2_dir, texts_csv, tmp_path, capsys):
    out = tmp_path / "c.json"
    rc = _evaluate(gpt2_dir, texts_csv, "--sparsity", "0.5", "--json", str(out))
    if rc == 2:  # compress() does not take causal LMs yet
        err = capsys.readouterr().err.strip()
        assert err.startswith("llmopt: error: compression of causal LMs") and "\n" not in err
        assert not out.exists()
    else:
        data = json.loads(out.read_text())
        assert rc == 0 and data["config"]["sparsity"] == 0.5
        assert set(data["fidelity"]) == {"top1_agreement", "mean_kl"}
        assert data["compressed"]["params_nonzero"] < data["baseline"]["params_nonzero"]


def test_recorded_lm_run_round_trips_through_runs_show(gpt2_dir, texts_csv, tmp_path, capsys):
    out = tmp_path / "p.json"
    assert _evaluate(gpt2_dir, texts_csv, "--protocol", "document", "--seq-len", "48",
                     "--json", str(out)) == 0  # fmt: skip
    data = json.loads(out.read_text())
    capsys.readouterr()
    assert main(["runs", "show", str(data["run_id"]), "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["task"] == "perplexity"
    assert (run["rows"]["protocol"], run["rows"]["seq_len"]) == ("document", 48)
    own = run["metrics"]["baseline"]
    for key in ("perplexity", "bits_per_byte", "word_perplexity", "byte_perplexity"):
        assert own[key] == pytest.approx(data["baseline"][key], rel=1e-12), key
    assert run["intervals"]["perplexity"] == pytest.approx(data["baseline"]["interval"])
    assert run["size_bytes"] == data["baseline"]["size_bytes"]
    assert main(["runs", "show", str(data["run_id"])]) == 0
    assert "task    perplexity, protocol document, seq_len 48" in capsys.readouterr().out
    assert main(["runs", "list"]) == 0
    listed = [
        ln for ln in capsys.readouterr().out.splitlines() if ln.split()[0] == str(data["run_id"])
    ]
    assert f"{data['baseline']['perplexity']:.3f}" in listed[0]


def test_lm_and_classifier_runs_on_one_csv_are_not_comparable(gpt2_dir, texts_csv, tmp_path):
    from tinymodels import make_tiny

    from llmopt.comparison import comparable
    from llmopt.experiments import ExperimentStore

    classifier = make_tiny("bert", tmp_path / "bert", id2label={0: "neg", 1: "pos"})
    ids = {}
    for name, model, args in (
        ("paper", gpt2_dir, ["--seq-len", "32"]),
        ("paper64", gpt2_dir, ["--seq-len", "64"]),
        ("document", gpt2_dir, ["--protocol", "document", "--seq-len", "32"]),
        ("zero-shot", gpt2_dir, ["--task", "zero-shot", "--verbalizer", "pos=good",
                                 "--verbalizer", "neg=bad"]),
    ):  # fmt: skip
        out = tmp_path / f"{name}.json"
        assert _evaluate(model, texts_csv, *args, "--json", str(out)) == 0
        ids[name] = json.loads(out.read_text())["run_id"]
    out = tmp_path / "clf.json"
    rc = main(["evaluate", "--model", str(classifier), "--dataset", str(texts_csv),
               "--text-column", "review", "--json", str(out)])  # fmt: skip
    assert rc == 0
    ids["classify"] = json.loads(out.read_text())["run_id"]
    store = ExperimentStore()
    runs = {k: store.get(v) for k, v in ids.items()}
    assert runs["classify"].task == "classify" and runs["zero-shot"].task == "zero-shot"
    for lm_run in ("paper", "paper64", "document"):
        assert not comparable([runs[lm_run], runs["classify"]]), lm_run
        assert not comparable([runs[lm_run], runs["zero-shot"]]), lm_run
    assert not comparable([runs["paper"], runs["paper64"]])
    assert not comparable([runs["paper"], runs["document"]])
    # zero-shot label scoring classifies the same rows as the classifier: they pair
    assert comparable([runs["zero-shot"], runs["classify"]])


def test_registries_list_the_lm_metrics_and_tasks():
    from llmopt import metrics, stats, tasks

    assert {"perplexity", "bits_per_byte", "top1_agreement", "mean_kl"} <= set(
        metrics.keys(metrics.PERPLEXITY)
    )
    assert "perplexity" not in metrics.keys()  # the classify task's metrics are unchanged
    assert set(metrics.keys(metrics.ZERO_SHOT)) == set(metrics.keys(metrics.CLASSIFY))
    for key, higher in (("perplexity", False), ("bits_per_byte", False), ("mean_kl", False),
                        ("top1_agreement", True)):  # fmt: skip
        assert stats.HIGHER_IS_BETTER[key] is higher
    assert metrics.get("bits_per_byte").format(1.23456) == "1.2346 bits/byte"
    assert set(tasks.eval_tasks("causal-lm")) == {"perplexity", "zero-shot", "generate"}
    assert set(tasks.eval_tasks("sequence-classification")) == {"classify"}
    with pytest.raises(ValueError, match="token log-likelihoods"):
        metrics.get("perplexity").compute(None, None, None)


@pytest.mark.parametrize(
    "args",
    [
        ["--protocol", "document", "--seq-len", "40"],
        [
            "--task",
            "zero-shot",
            "--prompt",
            "{text} =",
            "--verbalizer",
            "pos=yes",
            "--verbalizer",
            "neg=no",
        ],
    ],  # fmt: skip
    ids=["perplexity", "zero-shot"],
)
def test_an_exported_lm_run_re_runs_as_a_recipe(gpt2_dir, texts_csv, tmp_path, capsys, args):
    """The recipe of an LM run carries its task and how it scored (protocol and window, or
    prompt and verbalizers): re-running it gives the same numbers."""
    first, again, recipe = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "r.json"
    assert _evaluate(gpt2_dir, texts_csv, "--limit", "6", *args, "--json", str(first)) == 0
    run_id = json.loads(first.read_text())["run_id"]
    assert main(["runs", "export", str(run_id), "-o", str(recipe)]) == 0
    exported = json.loads(recipe.read_text())
    if "--prompt" in args:
        assert exported["rows"]["prompt"] == "{text} ="
        assert exported["rows"]["verbalizers"] == {"pos": "yes", "neg": "no"}
    assert main(["evaluate", "--recipe", str(recipe), "--dtype", "fp32", "--json", str(again)]) == 0
    a, b = json.loads(first.read_text()), json.loads(again.read_text())
    for key in ("model", "dataset", "n", "protocol", "seq_len", "prompt", "verbalizers"):
        assert a.get(key) == b.get(key), key
    drop = {"tokens_per_second", "latency_ms_per_sample"}
    assert {k: v for k, v in a["baseline"].items() if k not in drop} == {
        k: v for k, v in b["baseline"].items() if k not in drop
    }


def test_a_compressed_lm_is_scored_paired_and_recorded(gpt2_dir, texts_csv, tmp_path, capsys):
    """A compression flag on a causal LM: fidelity and both perplexities as ``compare_lms``
    gives them for the model ``compress`` returns, and a variant run whose parent is the base
    run, with paired intervals."""
    from llmopt import CompressionConfig, compress
    from llmopt.lm import compare_lms

    out = tmp_path / "c.json"
    assert _evaluate(gpt2_dir, texts_csv, "--sparsity", "0.5", "--seq-len", "32",
                     "--json", str(out)) == 0  # fmt: skip
    data = json.loads(out.read_text())
    assert set(data["compressed"]) == LM_KEYS
    assert set(data["fidelity"]) == {"top1_agreement", "mean_kl"}
    assert data["config"]["sparsity"] == 0.5
    lm = _lm(gpt2_dir)
    small, _ = compress(lm, CompressionConfig(sparsity=0.5), seq_len=32)
    base, other, fid = compare_lms(lm, small, _split_texts(texts_csv).texts, seq_len=32)
    assert data["baseline"]["perplexity"] == pytest.approx(base.perplexity, rel=1e-9)
    assert data["compressed"]["perplexity"] == pytest.approx(other.perplexity, rel=1e-9)
    assert data["fidelity"]["top1_agreement"] == pytest.approx(fid.top1_agreement, rel=1e-9)
    assert data["fidelity"]["mean_kl"] == pytest.approx(fid.mean_kl, rel=1e-9)
    assert data["compressed"]["params_nonzero"] < data["baseline"]["params_nonzero"]
    capsys.readouterr()
    assert main(["runs", "show", str(data["run_id"]), "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["kind"] == "variant" and run["task"] == "perplexity"
    assert run["parent"] is not None
    assert main(["runs", "show", str(run["parent"]), "--json"]) == 0
    parent = json.loads(capsys.readouterr().out)
    assert parent["kind"] == "base" and parent["rows_fingerprint"] == run["rows_fingerprint"]
    assert run["agreement"] == pytest.approx(fid.top1_agreement, rel=1e-9)
    assert set(run["delta_intervals"]) >= {"perplexity", "bits_per_byte"}
    assert run["metrics"]["compressed"]["mean_kl"] == pytest.approx(fid.mean_kl, rel=1e-9)
    assert run["fidelity"]["harder"]  # the tokens that got harder are kept for the views
