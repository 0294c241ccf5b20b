"""``evaluate --task perplexity … --recover finetune`` on a causal LM: the compressed model is
recovered by minimising the next-token NLL on the training texts (masks kept), scored on the
same windows, written to the JSON, recorded as a child of the compressed run and saved.

Before this change ``evaluate`` refused ``--recover`` for every causal LM ("--recover applies
to classifiers"), so the first test exited 2; ``--recover head`` was refused with that same
sentence, which named neither the head nor the fine-tune a causal LM can take."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from lmtiny import make_docs

from llmopt.cli import main

LM_KEYS = {"perplexity", "bits_per_byte", "tokens", "documents", "tokens_per_second", "interval",
           "size_bytes", "params_total", "params_nonzero"}  # fmt: skip


@pytest.fixture(scope="module")
def docs_csv(tmp_path_factory):
    """Review-like texts the tiny LMs' tokenizer was trained on (labels unused)."""
    path = tmp_path_factory.mktemp("lm_recover") / "docs.csv"
    texts = make_docs(120, seed=5, min_words=10)
    pd.DataFrame({"text": texts, "label": np.arange(120) % 2}).to_csv(path, index=False)
    return path


def _evaluate(model_dir, csv_path, *extra):
    common = ["--dtype", "fp32", "--device", "cpu", "--task", "perplexity"]
    return main(["evaluate", "--model", str(model_dir), "--dataset", str(csv_path), *common,
                 *extra])  # fmt: skip


def _zeros(model) -> dict[str, torch.Tensor]:
    """Where each 2-D weight of the decoder blocks is exactly zero."""
    return {n: p.detach() == 0 for n, p in model.named_parameters()
            if p.dim() == 2 and ".h." in n}  # fmt: skip


def test_recover_finetune_on_an_lm(lm_dirs, docs_csv, tmp_path, capsys):
    """The JSON's ``recovered`` equals a direct ``recover_lm`` + ``perplexity`` with the same
    (default) seed, the saved model is the recovered one with the compressed model's zeros,
    and the store holds the recovery as a child of the compressed run."""
    from llmopt.compression import CompressionConfig, compress
    from llmopt.data import load_dataset
    from llmopt.experiments import ExperimentStore
    from llmopt.lm import load_causal_lm, perplexity
    from llmopt.training.lm import recover_lm

    out, saved = tmp_path / "r.json", tmp_path / "recovered"
    rc = _evaluate(lm_dirs["gpt2"], docs_csv, "--sparsity", "0.5", "--recover", "finetune",
                   "--json", str(out), "--save-model", str(saved))  # fmt: skip
    printed, err = capsys.readouterr()
    assert rc == 0, err
    data = json.loads(out.read_text())
    assert data["recover"] == "finetune"
    assert LM_KEYS <= set(data["recovered"]) == set(data["compressed"])
    assert set(data["recovered_fidelity"]) == {"top1_agreement", "mean_kl"}
    lo, hi = data["recovered"]["interval"]
    assert lo <= data["recovered"]["perplexity"] <= hi
    assert "recovered (finetune" in printed and "paired difference vs compressed" in printed
    assert f"recovered model saved to {saved}" in printed

    # the same recovery, done directly
    lm = load_causal_lm(str(lm_dirs["gpt2"]), dtype="fp32", device="cpu")
    compressed, _ = compress(lm, CompressionConfig.from_dict(data["config"]))
    run = recover_lm(compressed, load_dataset(str(docs_csv), "train"))
    test = load_dataset(str(docs_csv), "test")
    direct = perplexity(run.model, test.texts)
    assert data["recovered"]["perplexity"] == pytest.approx(direct.perplexity, rel=1e-4)
    assert data["recovered"]["tokens"] == data["compressed"]["tokens"] == direct.n_tokens
    assert data["recovered"]["perplexity"] != data["compressed"]["perplexity"]  # it trained

    # masks kept: the saved (recovered) model has the compressed model's zeros, at the slider
    reloaded = load_causal_lm(str(saved), dtype="fp32", device="cpu")
    assert perplexity(reloaded, test.texts).perplexity == pytest.approx(
        data["recovered"]["perplexity"], rel=1e-4
    )
    kept, pruned = _zeros(reloaded.model), _zeros(compressed.model)
    assert kept and kept.keys() == pruned.keys()
    for name, mask in pruned.items():
        assert torch.equal(kept[name], mask), name
        assert mask.float().mean().item() == pytest.approx(0.5, abs=0.02), name
    # (params_nonzero may grow: biases initialised at zero are trained, and they are not pruned)

    store = ExperimentStore()
    child = store.get(data["recovered_run_id"])
    assert child.parent == data["run_id"] and child.task == "perplexity"
    assert child.steps[-1] == "recover"
    assert child.metrics["compressed"]["perplexity"] == pytest.approx(
        data["recovered"]["perplexity"]
    )
    assert store.get(data["run_id"]).metrics["compressed"]["perplexity"] == pytest.approx(
        data["compressed"]["perplexity"]
    )


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--sparsity", "0.5", "--recover", "head"], "--recover head re-fits a classifier's head"),
        (["--recover", "finetune"], "--recover trains a compressed model"),
        (["--sparsity", "0.5", "--recover", "finetune", "--dtype", "bf16"], "trains in fp32"),
    ],
)  # fmt: skip
def test_recover_an_lm_cannot_take_is_one_line(lm_dirs, docs_csv, capsys, extra, words):
    """Refused in one line before any work: the head of a classifier, nothing to recover, a
    float type training cannot use."""
    assert _evaluate(lm_dirs["gpt2"], docs_csv, "--no-record", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_recover_with_zero_shot_is_refused(lm_dirs, docs_csv, capsys):
    """Zero-shot label scoring has no recovery: said in one line, naming the task."""
    rc = main(["evaluate", "--model", str(lm_dirs["gpt2"]), "--dataset", str(docs_csv),
               "--task", "zero-shot", "--sparsity", "0.5", "--recover", "finetune",
               "--no-record"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "--recover applies to --task perplexity" in err and "zero-shot" in err
    assert len(err.splitlines()) == 1
