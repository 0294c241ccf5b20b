"""The metric registry: a metric registered in one place is computed by ``evaluate``, gets
bootstrap intervals, is a Compare axis and table column, a sweep column, part of the CLI's JSON,
stored with each run and shown as a result card; the built-in numbers are those of scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

import llmopt
from llmopt import comparison, figures, metrics, stats
from llmopt.cli import main
from llmopt.experiments import ExperimentStore
from llmopt.recording import record_evaluation

KEY = "balanced_accuracy"


@pytest.fixture()
def balanced():
    """Balanced accuracy (scikit-learn's), registered as a headline metric for one test only;
    it has no vectorised replicates, so its intervals come from resampling the rows."""
    metric = metrics.register(
        metrics.Metric(
            KEY,
            "Balanced accuracy",
            "bal. acc.",
            lambda t, s, p: float(skm.balanced_accuracy_score(t, p)),
            headline=True,
        )
    )
    yield metric
    metrics.unregister(KEY)


def test_the_built_in_metrics_are_the_cli_contract_in_order():
    assert metrics.keys() == ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc")
    assert metrics.headline() == ("accuracy", "f1_macro", "roc_auc")
    assert all(metrics.get(k).higher_is_better for k in metrics.keys())
    assert metrics.get("accuracy").format(0.8123) == "0.812"
    assert metrics.get("accuracy").format_delta(0.012) == "+1.2 pp"
    assert metrics.get("roc_auc").format(float("nan")) == "n/a"


def test_built_in_values_and_replicates_match_scikit_learn():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 3, 60)
    y_score = rng.dirichlet(np.ones(3), 60)
    y_pred = y_score.argmax(1)
    got = llmopt.evaluation.compute_metrics(y_true, y_score, y_pred)
    p, r, f, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0
    )
    assert got == pytest.approx(
        {
            "accuracy": skm.accuracy_score(y_true, y_pred),
            "precision_macro": p,
            "recall_macro": r,
            "f1_macro": f,
            "roc_auc": skm.roc_auc_score(y_true, y_score, multi_class="ovr"),
        }
    )
    ones = stats.metric_replicates(y_true, y_score, np.ones((1, 60)))
    assert {k: float(v[0]) for k, v in ones.items()} == pytest.approx(got)


def test_auc_of_a_multiclass_model_on_rows_of_two_of_its_classes():
    """Rows holding 2 of a 3-class model's classes: the AUC is defined (it raised a ValueError
    from scikit-learn before) and equals its bootstrap form on the rows as they are."""
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 2, 40) * 2  # classes 0 and 2 only
    y_score = rng.dirichlet(np.ones(3), 40)
    got = metrics.roc_auc(y_true, y_score)
    renormalised = y_score[:, 2] / (y_score[:, 0] + y_score[:, 2])
    assert got == pytest.approx(skm.roc_auc_score(y_true == 2, renormalised))
    ones = stats.metric_replicates(y_true, y_score, np.ones((1, 40)))
    assert ones["roc_auc"][0] == pytest.approx(got)


def test_a_registered_metric_appears_everywhere(balanced, tiny_bert_dir, tiny_dataset, tmp_path):
    from dashboard.compare import TABLE_COLUMNS
    from dashboard.results import card_metrics
    from llmopt.sweep import COLUMNS, run_sweep

    loaded = llmopt.load_model(str(tiny_bert_dir))
    result = llmopt.evaluate(loaded, tiny_dataset)
    expected = skm.balanced_accuracy_score(result.y_true, result.y_pred)
    assert result.metrics[KEY] == pytest.approx(expected)
    assert result.to_dict()["metrics"][KEY] == pytest.approx(expected)

    # statistics: its interval, from resampling, brackets the value; paired differences too
    low, high = stats.bootstrap_intervals(result.y_true, result.y_score, n_boot=200)[KEY]
    assert low <= expected <= high
    reps = stats.metric_replicates(result.y_true, result.y_score, np.ones((1, len(result.y_true))))
    assert reps[KEY][0] == pytest.approx(expected)
    assert KEY in stats.paired_delta_intervals(result.y_true, result.y_score, result.y_score)
    assert stats.HIGHER_IS_BETTER[KEY] is True

    # Compare: an axis, a score of the runs frame, a column of the runs table
    assert comparison.AXES[KEY] == "Balanced accuracy" and KEY in comparison.SCORES
    assert TABLE_COLUMNS[KEY] == "bal. acc."
    assert figures.METRIC_TITLES[KEY] == "Balanced accuracy" and KEY in figures.TABLE_COLUMNS
    assert figures.metrics_table({"baseline": result})[KEY].iloc[0] == pytest.approx(expected)

    # stored with the run, and back in the runs frame
    store = ExperimentStore(tmp_path / "runs.db")
    done = record_evaluation(store, base_model=loaded, dataset=tiny_dataset, base=result)
    run = store.get(done.base_id)
    assert run.metrics["baseline"][KEY] == pytest.approx(expected)
    assert run.intervals[KEY][0] <= expected <= run.intervals[KEY][1]
    frame = comparison.runs_frame([run])
    assert frame[KEY].iloc[0] == pytest.approx(expected)

    # the sweep records it at every point and for the baseline
    sweep = run_sweep(loaded, tiny_dataset, "sparsity", [0.0], ["magnitude"], base_result=result)
    assert list(sweep.columns) == list(COLUMNS) and KEY in COLUMNS
    assert sweep[KEY].iloc[0] == pytest.approx(expected)
    assert sweep.attrs["baseline"][KEY] == pytest.approx(expected)

    # the result cards above an evaluation
    assert card_metrics() == ["accuracy", "f1_macro", "roc_auc", KEY]


def test_a_registered_metric_is_in_the_cli_json(balanced, tiny_bert_dir, tiny_csv, tmp_path):
    out = tmp_path / "r.json"
    rc = main(["evaluate", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv),
               "--json", str(out)])  # fmt: skip
    assert rc == 0
    shown = json.loads(out.read_text())["baseline"]["metrics"]
    assert list(shown) == [*metrics.keys()] and shown[KEY] is not None


def test_unregistering_restores_the_built_in_places(balanced):
    metrics.unregister(KEY)
    assert KEY not in comparison.AXES and KEY not in figures.TABLE_COLUMNS
    assert KEY not in stats.HIGHER_IS_BETTER
