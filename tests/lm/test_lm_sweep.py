"""A sweep of a causal LM: every point is what a direct evaluation of the same config gives
(``compress`` then ``compare_lms`` on the same windows), with the bootstrap intervals its
recorded run carries; the 'off' value is the baseline itself; bad points fail before any work.

These fail on the code before ``run_lm_sweep`` existed (the import fails)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lmtiny import make_docs

from llmopt.compression import CompressionConfig, compress
from llmopt.data import TextDataset
from llmopt.errors import LlmoptError
from llmopt.lm import compare_lms, perplexity, perplexity_interval
from llmopt.lm.load import lm_size
from llmopt.sweep import LM_COLUMNS, run_lm_sweep, sweep_config

SEQ_LEN = 16
TRAIN = TextDataset(make_docs(60, seed=1), np.zeros(60), ["text"], name="tiny-train", split="train")
TEST = TextDataset(make_docs(24, seed=2), np.zeros(24), ["text"], name="tiny-test")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("protocol", ["paper", "document"])
def test_every_point_equals_a_direct_evaluation_of_its_config(lms, protocol):
    lm = lms["gpt2"]
    seen = []
    frame = run_lm_sweep(
        lm, TEST, "sparsity", [0.0, 0.5], ["magnitude", "wanda"], protocol=protocol,
        seq_len=SEQ_LEN, calibration=TRAIN, on_point=lambda *a: seen.append(a),
    )  # fmt: skip
    assert list(frame.columns) == LM_COLUMNS
    assert frame.attrs["task"] == "perplexity" and frame.attrs["protocol"] == protocol
    assert len(frame) == 4
    base = perplexity(lm, TEST.texts, protocol=protocol, seq_len=SEQ_LEN)
    for _, row in frame.iterrows():
        config = sweep_config(CompressionConfig(), "sparsity", row["method"], row["value"])
        if config.is_identity:  # the 'off' value is the baseline, not compressed again
            expect, size, agree, kl = base, lm_size(lm), 1.0, 0.0
        else:
            model, _ = compress(lm, config, calibration=TRAIN, seq_len=SEQ_LEN)
            _, expect, fid = compare_lms(lm, model, TEST.texts, protocol=protocol, seq_len=SEQ_LEN)
            size, agree, kl = lm_size(model), fid.top1_agreement, fid.mean_kl
        for name in ("perplexity", "bits_per_byte"):
            assert _close(row[name], expect.metric(name)), (row["method"], name)
            low, high = perplexity_interval(expect, name)
            assert _close(row[f"{name}_low"], low) and _close(row[f"{name}_high"], high)
            assert row[f"{name}_low"] <= row[name] <= row[f"{name}_high"]
        assert _close(row["top1_agreement"], agree) and _close(row["mean_kl"], kl)
        assert row["size_bytes"] == size["size_bytes"]
        assert row["params_nonzero"] == size["params_nonzero"]
    # each compressed point was handed over once, with the numbers in its row
    assert [(c.sparsity, c.sparsity_method) for c, *_ in seen] == [
        (0.5, "magnitude"), (0.5, "wanda")
    ]  # fmt: skip
    for config, result, _report, fid, size in seen:
        row = frame[(frame["value"] == 0.5) & (frame["method"] == config.sparsity_method)].iloc[0]
        assert _close(row["perplexity"], result.perplexity)
        assert size["params_nonzero"] < lm_size(lm)["params_nonzero"]
        assert _close(row["top1_agreement"], fid.top1_agreement)
    assert _close(frame.attrs["baseline"]["perplexity"], base.perplexity)
    assert frame.attrs["baseline"]["perplexity_interval"] == list(
        perplexity_interval(base, "perplexity")
    )


def test_more_sparsity_hurts_and_shrinks_the_nonzero_count(lms):
    frame = run_lm_sweep(lms["llama"], TEST, "sparsity", [0.2, 0.9], ["magnitude"], seq_len=SEQ_LEN)
    low, high = frame.iloc[0], frame.iloc[1]
    assert high["params_nonzero"] < low["params_nonzero"]
    assert high["mean_kl"] > low["mean_kl"]


def test_bad_points_fail_before_any_work(lms, monkeypatch):
    import llmopt.sweep as sweep

    def never(*_a, **_k):
        raise AssertionError("compressed before the points were checked")

    monkeypatch.setattr(sweep, "compress", never)
    lm = lms["gpt2"]
    with pytest.raises(LlmoptError, match="calibration"):
        run_lm_sweep(lm, TEST, "sparsity", [0.5], ["wanda"], seq_len=SEQ_LEN)
    with pytest.raises(LlmoptError, match="does not apply"):
        run_lm_sweep(lm, TEST, "sparsity", [0.5], ["gptq"], seq_len=SEQ_LEN)
    with pytest.raises(LlmoptError, match="at least one"):
        run_lm_sweep(lm, TEST, "bits", [], ["per-channel"], seq_len=SEQ_LEN)


def test_the_figure_draws_the_chosen_metric_with_its_interval_as_error_bars(lms):
    """The classifier's figure drew accuracy only (a KeyError on an LM frame)."""
    from llmopt.figures.sweep import sweep_figure

    frame = run_lm_sweep(lms["gpt2"], TEST, "sparsity", [0.0, 0.5], ["magnitude"], seq_len=SEQ_LEN)
    base = frame.attrs["baseline"]
    for metric, log in (("perplexity", True), ("bits_per_byte", False)):
        fig = sweep_figure(frame, None if metric == "perplexity" else metric)
        line = fig.data[0]  # the method's quality; fig.data[1] is its size
        assert list(line.y) == list(frame[metric])
        assert np.allclose(line.error_y.array, frame[f"{metric}_high"] - frame[metric])
        assert np.allclose(line.error_y.arrayminus, frame[metric] - frame[f"{metric}_low"])
        assert list(fig.data[1].y) == list(frame["size_mb"])
        assert (fig.layout.yaxis.type == "log") is log
        note = [a for a in fig.layout.annotations if a.text.startswith("baseline")]
        where = math.log10(base[metric]) if log else base[metric]  # a log axis places log10(y)
        assert len(note) == 1 and math.isclose(note[0].y, where)
