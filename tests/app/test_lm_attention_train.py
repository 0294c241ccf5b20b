"""The Attention and Train pages with a causal LM selected: causal heatmaps with the next-token
prediction (no labels), the drift map against the compressed LM, a window the user moves;
recovery and distillation with perplexity before and after, recorded with their lineage; and
pre-training a small LM that saves to a folder the sidebar loads."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pytest
from app_data import figures, title
from app_settings import APP, TIMEOUT, TINY_ROWS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
from lmtiny import VOCAB_SIZE, make_docs, make_tiny_lm, train_tokenizer  # noqa: E402

SEQ_LEN = 16
WAIT_S = 180  # tiny runs take seconds; a busy shared CPU can make them much slower


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    return make_tiny_lm("gpt2", tmp_path_factory.mktemp("tiny_lm_at") / "gpt2")


@pytest.fixture(scope="module")
def long_lm_dir(tmp_path_factory):
    """A tiny GPT-2 whose position limit (256) lets a text run past one 64-token window."""
    import torch
    import transformers as tf

    directory = tmp_path_factory.mktemp("long_lm") / "gpt2"
    directory.mkdir(parents=True)
    tok = train_tokenizer(directory)
    torch.manual_seed(0)
    config = tf.GPT2Config(vocab_size=VOCAB_SIZE, n_embd=32, n_layer=2, n_head=4,
                           n_positions=256, bos_token_id=tok.bos_token_id,
                           eos_token_id=tok.eos_token_id)  # fmt: skip
    tf.GPT2LMHeadModel(config).eval().save_pretrained(directory, safe_serialization=True)
    return directory


def _app(tiny_env, directory, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LLMOPT_DEFAULT_MODEL", str(directory))
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def _ok(at, where=""):
    assert not at.exception, (where, at.exception)
    assert not at.error, (where, [e.value for e in at.error])


def _compress(at, sparsity=0.5):
    at.switch_page("pages/compress.py").run()
    at.number_input("lm_seq_len").set_value(SEQ_LEN)
    at.slider("c_sparsity").set_value(sparsity)
    at.run()
    at.button("lm_evaluate").click().run()
    _ok(at, "compress")
    return at


def _table(at, column):
    return [d.value for d in at.dataframe if column in d.value.columns]


def test_attention_page_shows_causal_maps_next_tokens_and_drift(tiny_env, tiny_lm_dir,
                                                                 monkeypatch):  # fmt: skip
    """Before: the page stopped with "this page takes sequence classifiers"."""
    from llmopt.attention import attention_maps
    from llmopt.lm import load_causal_lm

    at = _app(tiny_env, tiny_lm_dir, monkeypatch).run()
    at.switch_page("pages/attention.py").run()
    _ok(at, "attention")
    assert not any("takes sequence classifiers" in i.value for i in at.info)
    text = at.text_area("a_text").value
    direct = attention_maps(load_causal_lm(str(tiny_lm_dir)), text)
    table = _table(at, "prediction")[0]
    assert list(table["prediction"]) == [t for t, _ in direct.next_tokens]
    assert list(table["probability"]) == pytest.approx([p for _, p in direct.next_tokens])
    heat = [f for f in figures(at) if f["data"] and f["data"][0].get("type") == "heatmap"]
    assert heat, [title(f) for f in figures(at)]
    # compressed on the Compress page: both models' maps, their next tokens, the drift map
    _compress(at)
    at.switch_page("pages/attention.py").run()
    _ok(at, "attention, compressed")
    table = _table(at, "prediction")[0]
    assert set(table["model"]) == {"uncompressed", "compressed"}
    assert any(s.value == "Attention drift" for s in at.subheader)
    assert "compressed" in at.radio("a_grid").options


def test_attention_window_moves_over_a_long_text(tiny_env, long_lm_dir, monkeypatch):
    at = _app(tiny_env, long_lm_dir, monkeypatch).run()
    at.switch_page("pages/attention.py").run()
    _ok(at)
    at.text_area("a_text").set_value(" ".join(make_docs(6, seed=3, min_words=30))).run()
    _ok(at, "long text")
    last = int(at.slider("a_start").max)
    assert last > 0

    def window(at) -> list:  # the positions of the first heatmap's columns
        heat = [f for f in figures(at) if f["data"] and f["data"][0].get("type") == "heatmap"]
        return list(heat[0]["data"][0]["x"])

    assert window(at) == list(range(64))  # DEFAULT_WINDOW tokens from the start
    at.slider("a_start").set_value(last).run()
    _ok(at, "moved window")
    assert window(at) == list(range(last, last + 64))


def _wait(at, limit=WAIT_S):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        at.run()
        assert not at.exception, at.exception
        job = at.session_state["train_job"] if "train_job" in at.session_state else None
        if job is not None and not job.running:
            return job
        time.sleep(0.5)
    raise AssertionError("the training job did not finish in time")


def _metric(at, label) -> float:
    return float([m for m in at.metric if m.label == label][0].value.replace(",", ""))


def test_recover_an_lm_on_the_train_page_reports_perplexity_and_lineage(
    tiny_env, tiny_lm_dir, monkeypatch
):
    """Before: the Train page stopped at a notice for any causal LM."""
    import llmopt
    from llmopt.experiments import ExperimentStore
    from llmopt.lm import load_causal_lm, perplexity

    at = _compress(_app(tiny_env, tiny_lm_dir, monkeypatch).run())
    evaluated = at.session_state["lm_evaluation"]["run_id"]
    at.switch_page("pages/train.py").run()
    _ok(at, "train")
    assert set(at.radio("t_task").options) == {  # no gradual pruning of an LM (yet)
        "Fine-tune", "Recover the compressed model", "Distil a smaller student",
        "Pre-train a small LM",
    }  # fmt: skip
    at.radio("t_task").set_value("recover").run()
    _ok(at, "recover selected")
    at.number_input("t_epochs_recover").set_value(1.0).run()
    at.button("t_start").click().run()
    job = _wait(at)
    assert job.status == "done", job.error
    _ok(at, "recovered")
    ev = job.lm_eval
    data = llmopt.load_dataset(str(tiny_env["csv"]), "test", limit=TINY_ROWS)
    compressed = at.session_state["compressed"]["model"]
    direct = perplexity(compressed, data.texts, seq_len=SEQ_LEN)
    assert ev.before.seq_len == SEQ_LEN  # scored as the Compress page scored the parent
    assert math.isclose(_metric(at, "Perplexity · before"), direct.perplexity, rel_tol=1e-3)
    assert math.isclose(_metric(at, "Perplexity · after"), ev.after.perplexity, rel_tol=1e-3)
    assert any("Paired difference" in c.value for c in at.caption)
    assert "Training: next-token loss" in [title(f) for f in figures(at)]
    stored = ExperimentStore().get(job.run_id)
    assert stored.task == "perplexity" and stored.parent == evaluated
    assert stored.steps[-1] == "recover"
    assert stored.metrics["compressed"]["perplexity"] == pytest.approx(ev.after.perplexity)
    # saved under the server's roots, it loads back with the perplexity shown
    target = Path(tiny_env["csv"]).parent / "recovered"
    at.text_input("t_folder").set_value(str(target))
    at.button[[b.label for b in at.button].index("Save model")].click().run()
    _ok(at, "saved")
    dtype = job.run.model.dtype  # the page loads LMs with dtype auto: reload as it trained
    back = perplexity(load_causal_lm(str(target), dtype=dtype), data.texts, seq_len=SEQ_LEN)
    assert back.perplexity == pytest.approx(ev.after.perplexity, rel=1e-4)


def test_distil_an_lm_on_the_train_page(tiny_env, tiny_lm_dir, monkeypatch):
    at = _app(tiny_env, tiny_lm_dir, monkeypatch).run()
    at.switch_page("pages/train.py").run()
    at.radio("t_task").set_value("distill").run()
    at.number_input("t_epochs_distill").set_value(1.0).run()
    at.button("t_start").click().run()
    job = _wait(at)
    assert job.status == "done", job.error
    _ok(at, "distilled")
    assert job.run.model.model.config.n_layer == 1
    assert {"Perplexity · teacher", "Perplexity · student"} <= {m.label for m in at.metric}
    assert job.run_id is not None


def test_pretrain_on_the_train_page_saves_a_loadable_lm(tiny_env, tiny_lm_dir, monkeypatch):
    """A few seconds of pre-training: a live loss curve, its test perplexity, Save, and the
    saved folder is a model the sidebar loads (the Compress page scores it)."""
    from llmopt.lm import load_causal_lm, perplexity

    at = _app(tiny_env, tiny_lm_dir, monkeypatch).run()
    at.switch_page("pages/train.py").run()
    at.radio("t_task").set_value("pretrain").run()
    _ok(at, "pretrain selected")
    at.number_input("t_minutes").set_value(0.1)
    at.number_input("t_window").set_value(16).run()
    at.button("t_start").click().run()
    job = _wait(at)
    assert job.status == "done", job.error
    _ok(at, "pretrained")
    assert len(job.history) >= 1 and job.history[-1]["step"] == len(job.history)
    scored, _ = job.lm_eval
    shown = _metric(at, "Perplexity · test texts")
    assert math.isclose(shown, scored.perplexity, rel_tol=1e-3)
    target = Path(tiny_env["csv"]).parent / "pretrained"
    at.text_input("t_folder").set_value(str(target))
    at.button[[b.label for b in at.button].index("Save model")].click().run()
    _ok(at, "saved")
    import llmopt

    data = llmopt.load_dataset(str(tiny_env["csv"]), "test", limit=TINY_ROWS)
    back = perplexity(load_causal_lm(str(target), dtype="fp32"), data.texts)
    assert back.perplexity == pytest.approx(scored.perplexity, rel=1e-4)
    # the folder is a model of the sidebar: the Compress page evaluates it
    monkeypatch.setenv("LLMOPT_DEFAULT_MODEL", str(target))
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/compress.py").run()
    at.button("lm_evaluate").click().run()
    _ok(at, "saved model evaluated")
    # (loaded there with dtype auto: bf16 on a CPU with native bf16)
    assert math.isclose(_metric(at, "Perplexity · baseline"), scored.perplexity, rel_tol=2e-2)


def test_cancel_stops_pretraining_and_saves_nothing(tiny_env, tiny_lm_dir, monkeypatch):
    at = _app(tiny_env, tiny_lm_dir, monkeypatch).run()
    at.switch_page("pages/train.py").run()
    at.radio("t_task").set_value("pretrain").run()
    at.number_input("t_minutes").set_value(10.0)
    at.number_input("t_window").set_value(16).run()
    at.button("t_start").click().run()
    assert at.session_state["train_job"].running
    at.button("t_cancel").click().run()
    job = _wait(at)
    assert job.status == "cancelled"
    assert any("Cancelled after" in w.value for w in at.warning)
    assert "Save model" not in [b.label for b in at.button]
