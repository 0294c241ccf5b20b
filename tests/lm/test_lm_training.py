"""Training tasks of causal LMs: recovery minimises the NLL keeping the compression,
distillation lowers the token KL to the teacher, and the starting model never changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lmtiny import make_docs

from llmopt import tasks
from llmopt.compression import CompressionConfig, compress
from llmopt.data import TextDataset
from llmopt.errors import LlmoptError
from llmopt.training.config import TrainConfig
from llmopt.training.constraints import satisfies
from llmopt.training.lm import (
    mean_loss,
    nll_loss,
    token_kl,
    training_windows,
    window_nll,
)

TRAIN = TextDataset(make_docs(80, seed=1), np.zeros(80), ["text"], name="tiny-train", split="train")
CONFIG = TrainConfig(
    epochs=3.0, learning_rate=5e-3, batch_size=8, train_layers="all", val_fraction=0.0,
    max_length=32, warmup_ratio=0.0, patience=None, train_limit=None,
)  # fmt: skip


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nll_loss_is_the_models_own_labels_loss(lms):
    lm = lms["llama"]
    ids = training_windows(lm, TRAIN, CONFIG)[:3]
    with torch.no_grad():
        ours = nll_loss(lm.model, ids)
        theirs = lm.model(input_ids=ids, labels=ids).loss
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_recovery_after_pruning_lowers_the_nll_and_keeps_every_zero(lms, family):
    base = lms[family]
    base_weights = _weights(base.model)
    pruned, _ = compress(base, CompressionConfig(sparsity=0.5))
    pruned_weights = _weights(pruned.model)
    windows = training_windows(pruned, TRAIN, CONFIG)
    before = window_nll(pruned, windows)
    run = tasks.get("recover").run(pruned, TRAIN, {"method": "finetune"}, CONFIG, tasks.Hooks())
    after = window_nll(run.model, windows)
    assert run.task == "recover-finetune" and run.recipe["objective"] == "nll"
    assert after < before - 0.05, (before, after)
    state = pruned.compression
    assert state and state["masks"]
    assert all(satisfies(run.model.model, state).values())
    for name, mask in state["masks"].items():  # every pruned weight is exactly zero
        module = run.model.model.get_submodule(name)
        w = module.weight.detach()
        w = w.T if type(module).__name__ == "Conv1D" else w
        assert (w[~mask.bool()] == 0).all()
        assert (w[mask.bool()] != 0).any()  # and the kept ones trained
    assert len(run.history) == run.history[-1]["step"] > 0
    assert _same(base_weights, _weights(base.model))  # neither starting model changed
    assert _same(pruned_weights, _weights(pruned.model))


def test_distilling_into_one_layer_lowers_the_token_kl(lms):
    teacher = lms["gpt2"]
    teacher_weights = _weights(teacher.model)
    eval_data = TextDataset(make_docs(30, seed=7), np.zeros(30), ["text"], name="e", split="test")
    params = {"n_layers": 1, "choice": "every", "temperature": 2.0, "alpha": 0.0}
    run = tasks.get("distill").run(teacher, TRAIN, params, CONFIG, tasks.Hooks(eval_data=eval_data))
    assert run.recipe["layers"] == [1] and run.recipe["objective"] == "token-kl"
    blocks = run.model.model.transformer.h
    assert len(blocks) == 1 and run.model.model.config.n_layer == 1
    assert run.after < run.before * 0.8, (run.before, run.after)
    windows = training_windows(teacher, TRAIN, CONFIG)

    def kl(model, ids):
        with torch.no_grad():
            return token_kl(model(input_ids=ids).logits, teacher.model(input_ids=ids).logits)

    assert mean_loss(teacher.model, windows, kl, 8) == pytest.approx(0.0, abs=1e-6)
    assert _same(teacher_weights, _weights(teacher.model))


def test_token_kl_is_zero_for_equal_logits_and_positive_otherwise():
    a = torch.randn(2, 5, 11)
    assert float(token_kl(a, a, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(token_kl(a, torch.randn(2, 5, 11), 2.0)) > 0


def test_too_little_text_says_what_to_do(lms):
    tiny = TextDataset(["good"], np.zeros(1), ["text"], name="t", split="train")
    with pytest.raises(LlmoptError, match="at least 2"):
        tasks.get("recover").run(lms["gpt2"], tiny, {}, CONFIG, tasks.Hooks())
    with pytest.raises(LlmoptError, match="fine-tuning"):
        tasks.get("recover").run(lms["gpt2"], TRAIN, {"method": "head"}, CONFIG, tasks.Hooks())


def test_an_lm_loaded_in_bf16_trains_a_float32_copy(lm_dirs):
    """The Train page trains the LM it loaded (bf16 on a CPU with native bf16) while the CLI
    loads float32 to train: both now train a float32 copy, and the bf16 model is left as it was
    (on the old code the copy stayed bf16)."""
    from llmopt.lm.load import load_causal_lm

    base = load_causal_lm(str(lm_dirs["gpt2"]), dtype="bf16", device="cpu")
    before = _weights(base.model)
    run = tasks.get("recover").run(base, TRAIN, {"method": "finetune"}, CONFIG, tasks.Hooks())
    assert run.model.dtype == "fp32"
    assert {p.dtype for p in run.model.model.parameters()} == {torch.float32}
    assert {p.dtype for p in base.model.parameters()} == {torch.bfloat16}
    assert _same(before, _weights(base.model))
