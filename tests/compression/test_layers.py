"""Per-layer rules and skip patterns (``CompressionConfig.layers`` / ``skip``): each matrix is
compressed with its own settings, read back from the compressed model itself; the most specific
pattern wins; a skipped layer is bit-identical; the size estimate, save/reload and the recipe
round-trip agree with what was done.

Before per-layer rules existed ``CompressionConfig`` had no ``layers``/``skip`` fields, so every
test here failed on the old code at construction (unknown keyword)."""

from __future__ import annotations

import json

import pytest
import torch

import llmopt
from llmopt.compression import CompressionConfig, compress, save_model
from llmopt.compression.config import LayerRuleError, specificity
from llmopt.compression.targets import get_bias, get_weight
from llmopt.errors import LlmoptError
from llmopt.estimate import estimate_size
from llmopt.recording import load_recipe

H = "transformer.h"
# uniform: 50% magnitude pruning, 4-bit; block 0: 8-bit and no pruning (more specific than the
# attention rule, which would give it 25%); block 1's attention: 25%; block 1's c_fc: float
# weights; block 1's mlp.c_proj: skipped.
RULES = {
    "*.attn.*": {"sparsity": 0.25},
    f"{H}.0.*": {"bits": 8, "sparsity": 0.0},
    f"{H}.1.mlp.c_fc": {"bits": None},
}
CONFIG = CompressionConfig(sparsity=0.5, bits=4, layers=RULES, skip=(f"{H}.1.mlp.c_proj",))
# layer -> (sparsity its rule asks for, bits) ; None bits = float weights
EXPECTED = {
    f"{H}.0.attn.c_attn": (0.0, 8),
    f"{H}.0.attn.c_proj": (0.0, 8),
    f"{H}.0.mlp.c_fc": (0.0, 8),
    f"{H}.0.mlp.c_proj": (0.0, 8),
    f"{H}.1.attn.c_attn": (0.25, 4),
    f"{H}.1.attn.c_proj": (0.25, 4),
    f"{H}.1.mlp.c_fc": (0.5, None),
}


@pytest.fixture(scope="module")
def gpt2(tiny_dirs):
    return llmopt.load_model(str(tiny_dirs["gpt2"]))


@pytest.fixture(scope="module")
def compressed(gpt2):
    return compress(gpt2, CONFIG)


def on_grid(weight: torch.Tensor, scales: torch.Tensor, bits: int) -> torch.Tensor:
    """The integer grid index of every weight (asserting it is on the symmetric grid)."""
    per_group = weight.shape[1] // scales.shape[1]
    k = weight / scales.repeat_interleave(per_group, dim=1)
    assert torch.allclose(k, k.round(), atol=1e-4)
    assert k.abs().max() <= 2 ** (bits - 1) - 1
    return k.round()


def test_rules_are_honoured_per_matrix(gpt2, compressed):
    """Read back from the weights: each matrix's zeros per row and the grid it lies on."""
    model, report = compressed
    state = model.compression
    rows = {r["name"]: r for r in report.rows}
    assert set(rows) == set(EXPECTED)  # the skipped layer is not compressed
    for name, (sparsity, bits) in EXPECTED.items():
        w = get_weight(model.model.get_submodule(name))
        base = get_weight(gpt2.model.get_submodule(name))
        cols = w.shape[1]
        assert rows[name]["bits"] == bits and rows[name]["rank"] is None
        if sparsity:
            mask = state["masks"][name]
            assert (mask.sum(1) == cols - round(sparsity * cols)).all()  # per row, exactly
            assert (w[~mask] == 0).all()
            kept = base.abs().masked_fill(~mask, float("inf")).min(1).values
            gone = base.abs().masked_fill(mask, -1.0).max(1).values
            assert (gone <= kept).all()  # magnitude, per row: the smallest go
        else:
            assert name not in state["masks"]
        if bits is None:
            assert name not in state["scales"]
            assert torch.equal(w[w != 0], base[w != 0])  # float weights: the kept ones as they were
            assert (w == 0).float().mean().item() == pytest.approx(round(0.5 * cols) / cols)
        else:
            assert state["matrix_bits"][name] == bits
            k = on_grid(w, state["scales"][name], bits)
            if bits == 8:  # really 8-bit: indices beyond the 4-bit range occur
                assert k.abs().max() > 7
        assert rows[name]["sparsity"] >= sparsity


def test_skipped_layer_is_bit_identical(gpt2, compressed, state_bytes):
    model, _ = compressed
    name = f"{H}.1.mlp.c_proj"
    before, after = state_bytes(gpt2.model), state_bytes(model.model)
    for key in (f"{name}.weight", f"{name}.bias"):
        assert after[key] == before[key]
    assert (
        f"{H}.0.mlp.c_proj.weight" in before
        and after[f"{H}.0.mlp.c_proj.weight"] != (before[f"{H}.0.mlp.c_proj.weight"])
    )


def test_skip_rule_and_skip_list_agree(gpt2, state_bytes):
    """``{"skip": true}`` in a rule and a skip pattern leave the same layers alone."""
    by_rule = compress(gpt2, CompressionConfig(sparsity=0.5, layers={"*.mlp.*": {"skip": True}}))
    by_list = compress(gpt2, CompressionConfig(sparsity=0.5, skip=("*.mlp.*",)))
    a, b = state_bytes(by_rule[0].model), state_bytes(by_list[0].model)
    assert a == b
    assert {r["name"] for r in by_rule[1].rows} == {f"{H}.{i}.attn.{m}" for i in (0, 1)
                                                    for m in ("c_attn", "c_proj")}  # fmt: skip


def test_most_specific_pattern_wins():
    config = CompressionConfig(
        sparsity=0.5,
        layers={
            "*": {"sparsity": 0.1},
            "*.attn.*": {"sparsity": 0.2},
            "*.h.[01].attn.*": {"sparsity": 0.3},  # a class counts as no literal character
            "*.h.?.attn.*": {"sparsity": 0.4},  # as specific as the one above: listed later
            f"{H}.1.attn.c_proj": {"bits": 8},  # exact: wins, and takes nothing from the others
        },
    )
    assert specificity("*.h.[01].attn.*") == specificity("*.h.?.attn.*") == 9
    assert specificity(f"{H}.1.attn.c_proj") == len(f"{H}.1.attn.c_proj")
    assert config.rule_for(f"{H}.0.attn.c_attn") == "*.h.[01].attn.*"
    assert config.layer_config(f"{H}.0.attn.c_attn").sparsity == 0.3
    assert config.layer_config(f"{H}.1.mlp.c_fc").sparsity == 0.1
    exact = config.layer_config(f"{H}.1.attn.c_proj")
    assert (exact.sparsity, exact.bits) == (0.5, 8)  # the uniform sparsity, not another rule's


def test_report_says_each_rank(gpt2):
    config = CompressionConfig(rank=8, layers={f"{H}.1.*": {"rank": 4}}, skip=("*.c_fc",))
    model, report = compress(gpt2, config)
    ranks = {r["name"]: r["rank"] for r in report.rows}
    assert ranks == {
        f"{H}.0.attn.c_attn": 8,
        f"{H}.0.attn.c_proj": 8,
        f"{H}.0.mlp.c_proj": 8,
        f"{H}.1.attn.c_attn": 4,
        f"{H}.1.attn.c_proj": 4,
        f"{H}.1.mlp.c_proj": 4,
    }
    for name, rank in ranks.items():
        w = get_weight(model.model.get_submodule(name)).double()
        assert torch.linalg.matrix_rank(w, rtol=1e-4).item() == rank


@pytest.mark.parametrize(
    "config",
    [
        CompressionConfig(sparsity=0.5, layers={"*.attn.*": {"sparsity": 0.25, "bits": 8}}),
        CompressionConfig(bits=8, layers={f"{H}.0.*": {"rank": 8}}, skip=("*.c_fc",)),
        CompressionConfig(rank=8, layers={"*.mlp.*": {"sparsity": 0.5, "rank": None}}),
    ],
    ids=["sparsity+bits", "bits+rank+skip", "rank+sparsity"],
)
def test_size_estimate_matches_the_measured_size(gpt2, config):
    estimate = estimate_size(gpt2, config)
    model, report = compress(gpt2, config)
    assert estimate["size_bytes"] == model.size_bytes == report.totals["model_bytes_after"]
    assert estimate["layers"] == report.totals["layers"]


def test_save_and_reload_are_identical(gpt2, compressed, tmp_path, state_bytes):
    model, _ = compressed
    save_model(model, tmp_path / "saved")
    again = llmopt.load_model(str(tmp_path / "saved"))
    assert state_bytes(again.model) == state_bytes(model.model)


def test_recipe_round_trip(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(CONFIG.acting().to_dict()), encoding="utf-8")
    recipe = load_recipe(path)
    assert recipe.config["layers"] == RULES and recipe.config["skip"] == [f"{H}.1.mlp.c_proj"]
    assert CompressionConfig.from_dict(recipe.config) == CONFIG
    # a uniform config's dict is the one earlier versions stored: no new keys
    assert "layers" not in CompressionConfig(bits=8).to_dict()


def test_acting_keeps_what_only_a_rule_uses():
    """The uniform config does not quantize, a rule does: its method is not reset."""
    config = CompressionConfig(sparsity=0.5, quant_method="gptq", layers={"*.attn.*": {"bits": 4}})
    assert config.acting().quant_method == "gptq"
    assert CompressionConfig(sparsity=0.5, quant_method="gptq").acting().quant_method == "rtn"


@pytest.mark.parametrize(
    ("layers", "skip", "words"),
    [
        ({"*.attn.*": {"bits": 9}}, (), "layer pattern '*.attn.*': bits 9 is outside"),
        ({"*.attn.*": {"sparsit": 0.5}}, (), "layer pattern '*.attn.*': unknown setting"),
        ({"*.attn.*": {"sparsity": -0.1}}, (), "layer pattern '*.attn.*': sparsity -0.1"),
        ({"*.attn.*": {"rank": 0}}, (), "layer pattern '*.attn.*': rank 0"),
        ({"*.attn.*": {"skip": "yes"}}, (), "skip must be true or false"),
        ({"*.attn.*": {}}, (), "layer pattern '*.attn.*' sets nothing"),
        ({"*.attn.*": 8}, (), "its settings must be an object"),
        ([1, 2], (), "layers must be an object"),
        ({}, "*.attn.*", "skip must be a list"),
    ],
)
def test_bad_rules_name_the_pattern(layers, skip, words):
    with pytest.raises(LayerRuleError, match=None) as info:
        CompressionConfig(sparsity=0.5, layers=layers, skip=skip)
    assert words in info.value.message and "\n" not in info.value.message


@pytest.mark.parametrize(
    ("layers", "skip", "pattern"),
    [({"*.atn.*": {"bits": 8}}, (), "*.atn.*"), ({}, ("classifier",), "classifier")],
)
def test_a_pattern_matching_no_layer_is_an_error(gpt2, layers, skip, pattern):
    config = CompressionConfig(sparsity=0.5, layers=layers, skip=skip)
    for call in (lambda: compress(gpt2, config), lambda: estimate_size(gpt2, config)):
        with pytest.raises(LlmoptError) as info:
            call()
        assert f"pattern {pattern!r} matches no layer" in info.value.message


def test_a_rule_a_layer_cannot_take_names_the_layer(gpt2):
    config = CompressionConfig(sparsity=0.5, layers={f"{H}.1.mlp.c_fc": {"rank": 40}})
    with pytest.raises(LlmoptError, match=f"layer '{H}.1.mlp.c_fc'"):
        compress(gpt2, config)


def test_bias_and_untouched_modules_unchanged(gpt2, compressed):
    model, _ = compressed
    for name in EXPECTED:
        a, b = get_bias(gpt2.model.get_submodule(name)), get_bias(model.model.get_submodule(name))
        assert torch.equal(a, b)


def test_training_constraints_use_each_matrix_bits(compressed):
    """Recovery training keeps each matrix on its own grid: with one width for all (the state's
    ``bits``, 4 here), the 8-bit matrices would not be on their grid."""
    from llmopt.training.constraints import satisfies

    model, _ = compressed
    ok = satisfies(model.model, model.compression)
    assert ok and all(ok.values())
    one_width = {**model.compression, "matrix_bits": {}}
    assert not all(satisfies(model.model, one_width).values())


def test_what_differs_and_lineage_show_each_rule():
    """Compare's table lists a rule per pattern; lineage sees a step a rule alone runs."""
    from llmopt.comparison import what_differs
    from llmopt.experiments import Run
    from llmopt.lineage import config_steps, is_ancestor, step_change

    common = {"model": "m", "model_fingerprint": "m", "dataset": "d", "rows_fingerprint": "r"}
    uniform = CompressionConfig(sparsity=0.5).to_dict()
    ruled = CompressionConfig(
        sparsity=0.5, layers={"*.attn.*": {"bits": 8}}, skip=("*.c_fc",)
    ).to_dict()
    runs = [
        Run(**common, n=10, id=1, kind="variant", config=uniform),
        Run(**common, n=10, id=2, kind="variant", config=ruled),
    ]
    table = what_differs(runs)
    assert sorted(table.index) == ["layer '*.attn.*'", "skip"]
    assert table.loc["layer '*.attn.*'"].tolist() == ["—", "bits=8"]
    assert table.loc["skip"].tolist() == ["—", "*.c_fc"]
    assert config_steps(ruled) == ["prune", "quantize"]  # only a rule quantizes
    assert not is_ancestor(uniform, ruled)  # the rules differ: not a prefix of its steps
    assert "'*.attn.*': 8-bit" in step_change(None, ruled)


def test_a_pattern_of_another_model_says_a_recipe_holds_no_model():
    """A recipe searched on a causal LM, replayed without --model, met the bundled classifier:
    the error named the pattern but not the likely cause (a recipe file holds no model)."""
    config = CompressionConfig(bits=4, layers={"transformer.h.0.attn.c_attn": {"bits": 8}})
    with pytest.raises(LlmoptError) as info:
        config.check_layer_names(["encoder.layer.0.attention.self.query"], "the classifier")
    assert "transformer.h.0.attn.c_attn" in info.value.message
    assert "--model" in info.value.render("cli") and "holds no model" in info.value.render("cli")
