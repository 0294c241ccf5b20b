"""Recipes hold only what acted: a setting of a kind of compression that is off is not kept."""

from __future__ import annotations

import pytest

import llmopt
from llmopt.comparison import what_differs
from llmopt.compression import CompressionConfig
from llmopt.experiments import ExperimentStore
from llmopt.recording import describe_config, record_evaluation

DEFAULT = CompressionConfig()


def test_acting_resets_the_settings_of_kinds_that_are_off():
    int8 = CompressionConfig(
        int8_dynamic=True, quant_method="gptq", act_order=True, group_size=64,
        sparsity_method="wanda", sparsity_scope="layer", lowrank_method="activation-aware",
        calibration="one-pass", calibration_samples=16,
    ).acting()  # fmt: skip
    assert int8 == CompressionConfig(int8_dynamic=True)
    kept = CompressionConfig(sparsity=0.5, sparsity_method="wanda", calibration_samples=16)
    assert kept.acting() == kept  # Wanda prunes and measures activations: all of it acted
    gptq = CompressionConfig(bits=4, quant_method="gptq", sparsity_method="sparsegpt").acting()
    assert (gptq.quant_method, gptq.sparsity_method) == ("gptq", DEFAULT.sparsity_method)
    nm = CompressionConfig(sparsity=0.3, sparsity_pattern="2:4").acting()
    assert (nm.sparsity, nm.effective_sparsity) == (0.0, 0.5)  # the pattern sets the sparsity
    assert nm.describe() == CompressionConfig(sparsity=0.3, sparsity_pattern="2:4").describe()


@pytest.fixture()
def bert(tiny_dirs):
    return llmopt.load_model(str(tiny_dirs["bert"]))


def test_an_int8_run_s_recipe_names_no_method_that_did_nothing(bert, tiny_dataset, tmp_path):
    """An int8 run made while the page's quantizer said GPTQ and its pruner Wanda stored
    ``quant_method: gptq`` and ``sparsity_method: wanda``, so "What differs" listed GPTQ
    against another int8 run; now both recipes are the same, and nothing differs."""
    runs_db = ExperimentStore(tmp_path / "experiments.sqlite")
    base = llmopt.evaluate(bert, tiny_dataset)
    ids = []
    for config in (
        CompressionConfig(int8_dynamic=True, quant_method="gptq", sparsity_method="wanda"),
        CompressionConfig(int8_dynamic=True),
    ):
        done = record_evaluation(
            runs_db, base_model=bert, dataset=tiny_dataset, base=base, other=base, config=config
        )
        ids.append(done.run_id)
    first, second = (runs_db.get(i) for i in ids)
    assert first.config["quant_method"] == DEFAULT.quant_method  # not "gptq"
    assert first.config["sparsity_method"] == DEFAULT.sparsity_method  # not "wanda"
    assert first.config == second.config == CompressionConfig(int8_dynamic=True).to_dict()
    assert "gptq" not in describe_config(first.config).lower()
    assert what_differs([first, second]).empty
