"""A metric registered in ``llmopt.metrics`` is a card above the Compress page's results and a
row of its baseline-vs-compressed table, with the value llmopt computes."""

from __future__ import annotations

import pytest
from app_data import table
from app_settings import TINY_ROWS
from sklearn.metrics import balanced_accuracy_score

import llmopt
from llmopt import metrics


@pytest.fixture()
def balanced():
    metrics.register(
        metrics.Metric(
            "balanced_accuracy",
            "Balanced accuracy",
            "bal. acc.",
            lambda t, s, p: float(balanced_accuracy_score(t, p)),
            headline=True,
        )
    )
    yield
    metrics.unregister("balanced_accuracy")


def test_a_registered_metric_is_a_result_card(balanced, app, tiny_env):
    at = app.run()
    at.switch_page("pages/compress.py").run()
    at.slider("c_sparsity").set_value(0.5)
    at.run()
    [b for b in at.button if b.label == "Evaluate"][0].click().run()
    assert not at.exception, at.exception
    cards = {m.label: m for m in at.metric}
    assert ["Accuracy", "F1 (macro)", "ROC AUC", "Balanced accuracy"] == [
        k for k in cards if k in {"Accuracy", "F1 (macro)", "ROC AUC", "Balanced accuracy"}
    ]
    loaded = llmopt.load_model(str(tiny_env["model"]))
    data = llmopt.load_dataset(str(tiny_env["csv"]), "test", limit=TINY_ROWS)
    model, _ = llmopt.compress(loaded, llmopt.CompressionConfig(sparsity=0.5))
    other = llmopt.evaluate(model, data)
    expected = balanced_accuracy_score(other.y_true, other.y_pred)
    assert cards["Balanced accuracy"].value == f"{expected:.3f}"
    rows = table(at, "metric").set_index("metric")
    assert rows.loc["Balanced accuracy", "compressed"] == pytest.approx(expected, abs=1e-12)
