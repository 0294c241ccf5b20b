"""OWL (outlier-weighted layerwise sparsity, Yin et al. 2023) as a registered sparsity
allocation: its block sparsities follow the paper's formula, average the target, and every
block is pruned at its own sparsity through the per-layer path.

Fails on the code before it: there was no ``sparsity_allocation`` and no OWL module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import llmopt
from llmopt.compression import CompressionConfig, compress, registry
from llmopt.compression.calibrate import Feeder
from llmopt.compression.methods.owl import outlier_ratio, owl_sparsities
from llmopt.compression.prune import wanda_scores
from llmopt.compression.targets import get_weight, group_by_block
from llmopt.data import TextDataset
from llmopt.errors import LlmoptError


def paper(ratios: list[float], target: float, lam: float) -> list[float]:
    """The reference code's lines, transcribed (numpy, densities then 1 - density)."""
    r = np.array(ratios)
    r = (r - r.min()) * (1 / (r.max() - r.min()) * lam * 2)
    r = r - np.mean(r) + (1 - target)
    return list(1 - r)


@pytest.mark.parametrize(
    ("ratios", "target", "lam"),
    [([0.01, 0.03, 0.02, 0.05], 0.7, 0.08), ([3.0, 1.0], 0.5, 0.1), ([0.2, 0.2, 0.9], 0.6, 0.05)],
)
def test_sparsities_follow_the_paper_and_average_the_target(ratios, target, lam):
    got = owl_sparsities(ratios, target, lam)
    assert got == pytest.approx(paper(ratios, target, lam), abs=1e-12)
    assert sum(got) / len(got) == pytest.approx(target, abs=1e-12)
    assert max(got) - min(got) == pytest.approx(2 * lam)  # the span is 2λ
    most = int(np.argmax(ratios))
    assert got[most] == min(got)  # the block with the most outliers is pruned least


def test_equal_ratios_give_the_target_and_a_too_wide_span_is_refused():
    assert owl_sparsities([0.1, 0.1, 0.1], 0.5, 0.08) == [0.5, 0.5, 0.5]
    with pytest.raises(LlmoptError, match="owl_lambda 0.3 is too large for sparsity 0.9"):
        owl_sparsities([0.0, 1.0], 0.9, 0.3)


def test_outlier_ratio_counts_scores_above_m_times_the_block_mean():
    a = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 100.0]])
    # mean over both matrices: (4 + 7 + 100) / 12 = 9.25; M=5 -> threshold 46.25: one outlier
    assert outlier_ratio([a, b], 5.0) == pytest.approx(1 / 12)
    assert outlier_ratio([a, b], 20.0) == 0.0


def test_config_checks_and_registration():
    assert "owl" in registry.allocations()
    with pytest.raises(LlmoptError, match="sparsity_allocation 'owls' is unknown"):
        CompressionConfig(sparsity=0.5, sparsity_allocation="owls")
    with pytest.raises(LlmoptError, match="owl_lambda 0.7 must be a number in"):
        CompressionConfig(sparsity=0.5, sparsity_allocation="owl", owl_lambda=0.7)
    with pytest.raises(LlmoptError, match="per-layer rules may set bits"):
        CompressionConfig(sparsity=0.5, sparsity_allocation="owl", layers={"*": {"sparsity": 0.2}})
    with pytest.raises(LlmoptError, match="needs sparsity_pattern 'unstructured'"):
        CompressionConfig(sparsity_pattern="2:4", sparsity_allocation="owl")
    owl = CompressionConfig(sparsity=0.5, sparsity_allocation="owl", owl_lambda=0.1)
    assert registry.needs_calibration(owl)  # even with magnitude: it weighs by activations
    assert CompressionConfig(sparsity=0.5, owl_lambda=0.1).acting().owl_lambda == 0.08
    assert owl.acting().owl_lambda == 0.1


@pytest.fixture(scope="module")
def gpt2(tiny_dirs):
    return llmopt.load_model(str(tiny_dirs["gpt2"]))


@pytest.fixture()
def texts(tiny_dataset):
    return TextDataset(
        list(tiny_dataset.texts), tiny_dataset.labels, ["a", "b"], name="t", split="train"
    )


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_each_block_is_pruned_at_its_owl_sparsity(gpt2, texts, method):
    config = CompressionConfig(
        sparsity=0.6, sparsity_method=method, sparsity_allocation="owl", owl_lambda=0.1,
        owl_m=2.0, calibration_samples=16,
    )  # fmt: skip
    model, report = compress(gpt2, config, calibration=texts)
    # the outlier ratios computed here, from the uncompressed model's activations
    targets = [r["name"] for r in report.rows]
    feeder = Feeder(gpt2.model, gpt2.tokenizer, list(texts.texts[:16]),
                    max_length=gpt2.max_length, blocks=None, base_id=-1)  # fmt: skip
    stats = feeder.stats(0, targets, ("norms",))
    _, groups = group_by_block(gpt2.model, targets)
    units = [g for g in groups if g]
    ratios = [
        outlier_ratio(
            [wanda_scores(get_weight(gpt2.model.get_submodule(t)), stats[t].norms) for t in u], 2.0
        )
        for u in units
    ]
    want = paper(ratios, 0.6, 0.1)
    assert len(units) == 2 and ratios[0] != ratios[1]
    assert sum(want) / 2 == pytest.approx(0.6)
    rows = {r["name"]: r for r in report.rows}
    for unit, sparsity in zip(units, want, strict=True):
        for name in unit:
            cols = rows[name]["shape"][1]
            mask = model.compression["masks"][name]
            assert (mask.sum(1) == cols - round(sparsity * cols)).all(), name  # per row, exact
            assert "OWL: block outlier ratio" in rows[name]["note"]
    total = sum(r["shape"][0] * r["shape"][1] for r in report.rows)
    assert report.totals["sparsity"] == pytest.approx(0.6, abs=0.02)  # the same budget
    assert total > 0


def test_owl_needs_calibration_texts(gpt2):
    config = CompressionConfig(sparsity=0.5, sparsity_allocation="owl")
    with pytest.raises(LlmoptError, match="OWL measures activations"):
        compress(gpt2, config)
