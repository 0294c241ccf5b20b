"""Lineage in one module: steps come from the method registry's kinds and order (a new kind, or
a new method's knob, shows up without editing ``llmopt.lineage``); stored step names stay those
older versions wrote."""

from __future__ import annotations

import pytest

from llmopt import comparison, lineage
from llmopt.compression import CompressionConfig, registry
from llmopt.compression.registry import Kind, Method
from llmopt.experiments import ExperimentStore, Run

# What stores written before this module hold: step names and the fields of each step.
STORED_STEPS = {
    "low-rank": {"rank", "lowrank_method"},
    "prune": {"sparsity", "sparsity_method", "sparsity_pattern", "sparsity_scope", "calibration",
              "calibration_samples"},
    "quantize": {"bits", "group_size", "quant_method", "act_order", "asymmetric"},
    "int8 kernels": {"int8_dynamic", "smooth_alpha"},
    "16-bit": {"precision"},
}  # fmt: skip
COMMON = {"model": "m", "model_fingerprint": "m", "dataset": "d", "rows_fingerprint": "r", "n": 4}


def test_the_built_in_steps_keep_their_stored_names_and_fields():
    assert {k: set(v) for k, v in lineage.step_fields().items()} == STORED_STEPS
    assert list(lineage.step_fields()) == list(STORED_STEPS)  # the order compression applies
    every = {"rank": 8, "sparsity": 0.5, "bits": 4, "int8_dynamic": True, "precision": "bf16"}
    assert lineage.config_steps(every) == list(STORED_STEPS)
    assert lineage.config_steps({"sparsity_pattern": "2:4"}) == ["prune"]
    assert lineage.config_steps({"bits": 8, "training": {"task": "recover-head"}}) == [
        "quantize",
        "recover",
    ]
    assert [lineage.canonical_step(k) for k in registry.ORDER] == list(STORED_STEPS)[:4]


def test_a_recipe_of_another_version_still_has_its_steps():
    """A field this version does not know, or a value it refuses, does not hide the steps."""
    assert lineage.config_steps({"sparsity": 0.5, "future_knob": 3}) == ["prune"]
    assert lineage.config_steps({"sparsity_pattern": "3:3", "bits": 4}) == ["prune", "quantize"]


def test_runs_read_from_a_store_keep_their_step_names(tmp_path):
    store = ExperimentStore(tmp_path / "runs.sqlite")
    config = CompressionConfig(rank=4, int8_dynamic=True).to_dict()
    run_id = store.add(
        Run(**COMMON, kind="variant", config=config, steps=["low-rank", "int8 kernels"])
    )
    run = store.get(run_id)
    frame = comparison.runs_frame([run])
    assert frame["steps"].iloc[0] == run.steps == ["low-rank", "int8 kernels"]
    assert comparison.methods(frame) == ["low-rank", "int8 kernels"]
    assert len(comparison.filter_runs(frame, steps=["low-rank"])) == 1


@pytest.fixture()
def dummy_kind(monkeypatch):
    """A kind of method the registry did not have, applied between pruning and quantization."""
    kind = Kind(
        "dummy", "Dummy", "dummy_method", lambda c: getattr(c, "dummy_level", None) is not None,
        "none", {"dummy_level": (1, None)},
    )  # fmt: skip
    monkeypatch.setitem(registry.KINDS, "dummy", kind)
    monkeypatch.setitem(registry._METHODS, "dummy", {})
    monkeypatch.setattr(registry, "ORDER", ("lowrank", "prune", "dummy", "quantize", "kernel"))
    return kind


def test_a_new_kind_is_a_lineage_step(dummy_kind):
    assert list(lineage.step_fields())[2] == "dummy"
    assert lineage.step_fields()["dummy"] == ("dummy_method", "dummy_level")
    pruned = {"sparsity": 0.5}
    both = {"sparsity": 0.5, "dummy_level": 2, "bits": 4}
    assert lineage.config_steps(both) == ["prune", "dummy", "quantize"]
    assert lineage.is_ancestor(pruned, both)
    assert not lineage.is_ancestor({"sparsity": 0.5, "dummy_level": 3}, both)  # its knob differs
    assert "dummy" in lineage.step_order()
    parent = Run(**COMMON, id=1, kind="variant", config=pruned)
    child = Run(**COMMON, id=2, kind="variant", config={"sparsity": 0.5, "dummy_level": 2})
    assert "dummy_level=2" in comparison.step_change(parent, child)


def test_a_new_methods_knob_joins_its_kinds_step():
    """A prune method whose sweep sets a knob of its own: the knob is a prune field, so two
    recipes that differ in it are not ancestors of each other."""
    registry.register(
        Method(name="dummy", kind="prune", label="Dummy", summary="a test method", help="",
               formula="", apply=lambda ctx, names, stats: None,
               sweep={"dummy": {"sparsity_method": "dummy", "dummy_knob": 1}})
    )  # fmt: skip
    try:
        assert "dummy_knob" in lineage.step_fields()["prune"]
        older = {"sparsity": 0.5, "dummy_knob": 1}
        assert lineage.is_ancestor(older, {**older, "bits": 4})
        assert not lineage.is_ancestor(older, {**older, "dummy_knob": 2, "bits": 4})
    finally:
        registry.unregister("prune", "dummy")
    assert "dummy_knob" not in lineage.step_fields()["prune"]
