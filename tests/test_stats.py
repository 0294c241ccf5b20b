"""Statistics against references: scikit-learn on resampled rows, coverage on simulated data,
McNemar by hand and against scipy, the Pareto front against brute force, paired latency."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from llmopt import stats
from llmopt.evaluation import METRIC_KEYS, compute_metrics


def scores(n: int, k: int, seed: int = 0, *, ties: bool = True):
    """Labels and probabilities of a middling classifier (rounded: many tied scores)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = rng.dirichlet(np.ones(k), n)
    p[np.arange(n), y] += rng.random(n) * 0.6
    p = np.round(p, 2) if ties else p
    return y, p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("k", [2, 3, 7])
def test_each_replicate_equals_scikit_learn_on_the_resampled_rows(k):
    y, p = scores(240, k, seed=k)
    weights = stats.bootstrap_weights(len(y), n_boot=20, seed=1)
    assert (weights.sum(1) == len(y)).all()
    reps = stats.metric_replicates(y, p, weights)
    for b in range(20):
        rows = np.repeat(np.arange(len(y)), weights[b])
        expected = compute_metrics(y[rows], p[rows], p[rows].argmax(1))
        for key in METRIC_KEYS:
            assert reps[key][b] == pytest.approx(expected[key], abs=1e-12), (k, key, b)


def test_weights_of_ones_give_the_rows_own_metrics_even_with_an_absent_class():
    y, p = scores(90, 4, seed=3)
    y[y == 2] = 0  # class 2 never occurs: AUC renormalises over the others, as evaluate does
    reps = stats.metric_replicates(y, p, np.ones((1, len(y))))
    expected = compute_metrics(y, p, p.argmax(1))
    assert {k: float(v[0]) for k, v in reps.items()} == pytest.approx(expected, abs=1e-12)


def test_weighted_auc_equals_scikit_learn_with_sample_weights():
    y, p = scores(300, 2, seed=5)
    weights = np.random.default_rng(0).integers(0, 4, size=(5, 300)).astype(float)
    got = stats._weighted_auc(y == 1, p[:, 1], weights)
    for w, value in zip(weights, got, strict=True):
        assert value == pytest.approx(skm.roc_auc_score(y, p[:, 1], sample_weight=w), abs=1e-12)


def test_a_95_percent_interval_covers_the_true_accuracy_in_90_to_99_percent_of_draws():
    """200 simulated evaluations of a classifier whose true accuracy is 0.8."""
    rng = np.random.default_rng(42)
    n, truth, covered = 250, 0.8, 0
    for draw in range(200):
        y = rng.integers(0, 2, n)
        correct = rng.random(n) < truth
        pred = np.where(correct, y, 1 - y)
        p = np.stack([1 - pred, pred], axis=1) * 0.6 + 0.2  # argmax = pred
        low, high = stats.bootstrap_intervals(y, p, seed=draw)["accuracy"]
        covered += low <= truth <= high
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_paired_differences_see_what_separate_intervals_miss():
    """Model b is model a with 15 more of 300 rows right: separately their accuracy
    intervals overlap, paired the difference is clearly above 0; identical models differ by
    exactly 0."""
    y, p = scores(300, 2, seed=7, ties=False)
    wrong = np.flatnonzero(p.argmax(1) != y)[:15]
    q = p.copy()
    q[wrong] = np.eye(2)[y[wrong]] * 0.9 + 0.05  # now right
    a, b = stats.bootstrap_intervals(y, p), stats.bootstrap_intervals(y, q)
    assert a["accuracy"][1] > b["accuracy"][0]  # the separate intervals overlap
    delta = stats.paired_delta_intervals(y, p, q)
    assert delta["accuracy"][0] > 0 and stats.excludes_zero(delta["accuracy"])
    assert delta["accuracy"][0] <= 15 / 300 <= delta["accuracy"][1]
    test = stats.mcnemar_exact(p.argmax(1) == y, q.argmax(1) == y)
    assert (test.only_a, test.only_b) == (0, 15) and test.significant
    same = stats.paired_delta_intervals(y, p, p)
    assert all(v == (0.0, 0.0) for v in same.values())
    assert not any(stats.excludes_zero(v) for v in same.values())


def test_mcnemar_matches_a_hand_computed_case():
    """1 row only a gets right, 6 only b: p = 2 · P(X <= 1), X ~ Bin(7, 1/2) = 2 · 8/128."""
    a = np.array([1] * 1 + [0] * 6 + [1] * 20 + [0] * 5, dtype=bool)
    b = np.array([0] * 1 + [1] * 6 + [1] * 20 + [0] * 5, dtype=bool)
    test = stats.mcnemar_exact(a, b)
    assert (test.only_a, test.only_b) == (1, 6)
    assert test.p_value == pytest.approx(16 / 128, abs=1e-15)
    assert not test.significant
    assert stats.mcnemar_exact(b, a).p_value == test.p_value  # symmetric
    assert stats.mcnemar_exact(a, a).p_value == 1.0  # no discordant rows


def test_mcnemar_equals_scipys_exact_binomial_test():
    from scipy.stats import binomtest

    rng = np.random.default_rng(3)
    for _ in range(20):
        a, b = rng.random(80) < 0.7, rng.random(80) < 0.6
        test = stats.mcnemar_exact(a, b)
        n = test.only_a + test.only_b
        expected = binomtest(test.only_a, n, 0.5).pvalue if n else 1.0
        assert test.p_value == pytest.approx(expected, rel=1e-12)


def brute_front(x, y, x_higher, y_higher):
    sx = np.asarray(x) * (1 if x_higher else -1)  # larger = better on both after this
    sy = np.asarray(y) * (1 if y_higher else -1)
    out = []
    for i in range(len(sx)):
        if np.isnan(sx[i]) or np.isnan(sy[i]):
            out.append(False)
            continue
        beaten = (sx >= sx[i]) & (sy >= sy[i]) & ((sx > sx[i]) | (sy > sy[i]))
        out.append(not beaten.any())
    return np.array(out)


@pytest.mark.parametrize("x_higher", [True, False])
@pytest.mark.parametrize("y_higher", [True, False])
def test_pareto_front_equals_brute_force(x_higher, y_higher):
    rng = np.random.default_rng(int(x_higher) * 2 + int(y_higher))
    for _ in range(50):
        n = int(rng.integers(1, 30))
        x = rng.integers(0, 6, n).astype(float)  # small ranges: many ties
        y = rng.integers(0, 6, n).astype(float)
        x[rng.random(n) < 0.1] = np.nan
        got = stats.pareto_mask(x, y, x_higher=x_higher, y_higher=y_higher)
        np.testing.assert_array_equal(got, brute_front(x, y, x_higher, y_higher))


def test_paired_latency_times_every_model_on_every_pass(tiny_bert_dir, tiny_dataset):
    import llmopt
    from llmopt.compression import CompressionConfig, compress
    from llmopt.latency import paired_latency, same_kernels

    loaded = llmopt.load_model(str(tiny_bert_dir))
    pruned, _ = compress(loaded, CompressionConfig(sparsity=0.5, bits=4))
    factored, _ = compress(loaded, CompressionConfig(rank=4))
    int8, _ = compress(loaded, CompressionConfig(int8_dynamic=True))
    assert same_kernels(loaded, pruned)  # zeros and rounded values: the same kernels
    assert not same_kernels(loaded, factored) and not same_kernels(loaded, int8)
    timed = paired_latency(
        {"a": loaded, "b": loaded, "c": factored},
        tiny_dataset.texts,
        repeats=3,
        max_texts=12,
        batch_size=5,
    )
    assert list(timed) == ["a", "b", "c"]
    for t in timed.values():
        assert len(t.samples_ms) == 3 and t.texts == 12
        assert t.median_ms == pytest.approx(float(np.median(t.samples_ms)))
        assert min(t.samples_ms) > 0 and t.spread >= 0
    with pytest.raises(llmopt.LlmoptError, match="at least one text"):
        paired_latency({"a": loaded}, [])


def test_paired_intervals_equal_the_separate_ones():
    """One set of replicates for both models and their difference gives exactly what the
    separate functions give (a run's record computes all three at once)."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    a, b = rng.dirichlet([1, 1, 1], 200), rng.dirichlet([1, 1, 1], 200)
    own, theirs, deltas = stats.paired_intervals(y, a, b)
    assert own == stats.bootstrap_intervals(y, a) and theirs == stats.bootstrap_intervals(y, b)
    assert deltas == stats.paired_delta_intervals(y, a, b)
