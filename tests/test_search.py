"""Accuracy-aware search: the exit rule never accepts a loss interval that crosses the tolerance
(a property), and a search on a tiny classifier whose predictions compression flips picks a
recipe that re-measures within the tolerance, no larger than the best uniform setting, with
every candidate recorded under its parent."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tinymodels import make_texts, make_tiny

from llmopt.compression import CompressionConfig, compress
from llmopt.data import TextDataset
from llmopt.errors import LlmoptError
from llmopt.evaluation import evaluate
from llmopt.experiments import ExperimentStore
from llmopt.models import load_model
from llmopt.search import accepts, allowed_loss, loss_interval, parse_methods, search
from llmopt.sensitivity import split_validation

LABELS = ["LABEL_0", "LABEL_1"]
finite = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)


@given(a=finite, b=finite, tol=st.floats(min_value=0.0, max_value=0.5), relative=st.booleans(),
       baseline=st.floats(min_value=0.01, max_value=1.0))  # fmt: skip
def test_exit_rule_never_accepts_an_interval_above_the_tolerance(a, b, tol, relative, baseline):
    """Accepted exactly when the interval's upper end is within the allowed loss: an interval
    that crosses the tolerance (or lies above it) is never accepted, whatever its lower end.
    (An exit on the point estimate or the lower end would fail the crossing cases.)"""
    lo, hi = min(a, b), max(a, b)
    allowed = tol * baseline if relative else tol
    verdict = accepts((lo, hi), tol, relative=relative, baseline=baseline)
    if hi > allowed:
        assert not verdict
    else:
        assert verdict
    assert not accepts((hi, lo), tol, relative=relative, baseline=baseline) or lo == hi


@given(x=finite, tol=st.floats(min_value=0.0, max_value=0.5))
def test_exit_rule_refuses_undefined_intervals(x, tol):
    assert not accepts((math.nan, x), tol)
    assert not accepts((x, math.nan), tol)


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, "0.1", True])
def test_bad_tolerance_is_refused(bad):
    with pytest.raises(LlmoptError, match="tolerance"):
        allowed_loss(bad)


def test_methods_parse_and_refuse_unknown_ones():
    assert parse_methods("magnitude, rtn") == [("prune", "magnitude"), ("quantize", "rtn")]
    for bad, words in [("", "at least one"), ("int8", "no level"), ("x,x", "repeats")]:
        with pytest.raises(LlmoptError, match=words):
            parse_methods(bad)


@pytest.fixture(scope="module")
def sensitive(tmp_path_factory):
    """A tiny BERT whose Linear weights are scaled up so its blocks decide (compression flips
    predictions), with rows labelled by its own predictions (base accuracy 1: every flip is
    a loss)."""
    from transformers import BertForSequenceClassification

    folder = tmp_path_factory.mktemp("search") / "bert"
    make_tiny("bert", folder, seed=0)
    model = BertForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(20.0)
    model.save_pretrained(folder, safe_serialization=True)
    loaded = load_model(str(folder))
    texts, _ = make_texts(160, seed=7)
    rows = TextDataset(texts, np.zeros(len(texts), dtype=int), LABELS, name="t", split="train")
    pred = evaluate(loaded, rows).y_pred
    train = TextDataset(texts[:120], pred[:120], LABELS, name="t", split="train")
    test = TextDataset(texts[120:], pred[120:], LABELS, name="t", split="test")
    return loaded, train, test


@pytest.fixture(scope="module")
def searched(sensitive, tmp_path_factory):
    loaded, train, test = sensitive
    store = ExperimentStore(tmp_path_factory.mktemp("store") / "runs.sqlite")
    result = search(loaded, train, test, tolerance=0.1, methods="rtn",
                    max_evaluations=10, validation_rows=80, store=store)  # fmt: skip
    return result, store


def test_pick_remeasures_within_the_tolerance_and_beats_uniform(sensitive, searched):
    """The pick, compressed again and evaluated through the normal path on the validation
    rows, has a loss interval whose upper end is within the tolerance; it is no larger than the
    best uniform setting, and per-layer candidates were searched from a rejected level."""
    loaded, train, _test = sensitive
    result, _store = searched
    assert result.best is not None and result.uniform_best is not None
    assert result.best.size_bytes <= result.uniform_best.size_bytes
    assert any(not c.accepted for c in result.candidates), "the space reaches a rejected level"
    assert any(c.family == "per-layer" for c in result.candidates)
    assert [(r.method, r.kind) for r in result.sensitivities] == [("rtn", "quantize")]
    validation, _ = split_validation(train, 80)
    base = evaluate(loaded, validation)
    config = CompressionConfig.from_dict(result.recipe)
    other = evaluate(compress(loaded, config)[0], validation)
    _loss, lo, hi = loss_interval(base.y_true, base.y_score, other.y_score)
    assert hi <= result.allowed == 0.1
    assert (lo, hi) == pytest.approx(result.best.interval)
    for c in result.candidates:  # every verdict is the exit rule's on its interval
        assert c.accepted == (c.interval[1] <= result.allowed)
    assert result.evaluations <= 10
    assert 0 < result.seconds_to_pick < result.seconds  # the test rows come after the pick


def test_every_candidate_is_recorded_with_its_parent(sensitive, searched):
    loaded, _train, test = sensitive
    result, store = searched
    ids = [c.run_id for c in result.candidates]
    assert None not in ids and len(set(ids)) == len(ids)
    runs = {c.number: store.get(c.run_id) for c in result.candidates}
    base_id = store.find_base(runs[0].model_fingerprint, runs[0].rows_fingerprint)
    for c in result.candidates:
        run = runs[c.number]
        assert run.kind == "variant"
        want = base_id if c.parent is None else result.candidates[c.parent].run_id
        assert run.parent == want, (c.label, run.parent, want)
        assert CompressionConfig.from_dict(run.config) == c.config.acting()
    per_layer = [c for c in result.candidates if c.family == "per-layer"]
    assert all(not result.candidates[c.parent].accepted for c in per_layer)
    pick = store.get(result.run_id)
    assert pick.rows_fingerprint == test.fingerprint
    assert pick.metrics["compressed"]["accuracy"] == result.test_compressed.metrics["accuracy"]


def test_budget_and_cancel(sensitive):
    loaded, train, test = sensitive
    result = search(loaded, train, None, tolerance=0.0, methods="magnitude,rtn",
                    max_evaluations=3, validation_rows=40, per_layer=False)  # fmt: skip
    assert result.evaluations == 3 and result.test_compressed is None
    with pytest.raises(LlmoptError, match="cancelled"):
        search(loaded, train, test, tolerance=0.01, methods="magnitude", validation_rows=40,
               should_stop=lambda: True)  # fmt: skip


def test_pareto_figure_and_layer_table_show_every_candidate(searched):
    """Each candidate is one marker at (its size, its validation accuracy), filled when
    accepted; labels are escaped; the per-layer table lists the pick's rules."""
    from dashboard.search import layer_table
    from llmopt.figures.search import search_figure

    result, _store = searched
    fig = search_figure(result)
    points = [(x, y, s) for t in fig.data if t.name in ("Uniform settings", "Per-layer")
              for x, y, s in zip(t.x, t.y, t.marker.symbol, strict=True)]  # fmt: skip
    want = [(c.size_bytes / 1e6, c.metric, c.accepted) for c in result.candidates]
    assert sorted((x, y, not s.endswith("-open")) for x, y, s in points) == sorted(want)
    assert fig.layout.xaxis.title.text == "Size (MB)"
    assert fig.layout.yaxis.title.text == "Validation accuracy"
    assert fig.layout.legend.title.text == "filled: accepted · open: rejected"  # says the fill
    label, result.candidates[0].label = result.candidates[0].label, "<b>x</b>{y}"
    try:
        hover = str(search_figure(result).data[0].customdata)
    finally:
        result.candidates[0].label = label
    assert "<b>x" not in hover and "&lt;b&gt;x&lt;/b&gt;&#123;y}" in hover
    config = CompressionConfig(bits=4, layers={"bert.encoder.layer.0.*": {"bits": 8}},
                               skip=("bert.pooler.dense",))  # fmt: skip
    table = layer_table(config)
    assert list(table["layer"]) == ["bert.encoder.layer.0.*", "bert.pooler.dense"]
    assert table["bits"].tolist()[0] == 8 and table["skip"].tolist()[1] is True


def test_knapsack_steps_spend_their_budget(sensitive):
    """Each rising budget buys more bits: the average bits of the allocations rise with it
    (matrices whose measured losses tie at 0 once all got the fewest bits at every budget,
    so the search evaluated one allocation again and again)."""
    from llmopt.search import fallback_sequence

    loaded, train, _test = sensitive
    steps, sens = fallback_sequence(loaded, train, "quantize", "rtn", [2, 3, 4, 5, 6, 8], 5,
                                    validation_rows=40)  # fmt: skip
    # measured once, at the rejected level: the knapsack scales that to the higher bits
    assert sens.levels == [6] and len(steps) == 9  # budgets 6, 6.25, ..., 8
    averages = [float(step()[1].split()[1]) for step in steps]
    assert averages == sorted(averages) and averages[0] == 6.0 and averages[-1] > 7
    assert len(set(averages)) >= 5, averages


def test_fallbacks_follow_the_measured_kl_not_a_noisy_accuracy_gain(sensitive):
    """On a few hundred rows most matrices flip no prediction alone, or flip some the right way
    (a noisy gain): ordered by that accuracy change, ties and gains decided the fallback order.
    The KL divergence each matrix alone causes orders them instead: the k = 1 step falls back
    the matrix with the largest KL, and the knapsack gives it the most bits."""
    from llmopt.compression.targets import select_targets
    from llmopt.search import default_validation_rows, fallback_sequence
    from llmopt.sensitivity import LayerSensitivity, SensitivityResult

    loaded, train, _test = sensitive
    names = select_targets(loaded.model)
    kl = {n: 1e-4 * (i + 1) for i, n in enumerate(names)}  # the last matrix moves the most
    # the accuracy says the last matrix gained (delta > 0) and others lost: the old order
    rows = [LayerSensitivity(n, 4, 0.05 if n == names[-1] else -0.01 * (i % 3), (0.0, 0.0),
                             {}, {"mean_kl": kl[n], "agreement": 1.0})
            for i, n in enumerate(names)]  # fmt: skip
    sens = SensitivityResult("magnitude", "prune", [0.5], "accuracy", "matrix", 0.0, 0.9, 40,
                             [], {})  # fmt: skip
    sens.layers = [LayerSensitivity(r.name, 0.5, r.delta, r.interval, {}, r.extra) for r in rows]
    steps, _ = fallback_sequence(loaded, train, "prune", "magnitude", [0.5, 0.3], 1,
                                 validation_rows=40, sens=sens)  # fmt: skip
    config, _label = steps[1]()
    assert list(config.rules) == [names[-1]]  # the largest KL, though its accuracy "gained"
    qsens = SensitivityResult("rtn", "quantize", [4], "accuracy", "matrix", 0.0, 0.9, 40,
                              rows, {})  # fmt: skip
    steps, _ = fallback_sequence(loaded, train, "quantize", "rtn", [2, 3, 4, 5, 6, 8], 3,
                                 validation_rows=40, sens=qsens)  # fmt: skip
    config, _label = steps[1]()  # the first budget above 4 bits
    bits = {n: config.rules.get(n, {}).get("bits", 4) for n in names}
    assert bits[names[-1]] == max(bits.values()) > 4
    assert default_validation_rows(4000) == 1000 and default_validation_rows(120) == 60
