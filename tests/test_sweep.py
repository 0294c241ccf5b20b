"""Sweeps: one measured row per point, the 'off' point is the baseline, Pareto front is right."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import llmopt
import llmopt.sweep as sweep_mod
from llmopt.compression import CompressionConfig
from llmopt.errors import LlmoptError
from llmopt.sweep import COLUMNS, SWEEP_KNOBS, max_rank, pareto_front, run_sweep, sweep_config


@pytest.fixture(scope="module")
def bert(tiny_dirs):
    return llmopt.load_model(str(tiny_dirs["bert"]))


def brute_force_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    front = np.zeros(len(x), dtype=bool)
    for i in range(len(x)):
        if np.isnan(x[i]) or np.isnan(y[i]):
            continue
        dominated = any(
            x[j] <= x[i] and y[j] >= y[i] and (x[j] < x[i] or y[j] > y[i])
            for j in range(len(x))
            if j != i and not (np.isnan(x[j]) or np.isnan(y[j]))
        )
        front[i] = not dominated
    return front


@pytest.mark.parametrize("seed", range(6))
def test_pareto_front_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 60
    x = rng.integers(0, 12, n).astype(float)  # small ranges: many ties
    y = rng.integers(0, 12, n).astype(float)
    x[rng.random(n) < 0.05] = np.nan
    frame = pd.DataFrame({"size_bytes": x, "accuracy": y})
    np.testing.assert_array_equal(pareto_front(frame), brute_force_front(x, y))
    continuous = pd.DataFrame({"a": rng.random(n), "b": rng.random(n)})
    np.testing.assert_array_equal(
        pareto_front(continuous, x="a", y="b"),
        brute_force_front(continuous["a"].to_numpy(), continuous["b"].to_numpy()),
    )


def test_sweep_config_sets_the_knob_and_the_method():
    base = CompressionConfig(bits=8)
    config = sweep_config(base, "sparsity", "wanda", 0.5)
    assert (config.sparsity, config.sparsity_method, config.bits) == (0.5, "wanda", 8)
    off = sweep_config(CompressionConfig(), "sparsity", "wanda", 0)
    assert off.is_identity and off == CompressionConfig()
    grouped = sweep_config(CompressionConfig(), "bits", "group 64", 4)
    assert (grouped.bits, grouped.group_size) == (4, 64)
    assert sweep_config(CompressionConfig(), "rank", "svd", None).rank is None
    with pytest.raises(LlmoptError, match="choose from"):
        sweep_config(CompressionConfig(), "sparsity", "svd", 0.5)
    with pytest.raises(LlmoptError, match="unknown sweep knob"):
        sweep_config(CompressionConfig(), "depth", "svd", 2)
    with pytest.raises(LlmoptError, match="sparsity"):
        sweep_config(CompressionConfig(), "sparsity", "magnitude", 1.5)


def test_every_knob_default_is_a_valid_config():
    for knob, spec in SWEEP_KNOBS.items():
        for method in spec["methods"]:
            for value in spec["values"]:
                sweep_config(CompressionConfig(), knob, method, value)


def test_sparsity_sweep_rows_and_baseline_point(bert, tiny_dataset):
    calls = []
    frame = run_sweep(
        bert,
        tiny_dataset,
        "sparsity",
        [0.0, 0.5, 0.9],
        ["magnitude", "wanda"],
        calibration=tiny_dataset,
        progress=lambda f, m: calls.append(f),
    )
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 6
    assert set(zip(frame["method"], frame["value"], strict=True)) == {
        (m, v) for m in ("magnitude", "wanda") for v in (0.0, 0.5, 0.9)
    }
    base = llmopt.evaluate(bert, tiny_dataset)
    off = frame[frame["value"] == 0.0]
    assert (off["agreement"] == 1.0).all()
    assert np.allclose(off["mean_kl"], 0.0, atol=1e-9)
    assert (off["accuracy"] == base.metrics["accuracy"]).all()
    assert frame.attrs["baseline"]["accuracy"] == base.metrics["accuracy"]
    # sparser models store fewer non-zero parameters and (packed) fewer bytes
    for _, part in frame.groupby("method"):
        part = part.sort_values("value")
        assert part["params_nonzero"].is_monotonic_decreasing
        assert part["size_bytes"].iloc[-1] < part["size_bytes"].iloc[0]
    np.testing.assert_allclose(frame["size_mb"], frame["size_bytes"] / 1e6)
    assert frame["agreement"].between(0, 1).all() and (frame["seconds"] > 0).all()
    assert calls == sorted(calls) and calls[-1] == pytest.approx(1.0)


def test_sweep_uses_the_given_baseline_and_base_config(bert, tiny_dataset):
    base = llmopt.evaluate(bert, tiny_dataset)
    frame = run_sweep(
        bert,
        tiny_dataset,
        "bits",
        [None, 8, 2],
        ["per-channel"],
        base_result=base,
        base_config=CompressionConfig(sparsity=0.3),
    )
    assert list(frame["value"].isna()) == [True, False, False]
    assert frame.attrs["baseline"]["size_bytes"] == base.size_bytes
    # the 'off' point keeps the base config's 30% sparsity, so it is not the baseline
    assert frame["params_nonzero"].iloc[0] < base.params_nonzero
    assert frame["size_bytes"].iloc[2] < frame["size_bytes"].iloc[1] < base.size_bytes


def test_rank_sweep_smaller_rank_smaller_model(bert, tiny_dataset):
    frame = run_sweep(bert, tiny_dataset, "rank", [None, 12, 4], ["svd"])
    assert list(frame["method"]) == ["svd"] * 3
    assert frame["agreement"].iloc[0] == 1.0
    assert frame["size_bytes"].iloc[0] == frame.attrs["baseline"]["size_bytes"]
    assert frame["size_bytes"].iloc[0] > frame["size_bytes"].iloc[1] > frame["size_bytes"].iloc[2]


def test_invalid_points_fail_before_any_work(bert, tiny_dataset, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the settings were checked")

    monkeypatch.setattr(sweep_mod, "evaluate", no_work)
    monkeypatch.setattr(sweep_mod, "compress", no_work)
    limit = max_rank(bert)
    assert limit == 32
    with pytest.raises(LlmoptError, match="rank"):
        run_sweep(bert, tiny_dataset, "rank", [8, limit + 1], ["svd"])
    with pytest.raises(LlmoptError, match="group_size 64"):
        run_sweep(bert, tiny_dataset, "bits", [8], ["per-channel", "group 64"])
    with pytest.raises(LlmoptError, match="calibration"):
        run_sweep(bert, tiny_dataset, "sparsity", [0.5], ["wanda"])
    with pytest.raises(LlmoptError, match="at least one"):
        run_sweep(bert, tiny_dataset, "sparsity", [], ["magnitude"])
    with pytest.raises(LlmoptError, match="unknown sweep knob"):
        run_sweep(bert, tiny_dataset, "heads", [1], ["magnitude"])


def test_knob_values_stay_within_what_every_layer_allows(bert):
    from llmopt.sweep import knob_values

    choices, defaults = knob_values(bert, "rank")
    limit = max_rank(bert)
    assert max(choices) == limit and all(0 < r <= limit for r in choices)
    assert set(defaults) <= set(choices) and defaults
    choices, defaults = knob_values(bert, "bits")
    assert choices == [8, 7, 6, 5, 4, 3, 2] and set(defaults) <= set(choices)
    with pytest.raises(LlmoptError, match="unknown knob"):
        knob_values(bert, "depth")


def test_on_point_sees_every_distinct_point_with_its_result(tiny_dirs, tiny_dataset):
    import llmopt
    from llmopt.sweep import run_sweep

    bert = llmopt.load_model(str(tiny_dirs["bert"]))
    seen = []
    frame = run_sweep(
        bert, tiny_dataset, "bits", [8, 4], ["per-channel"],
        on_point=lambda c, r, rep, fid, _lat: seen.append((c.bits, r.metrics["accuracy"], fid)),
    )  # fmt: skip
    assert [b for b, _, _ in seen] == [8, 4]
    for (bits, accuracy, fid), (_, row) in zip(seen, frame.iterrows(), strict=True):
        assert row["value"] == bits and row["accuracy"] == accuracy
        assert row["agreement"] == fid["agreement"]


def test_sweep_reuses_the_baseline_and_what_calibration_measured(bert, tiny_dataset, monkeypatch):
    import llmopt.compression.calibrate as calibrate

    evaluations, batches = [], []
    real_evaluate, real_partials = sweep_mod.evaluate, calibrate.partials
    monkeypatch.setattr(
        sweep_mod, "evaluate", lambda *a, **k: evaluations.append(1) or real_evaluate(*a, **k)
    )
    monkeypatch.setattr(
        calibrate, "partials", lambda *a, **k: batches.append(1) or real_partials(*a, **k)
    )
    base = llmopt.evaluate(bert, tiny_dataset)
    one_pass = CompressionConfig(calibration="one-pass")
    run_sweep(
        bert,
        tiny_dataset,
        "sparsity",
        [0.0, 0.5],
        ["wanda"],
        base_result=base,
        calibration=tiny_dataset,
        base_config=one_pass,
    )
    assert len(evaluations) == 1  # the 0 point is the baseline: not evaluated again
    once = len(batches)
    assert once > 0
    evaluations.clear()
    batches.clear()
    frame = run_sweep(
        bert,
        tiny_dataset,
        "sparsity",
        [0.0, 0.3, 0.5, 0.7],
        ["wanda"],
        base_result=base,
        calibration=tiny_dataset,
        base_config=one_pass,
    )
    assert len(evaluations) == 3 and len(batches) == once  # statistics measured once
    assert (
        frame["agreement"].iloc[0] == 1.0 and frame["accuracy"].iloc[0] == base.metrics["accuracy"]
    )
    batches.clear()
    run_sweep(
        bert,
        tiny_dataset,
        "sparsity",
        [0.3, 0.5],
        ["wanda"],
        base_result=base,
        calibration=tiny_dataset,
    )  # sequential: the first block's statistics are shared
    blocks = len(bert.model.bert.encoder.layer)
    assert len(batches) == (2 * blocks - 1) * (once // blocks)


def test_every_registered_method_is_a_sweep_method():
    from llmopt.compression import registry
    from llmopt.sweep import knob_methods

    assert list(knob_methods("sparsity")) == registry.names("prune")
    assert list(knob_methods("rank")) == registry.names("lowrank")
    assert "gptq group 64" in knob_methods("bits") and "per-channel" in knob_methods("bits")
    assert list(knob_methods("smooth_alpha")) == ["smoothquant"]
    config = sweep_config(CompressionConfig(), "smooth_alpha", "smoothquant", 0.6)
    assert config.int8_dynamic and config.smooth_alpha == 0.6
    assert sweep_config(CompressionConfig(), "smooth_alpha", "smoothquant", None).is_identity
    from llmopt.sweep import sweep_needs_calibration

    assert sweep_needs_calibration("sparsity", ["magnitude", "sparsegpt"])
    assert not sweep_needs_calibration("bits", ["per-channel", "group 64"])
    assert sweep_needs_calibration("bits", ["gptq per-channel"])
    assert not sweep_needs_calibration("rank", ["svd"])


def test_sweep_latency_follows_the_apps_one_latency_policy(bert, tiny_dataset, tmp_path):
    """One latency policy everywhere: a point that runs the baseline's kernels (pruning,
    simulated quantization) shows the baseline's latency, as its stored run, the Compress page
    and Compare say ("same kernels"); a point with other kernels (int8) shows the median of
    the paired timing that its stored run keeps. Before, every row showed its own single-pass
    timing, a number the stored run of the same point contradicted."""
    from llmopt.experiments import ExperimentStore
    from llmopt.recording import record_evaluation

    runs_db = ExperimentStore(tmp_path / "experiments.sqlite")
    base = llmopt.evaluate(bert, tiny_dataset)
    stored, paired = {}, {}

    def record(config, result, report, _fidelity, latency) -> None:
        done = record_evaluation(
            runs_db, base_model=bert, dataset=tiny_dataset, base=base, other=result,
            config=config, report=report, latency=latency, origin="sweep",
        )  # fmt: skip
        key = (config.sparsity, config.smooth_alpha)
        stored[key], paired[key] = runs_db.get(done.run_id), latency

    frame = run_sweep(
        bert, tiny_dataset, "sparsity", [0.3, 0.6], ["magnitude"], base_result=base,
        on_point=record,
    )  # fmt: skip
    assert list(frame["latency_method"]) == ["same kernels", "same kernels"]
    assert (frame["latency_ms_per_sample"] == base.latency_ms_per_sample).all()
    for _, row in frame.iterrows():
        run = stored[(row["value"], None)]
        assert run.latency_ms == row["latency_ms_per_sample"] and run.latency_simulated

    frame = run_sweep(
        bert, tiny_dataset, "smooth_alpha", [0.5], ["smoothquant"], base_result=base,
        calibration=tiny_dataset, on_point=record,
    )  # fmt: skip
    latency, run = paired[(0.0, 0.5)], stored[(0.0, 0.5)]
    assert latency is not None and frame["latency_method"].iloc[0] == "paired"
    assert frame["latency_ms_per_sample"].iloc[0] == latency["compressed"].median_ms
    assert run.latency["method"] == "paired" and run.latency_ms == latency["compressed"].median_ms


def test_the_estimate_times_one_point_per_method_and_multiplies(bert, tiny_dataset, monkeypatch):
    """No estimate was given before a sweep; now one point of each method is run as the sweep
    runs it, and its measured time is multiplied by that method's number of points."""
    from llmopt.sweep import duration, estimate_sweep

    ran = []
    real = sweep_mod.run_sweep
    monkeypatch.setattr(
        sweep_mod, "run_sweep", lambda *a, **k: ran.append((a[3], a[4])) or real(*a, **k)
    )
    base = llmopt.evaluate(bert, tiny_dataset)
    values = [0.0, 0.2, 0.4, 0.6]  # 0 is the baseline: not a point to run
    est = estimate_sweep(
        bert, tiny_dataset, "sparsity", values, ["magnitude", "wanda"], base_result=base,
        calibration=tiny_dataset,
    )  # fmt: skip
    assert ran == [([0.4], ["magnitude"]), ([0.4], ["wanda"])]  # the middle point, per method
    assert est.points == 6 and set(est.per_method) == {"magnitude", "wanda"}
    assert all(t > 0 for t in est.per_method.values())
    assert est.seconds == pytest.approx(3 * sum(est.per_method.values()))
    assert [duration(s) for s in (4.4, 390, 3900)] == ["4 s", "6 min 30 s", "1 h 05 min"]


def test_sweep_rows_carry_the_bootstrap_interval_their_runs_store(bert, tiny_dataset):
    from llmopt import stats

    base = llmopt.evaluate(bert, tiny_dataset)
    results = {}
    frame = run_sweep(
        bert, tiny_dataset, "bits", [None, 4], ["per-channel"], base_result=base,
        on_point=lambda c, r, *_: results.setdefault(c.bits, r),
    )  # fmt: skip
    for _, row in frame.iterrows():
        result = results[None if pd.isna(row["value"]) else int(row["value"])]
        low, high = stats.bootstrap_intervals(result.y_true, result.y_score)["accuracy"]
        assert (row["accuracy_low"], row["accuracy_high"]) == (low, high)
        assert low <= row["accuracy"] <= high
    assert frame.attrs["baseline"]["accuracy_interval"][0] <= base.metrics["accuracy"]
