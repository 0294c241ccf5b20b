"""Evaluation: metrics equal scikit-learn's, batching does not change probabilities."""

import numpy as np
import pytest
from contract import METRIC_NAMES, RESULT_KEYS
from sklearn import metrics as skm

import llmopt
from llmopt.errors import LlmoptError
from llmopt.evaluation import compare, compute_metrics, label_map, predict_proba


def test_metrics_equal_scikit_learn_binary():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 200)
    p1 = np.clip(0.3 * y_true + rng.random(200) * 0.7, 0, 1)
    y_score = np.stack([1 - p1, p1], 1)
    y_pred = y_score.argmax(1)
    m = compute_metrics(y_true, y_score, y_pred)
    assert m["accuracy"] == skm.accuracy_score(y_true, y_pred)
    assert m["precision_macro"] == skm.precision_score(y_true, y_pred, average="macro")
    assert m["recall_macro"] == skm.recall_score(y_true, y_pred, average="macro")
    assert m["f1_macro"] == skm.f1_score(y_true, y_pred, average="macro")
    assert m["roc_auc"] == skm.roc_auc_score(y_true, p1)


def test_metrics_equal_scikit_learn_multiclass():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + 1.5 * np.eye(4)[y_true]
    y_score = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y_pred = y_score.argmax(1)
    m = compute_metrics(y_true, y_score, y_pred)
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    expected = skm.roc_auc_score(y_true, y_score, multi_class="ovr", average="macro")
    assert m["roc_auc"] == pytest.approx(expected)


def test_auc_is_nan_when_only_one_class_occurs():
    m = compute_metrics(np.zeros(5, int), np.full((5, 2), 0.5), np.zeros(5, int))
    assert np.isnan(m["roc_auc"])


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2"])
def test_sorted_batches_equal_one_by_one(tiny_dirs, tiny_dataset, family):
    loaded = llmopt.load_model(str(tiny_dirs[family]))
    batched, _, _ = predict_proba(loaded, tiny_dataset.texts, batch_size=7)
    single = np.vstack([predict_proba(loaded, [t], batch_size=1)[0] for t in tiny_dataset.texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_evaluate_result_is_consistent_with_its_own_arrays(tiny_bert_dir, tiny_dataset):
    loaded = llmopt.load_model(str(tiny_bert_dir))
    seen = []
    r = llmopt.evaluate(loaded, tiny_dataset, batch_size=8, progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and len(seen) == 5
    np.testing.assert_array_equal(r.y_true, tiny_dataset.labels)
    np.testing.assert_allclose(r.y_score.sum(1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(r.y_pred, r.y_score.argmax(1))
    np.testing.assert_array_equal(r.confusion, skm.confusion_matrix(r.y_true, r.y_pred))
    assert r.metrics == compute_metrics(r.y_true, r.y_score, r.y_pred)
    fpr, tpr, _ = skm.roc_curve(r.y_true == 1, r.y_score[:, 1])
    np.testing.assert_allclose(r.roc["LABEL_1"]["tpr"], tpr)
    assert r.latency_ms_per_sample > 0 and r.size_bytes > 0
    assert r.params_nonzero <= r.params_total
    d = r.to_dict()
    assert set(d) == RESULT_KEYS
    assert set(d["metrics"]) == METRIC_NAMES


def test_long_texts_are_truncated_and_counted(tiny_bert_dir):
    loaded = llmopt.load_model(str(tiny_bert_dir))
    texts = ["good " * 200, "bad coffee"]
    ds = llmopt.TextDataset(texts, np.array([0, 1]), ["LABEL_0", "LABEL_1"], name="long")
    r = llmopt.evaluate(loaded, ds)
    assert r.n_truncated == 1


def test_three_classes(tmp_path, tiny_dataset):
    from tinymodels import make_texts, make_tiny

    loaded = llmopt.load_model(str(make_tiny("bert", tmp_path / "m3", num_labels=3)))
    texts, labels = make_texts(30, num_classes=3)
    ds = llmopt.TextDataset(texts, np.array(labels), ["0", "1", "2"], name="three")
    r = llmopt.evaluate(loaded, ds)
    assert r.y_score.shape == (30, 3) and r.confusion.shape == (3, 3)
    assert len(r.roc) == 3


def test_labels_map_by_name_and_mismatch_is_an_error(tmp_path):
    from tinymodels import make_tiny

    named = make_tiny("bert", tmp_path / "named", id2label={0: "negative", 1: "positive"})
    loaded = llmopt.load_model(str(named))
    ds = llmopt.TextDataset(["a", "b"], np.array([0, 1]), ["Positive", "negative"], name="d")
    assert label_map(loaded, ds).tolist() == [1, 0]
    bad = llmopt.TextDataset(["a", "b"], np.array([0, 1]), ["great", "other"], name="d")
    with pytest.raises(LlmoptError, match="not labels of model.*encoder:bundled"):
        llmopt.evaluate(loaded, bad)
    numeric = llmopt.TextDataset(["a", "b"], np.array([0, 1]), ["0", "1"], name="d")
    assert label_map(loaded, numeric).tolist() == [0, 1]


def test_compare_agreement_kl_and_flips():
    base = _result(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    other = _result(np.array([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4]]))
    f = compare(base, other)
    assert f["agreement"] == pytest.approx(2 / 3) and f["flipped"] == [1]
    kl = 0.2 * np.log(0.2 / 0.7) + 0.8 * np.log(0.8 / 0.3)
    assert f["mean_kl"] == pytest.approx(kl / 3)
    assert compare(base, base)["mean_kl"] == pytest.approx(0.0)


def _result(y_score):
    from llmopt.evaluation import EvalResult

    y_pred = y_score.argmax(1)
    return EvalResult(
        np.zeros(len(y_score), int),
        y_score,
        y_pred,
        ["a", "b"],
        {},
        np.zeros((2, 2)),
        {},
        0.0,
        0,
        0,
        0,
    )


def test_flipped_table_lists_exactly_the_changed_predictions():
    from llmopt.evaluation import flipped_table

    base = _result(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    other = _result(np.array([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4]]))
    table = flipped_table(base, other, ["x", "y", "z"])
    assert table["text"].tolist() == ["y"]
    assert table["baseline says"].tolist() == ["b"] and table["compressed says"].tolist() == ["a"]
    assert table["P(label) compressed"].tolist() == [0.7]  # true label "a" (index 0)
