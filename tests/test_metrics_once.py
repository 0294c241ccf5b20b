"""Macro precision, recall and F1 come from one scikit-learn call."""

from __future__ import annotations

import numpy as np
import pytest


def test_precision_recall_and_f1_share_one_scikit_learn_call(monkeypatch):
    """``compute_all`` asked scikit-learn for the same macro averages three times (once per
    metric); now once per set of rows, with the same numbers. On the old code ``calls`` was 3
    for each set of rows."""
    from sklearn import metrics as skm

    from llmopt import metrics

    calls = []
    real = skm.precision_recall_fscore_support

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(skm, "precision_recall_fscore_support", counted)
    rng = np.random.default_rng(0)
    for k in (2, 3):
        y_true = rng.integers(0, k, 50)
        score = rng.random((50, k))
        score /= score.sum(1, keepdims=True)
        y_pred = score.argmax(1)
        calls.clear()
        got = metrics.compute_all(y_true, score, y_pred)
        assert len(calls) == 1
        p, r, f, _ = real(y_true, y_pred, average="macro", zero_division=0)
        assert (got["precision_macro"], got["recall_macro"], got["f1_macro"]) == pytest.approx(
            (p, r, f)
        )
    y_pred[:5] = (y_pred[:5] + 1) % 3  # other predictions of the same arrays: computed anew
    p, r, f, _ = real(y_true, y_pred, average="macro", zero_division=0)
    assert metrics.compute_all(y_true, score, y_pred)["f1_macro"] == pytest.approx(f)
