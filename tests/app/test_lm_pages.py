"""The dashboard with a causal LM selected: the Compress page scores perplexity as
``llmopt.lm`` does, shows fidelity and generation, records the run for Compare; every page runs."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from app_settings import APP, TIMEOUT, TINY_ROWS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
from lmtiny import make_tiny_lm  # noqa: E402

PAGES = ["pages/overview.py", "pages/compress.py", "pages/attention.py", "pages/sweep.py"]
SEQ_LEN = 16


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    return make_tiny_lm("gpt2", tmp_path_factory.mktemp("tiny_lm") / "gpt2")


@pytest.fixture()
def lm_app(tiny_env, tiny_lm_dir, monkeypatch):
    """An AppTest whose sidebar starts on the tiny GPT-2 causal LM and the tiny CSV."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LLMOPT_DEFAULT_MODEL", str(tiny_lm_dir))
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def _direct(tiny_env, tiny_lm_dir, config=None):
    import llmopt
    from llmopt.compression import compress
    from llmopt.lm import compare_lms, load_causal_lm, perplexity

    lm = load_causal_lm(str(tiny_lm_dir))
    data = llmopt.load_dataset(str(tiny_env["csv"]), "test", limit=TINY_ROWS)
    if config is None:
        return perplexity(lm, data.texts, seq_len=SEQ_LEN), None, None
    model, _ = compress(lm, config, seq_len=SEQ_LEN)
    return compare_lms(lm, model, data.texts, seq_len=SEQ_LEN)


def _metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def _evaluate(at, sparsity=0.0):
    at.switch_page("pages/compress.py").run()
    assert not at.exception, at.exception
    at.number_input("lm_seq_len").set_value(SEQ_LEN)
    at.slider("c_sparsity").set_value(sparsity)
    at.run()
    at.button("lm_evaluate").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_perplexity_cards_equal_llmopt(lm_app, tiny_env, tiny_lm_dir):
    at = _evaluate(lm_app.run())
    base, _, _ = _direct(tiny_env, tiny_lm_dir)
    shown = _metrics(at)
    assert math.isclose(float(shown["Perplexity · baseline"].replace(",", "")),
                        base.perplexity, rel_tol=1e-3)  # fmt: skip
    assert math.isclose(float(shown["Bits per byte · baseline"].replace(",", "")),
                        base.bits_per_byte, rel_tol=1e-3)  # fmt: skip
    assert "Perplexity · compressed" not in shown


def test_compressed_run_shows_fidelity_generation_and_compare(lm_app, tiny_env, tiny_lm_dir):
    from llmopt.compression import CompressionConfig

    at = _evaluate(lm_app.run(), sparsity=0.5)
    base, other, fidelity = _direct(tiny_env, tiny_lm_dir, CompressionConfig(sparsity=0.5))
    shown = _metrics(at)
    assert math.isclose(float(shown["Perplexity · compressed"].replace(",", "")),
                        other.perplexity, rel_tol=1e-3)  # fmt: skip
    assert shown["Top-1 agreement"] == f"{fidelity.top1_agreement:.1%}"
    assert any("Paired difference" in c.value for c in at.caption)
    harder = [d.value for d in at.dataframe if "loss rise (nats)" in d.value.columns]
    assert harder and len(harder[0]) == len(fidelity.harder)
    run_id = at.session_state["lm_evaluation"]["run_id"]
    assert run_id is not None
    # generation: both continuations, one row per new token
    at.number_input("lm_new_tokens").set_value(5)
    at.button("lm_generate").click().run()
    assert not at.exception, at.exception
    gen = at.session_state["lm_generation"]
    assert gen.compressed is not None
    table = [d.value for d in at.dataframe if "p compressed" in d.value.columns]
    assert table and list(table[0]["baseline"]) == gen.baseline.tokens
    # the recorded run is on the Compare page
    at.query_params["runs"] = str(run_id)
    at.switch_page("pages/compare.py").run()
    assert not at.exception, at.exception
    from llmopt.experiments import ExperimentStore, store_path

    run = ExperimentStore(store_path()).get(run_id)
    assert run.task == "perplexity"
    assert "Perplexity (tokens)" in at.selectbox("cmp_y").options  # a registry metric is an axis
    frames = [d.value for d in at.dataframe if "name" in d.value.columns]
    from llmopt import metrics

    column = metrics.get("perplexity").short
    shown = [v for f in frames if column in f.columns for v in f[column]]
    assert any(math.isclose(v, other.perplexity, rel_tol=1e-3) for v in shown), frames
    assert not at.error, [e.value for e in at.error]


def test_every_page_runs_with_a_causal_lm(lm_app):
    at = lm_app.run()
    for page in PAGES + ["pages/compare.py", "pages/train.py"]:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, [e.value for e in at.error])
    at.switch_page("pages/sweep.py").run()
    assert any("sweeps of causal LMs come later" in i.value for i in at.info)
