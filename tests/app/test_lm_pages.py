"""The dashboard with a causal LM selected: the Compress page scores perplexity as
``llmopt.lm`` does, shows fidelity and generation, records the run for Compare; zero-shot label
scoring shows the classifier's results and is recorded as the CLI records it; the Sweep page
plots perplexity against a knob; every page runs."""

from __future__ import annotations

import json
import math

import pytest
from app_settings import TINY_ROWS

PAGES = ["pages/overview.py", "pages/compress.py", "pages/attention.py", "pages/sweep.py"]
SEQ_LEN = 16


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
    for page in PAGES + ["pages/compare.py", "pages/train.py", "pages/auto.py"]:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, [e.value for e in at.error])
    at.switch_page("pages/sweep.py").run()
    assert not any("come later" in i.value for i in at.info)  # an LM is swept like a classifier
    assert at.button("ls_run").label == "Run sweep"


def _zero_shot_page(at):
    at.switch_page("pages/compress.py").run()
    assert not at.exception, at.exception
    at.selectbox("lm_task").set_value("zero-shot").run()
    assert not at.exception, at.exception
    return at


def test_zero_shot_shows_classifier_results_and_records_as_the_cli(
    lm_app, tiny_env, tiny_lm_dir, tmp_path
):
    """Fails on the old page: it offered no zero-shot task (the selectbox held perplexity only)."""
    import llmopt
    from llmopt.cli import main
    from llmopt.compression import CompressionConfig, compress
    from llmopt.experiments import ExperimentStore, store_path
    from llmopt.lm import ZeroShotConfig, load_causal_lm
    from llmopt.lm.load import lm_size
    from llmopt.lm.zeroshot import DEFAULT_PROMPT, zero_shot_eval
    from llmopt.recording import zero_shot_fingerprint

    at = _zero_shot_page(lm_app.run())
    assert at.text_area("lm_zs_prompt").value == DEFAULT_PROMPT
    # the tiny CSV's labels are not the bundled reviews': each label's name is its verbalizer
    assert at.text_input("lm_zs_verb_neg").value == "neg"
    at.text_input("lm_zs_verb_pos").set_value("good")
    at.text_input("lm_zs_verb_neg").set_value("bad")
    at.slider("c_sparsity").set_value(0.5)
    at.run()
    at.button("lm_evaluate").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    ev = at.session_state["lm_zero_shot"]

    lm = load_causal_lm(str(tiny_lm_dir))
    data = llmopt.load_dataset(str(tiny_env["csv"]), "test", limit=TINY_ROWS)
    words = {"pos": "good", "neg": "bad"}
    zs = ZeroShotConfig(DEFAULT_PROMPT, {n: words[n] for n in data.label_names})
    base, _ = zero_shot_eval(lm, data, zs, lm_size(lm))
    model, _ = compress(lm, CompressionConfig(sparsity=0.5))
    other, _ = zero_shot_eval(model, data, zs, lm_size(model))
    assert ev.base.y_score == pytest.approx(base.y_score, abs=1e-5)
    assert ev.other.y_score == pytest.approx(other.y_score, abs=1e-5)
    # the classifier's views: cards, ROC, confusion matrices (plotly charts), the acc_norm line
    shown = _metrics(at)
    assert shown["Accuracy"] == f"{other.metrics['accuracy']:.3f}"
    assert "Agreement" in shown
    assert len(at.get("plotly_chart")) >= 4
    assert any("acc_norm" in c.value for c in at.caption)
    # recorded as `evaluate --task zero-shot` records it: the same base run (fingerprints)
    runs = ExperimentStore(store_path())
    run = runs.get(ev.run_id)
    assert run.task == "zero-shot" and run.kind == "variant"
    assert run.model_fingerprint == zero_shot_fingerprint(lm, zs.prompt, zs.verbalizers)
    assert run.rows_fingerprint == data.fingerprint
    rc = main([
        "evaluate", "--model", str(tiny_lm_dir), "--dataset", str(tiny_env["csv"]),
        "--limit", str(TINY_ROWS), "--task", "zero-shot", "--verbalizer", "pos=good",
        "--verbalizer", "neg=bad", "--json", str(tmp_path / "zs.json"),
    ])  # fmt: skip
    assert rc == 0

    # the CLI's uncompressed run is the base run the app recorded: same model and rows
    cli_run = json.loads((tmp_path / "zs.json").read_text())["run_id"]
    assert cli_run == runs.find_base(run.model_fingerprint, run.rows_fingerprint) is not None
    assert runs.get(cli_run).task == "zero-shot"


@pytest.mark.parametrize(
    ("widget", "value", "says"),
    [
        ("lm_zs_prompt", "Overall, this product is", "{text}"),
        ("lm_zs_verb_pos", "   ", "is empty"),
        ("lm_zs_verb_pos", "neg", "the same verbalizer"),
    ],
)
def test_a_bad_template_is_one_error_line(lm_app, widget, value, says):
    at = _zero_shot_page(lm_app.run())
    box = at.text_area(widget) if widget == "lm_zs_prompt" else at.text_input(widget)
    box.set_value(value)
    at.run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] and says in at.error[0].value, [e.value for e in at.error]
    assert at.button("lm_evaluate").disabled


def test_sweep_plots_perplexity_against_the_knob_and_records_each_point(
    lm_app, tiny_env, tiny_lm_dir
):
    """Fails on the old page: a causal LM stopped the Sweep page with 'come later'."""
    from llmopt.compression import CompressionConfig
    from llmopt.experiments import ExperimentStore, store_path

    at = lm_app.run()
    at.switch_page("pages/sweep.py").run()
    assert not at.exception, at.exception
    at.multiselect("ls_values_sparsity").set_value([0.0, 0.5])
    at.multiselect("ls_methods_sparsity").set_value(["magnitude"])
    at.number_input("ls_seq_len").set_value(SEQ_LEN)
    at.run()
    at.button("ls_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    hit = at.session_state["lm_sweep"]
    frame = hit["frame"]
    base, other, fidelity = _direct(tiny_env, tiny_lm_dir, CompressionConfig(sparsity=0.5))
    row = frame[frame["value"] == 0.5].iloc[0]
    assert math.isclose(row["perplexity"], other.perplexity, rel_tol=1e-6)
    assert math.isclose(row["top1_agreement"], fidelity.top1_agreement, rel_tol=1e-6)
    off = frame[frame["value"] == 0.0].iloc[0]
    assert math.isclose(off["perplexity"], base.perplexity, rel_tol=1e-6)
    charts = at.get("plotly_chart")
    assert charts and "perplexity" in charts[0].proto.spec.lower()
    # the compressed point is an LM run of the store (the 'off' point is the base run)
    assert len(hit["recorded"]) == 1
    run = ExperimentStore(store_path()).get(hit["recorded"][0])
    assert run.task == "perplexity" and run.origin == "sweep"
    # bits per byte as the other axis
    at.radio("ls_metric").set_value("bits_per_byte").run()
    assert not at.exception, at.exception
    assert "bits per byte" in at.get("plotly_chart")[0].proto.spec.lower()


def test_the_bundled_reviews_get_the_clis_default_verbalizers():
    from dashboard.lm import default_verbalizer
    from llmopt.cli.lm import zero_shot_config

    class Args:  # `evaluate --task zero-shot` with neither --prompt nor --verbalizer
        prompt = verbalizer = None

    cli = zero_shot_config(Args())
    assert {label: default_verbalizer(label) for label in cli.verbalizers} == cli.verbalizers
    assert default_verbalizer("pos") == "pos"  # another dataset's label: its own name


def test_auto_page_measures_an_lms_sensitivity_as_llmopt_does(lm_app, tiny_env, tiny_lm_dir):
    """Issue 16 item 5 on the page: with a causal LM the Auto page measures each block's NLL
    change (it stopped with 'this page takes sequence classifiers' before)."""
    import numpy as np
    from app_data import decode, figure

    import llmopt
    from llmopt.figures.sensitivity import sensitivity_figure
    from llmopt.lm import load_causal_lm
    from llmopt.sensitivity import sensitivity

    at = lm_app.run()
    at.switch_page("pages/auto.py").run()
    assert not at.exception, at.exception
    at.selectbox("a_kind").set_value("prune").run()
    at.text_input("a_levels_prune").set_value("0.5").run()
    at.radio("a_granularity").set_value("block").run()
    at.number_input("a_rows").set_value(8).run()
    next(b for b in at.button if b.label == "Run sensitivity").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    lm = load_causal_lm(str(tiny_lm_dir))
    train = llmopt.load_dataset(str(tiny_env["csv"]), "train")
    direct = sensitivity(lm, train, kind="prune", method="magnitude", levels=[0.5],
                         granularity="block", validation_rows=8)  # fmt: skip
    assert direct.metric == "nll"
    # the Search section searches the LM itself (tolerance: a perplexity rise; its windows)
    notes = [i.value for i in at.info]
    assert not any("classifiers only" in n for n in notes)
    assert any("Run search" in n for n in notes)
    assert at.number_input("s_ppl_rise").value == 1.0  # % the perplexity may rise
    assert at.number_input("s_seq_len").value == lm.max_length
    z = decode(figure(at, "Sensitivity")["data"][0]["z"]).astype(float)
    np.testing.assert_allclose(z, np.asarray(sensitivity_figure(direct).data[0].z, dtype=float))
