"""Smoke test of ``bench/lm.py`` at a tiny size, so the benchmark script cannot rot: every
section runs and returns its figures. Speeds are not asserted (they depend on the machine)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import lm as bench_lm
    finally:
        sys.path.remove(str(BENCH))
    return bench_lm


TINY = (
    "--layers 2 --width 32 --vocab 400 --tokenizer-texts 200 --seq-len 32 --windows 3 "
    "--batch-sizes 2 --matmul-n 64 --peak-seconds 0.05 --train-seconds 0.2 --new-tokens 6 "
    "--calib-windows 2 --calib-seq-len 16"
).split()


def test_every_section_runs_and_reports(bench, capsys):
    results = bench.run(bench.parser().parse_args(TINY))
    out = capsys.readouterr().out
    assert "load average" in out and "flags:" in out  # the machine line
    assert results["peak_gflops"] > 0
    assert set(results["perplexity"]) == {"default", 2}
    for row in results["perplexity"].values():
        assert row["tokens_per_second"] > 0 and row["fraction"] > 0
    gen = results["generate"]
    assert gen["identical"] is True and gen["tokens"] == 6
    assert set(results["compress"]) == {"GPTQ 4-bit", "SparseGPT 50%"}
    if results["bf16"]["native"]:
        assert abs(results["bf16"]["rel_ppl_trained"]) < 0.05
        assert results["bf16"]["ppl_fp32"] > 1


def test_flops_per_token_counts_matmul_weights_and_causal_attention(bench):
    tokenizer = bench.make_tokenizer(bench.review_texts("train", limit=100), 300)
    lm = bench.make_lm(tokenizer, layers=2, width=64, positions=32)
    d, v = 64, len(tokenizer)
    per_block = 3 * d * d + d * d + 4 * d * d + 4 * d * d  # qkv, out, MLP up, MLP down
    expected = 2 * (2 * per_block + v * d) + 2 * 2 * 2 * d * (32 / 2)
    assert bench.flops_per_token(lm.model, 32) == pytest.approx(expected)


def test_unknown_section_is_refused(bench):
    with pytest.raises(SystemExit, match="unknown sections"):
        bench.run(bench.parser().parse_args(["--sections", "peak,nope"]))
