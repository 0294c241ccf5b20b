"""The method registry: a method added in one place appears in the config, the CLI, the sweep and
the size estimate; the new CLI flags and the combinations they refuse."""

from __future__ import annotations

import pytest
import torch

import llmopt
from llmopt.cli import build_parser, main
from llmopt.cli.compression_flags import config_from_args
from llmopt.compression import CompressionConfig, compress, registry
from llmopt.compression.registry import Method
from llmopt.compression.targets import get_weight, set_weight


def _reverse_magnitude(ctx, names, _stats):
    """A deliberately odd method: zero the *largest* weights of each row."""
    from llmopt.compression.prune import row_mask

    for n in names:
        module = ctx.model.get_submodule(n)
        mask = row_mask(-get_weight(module).abs(), ctx.config.sparsity)
        set_weight(module, get_weight(module) * mask)
        ctx.masks[n] = mask


@pytest.fixture()
def dummy_method():
    """A prune method registered for one test only."""
    method = registry.register(
        Method(
            name="dummy",
            kind="prune",
            label="Dummy (largest first)",
            summary="zero the largest weights (a test method)",
            help="A method registered by a test.",
            formula=r"**Dummy** $-|W|$",
            apply=_reverse_magnitude,
            picture="mask",
        )
    )
    yield method
    registry.unregister("prune", "dummy")


def _choices(parser, flag: str) -> list[str]:
    evaluate = next(
        a
        for a in parser._subparsers._group_actions[0].choices.values()
        if a.prog.endswith("evaluate")
    )
    return next(a.choices for a in evaluate._actions if flag in a.option_strings)


def test_a_registered_method_appears_everywhere_and_runs(dummy_method, tiny_models):
    from llmopt.estimate import estimate_size
    from llmopt.sweep import SWEEP_KNOBS, knob_methods, sweep_config

    assert "dummy" in _choices(build_parser(), "--sparsity-method")
    args = build_parser().parse_args(
        ["evaluate", "--sparsity", "0.5", "--sparsity-method", "dummy"]
    )
    config = config_from_args(args)
    assert config.sparsity_method == "dummy" and registry.active(config) == [dummy_method]
    assert "dummy" in knob_methods("sparsity") and "dummy" in SWEEP_KNOBS["sparsity"]["methods"]
    assert sweep_config(CompressionConfig(), "sparsity", "dummy", 0.5) == config
    loaded = tiny_models["bert"]
    small, report = compress(loaded, config)
    assert small.size_bytes == estimate_size(loaded, config)["size_bytes"]
    for row in report.rows:
        w = get_weight(loaded.model.get_submodule(row["name"]))
        kept = get_weight(small.model.get_submodule(row["name"])) != 0
        for i in range(w.shape[0]):  # in every row, the largest ones went
            assert w[i].abs()[kept[i]].max() <= w[i].abs()[~kept[i]].min()
    registry.unregister("prune", "dummy")
    assert "dummy" not in _choices(build_parser(), "--sparsity-method")
    with pytest.raises(llmopt.LlmoptError, match="sparsity_method 'dummy' is unknown"):
        CompressionConfig(sparsity=0.5, sparsity_method="dummy")


def test_every_builtin_method_declares_what_the_app_needs():
    pictures = {"mask", "obs", "grid", "gptq", "spectrum", "scaled_spectrum", "smoothing", "grid8"}
    names = {kind: registry.names(kind) for kind in registry.ORDER}
    assert names == {
        "lowrank": ["svd", "activation-aware"],
        "prune": ["magnitude", "wanda", "sparsegpt"],
        "quantize": ["rtn", "gptq"],
        "kernel": ["int8", "smoothquant"],
    }
    for method in registry.all_methods():
        assert method.picture in pictures and method.formula.startswith("**")
        assert method.help and method.summary and method.label
    calibrated = {m.name for m in registry.all_methods() if m.needs_calibration}
    assert calibrated == {"activation-aware", "wanda", "sparsegpt", "gptq", "smoothquant"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--bits", "4", "--act-order"],
            "--act-order orders the columns GPTQ quantizes: it needs --quant-method",
        ),
        (["--quant-method", "gptq"], "change nothing"),
        (["--sparsity", "0.5", "--quant-method", "gptq"], "--quant-method needs --bits"),
        (["--rank", "8", "--asymmetric"], "--asymmetric needs --bits"),
        (["--smooth-alpha", "0.5"], "needs --int8-dynamic"),
        (["--int8-dynamic", "--smooth-alpha", "1.5"], "--smooth-alpha 1.5 must be"),
        (["--bits", "4", "--precision", "bf16"], "precision bf16"),
        (["--int8-dynamic", "--precision", "fp16"], "precision fp16"),
        (
            [
                "--sparsity",
                "0.5",
                "--sparsity-method",
                "sparsegpt",
                "--bits",
                "4",
                "--quant-method",
                "gptq",
                "--act-order",
            ],
            "drop --act-order",
        ),
        (
            ["--sparsity", "0.5", "--sparsity-method", "sparsegpt", "--sparsity-scope", "global"],
            "global",
        ),
    ],
)
def test_combinations_that_make_no_sense_exit_2_before_any_work(argv, message, capsys):
    assert main(["evaluate", "--model", "no-such-model-is-loaded", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_new_flags_build_the_config_they_name():
    args = build_parser().parse_args(
        [
            "evaluate",
            "--bits",
            "3",
            "--quant-method",
            "gptq",
            "--act-order",
            "--asymmetric",
            "--group-size",
            "64",
            "--calibration",
            "one-pass",
            "--calibration-samples",
            "32",
            "--rank",
            "96",
            "--lowrank-method",
            "activation-aware",
        ]
    )
    config = config_from_args(args)
    assert (config.quant_method, config.act_order, config.asymmetric, config.group_size) == (
        "gptq",
        True,
        True,
        64,
    )
    assert (config.calibration, config.calibration_samples) == ("one-pass", 32)
    assert (config.rank, config.lowrank_method) == (96, "activation-aware")
    smooth = config_from_args(
        build_parser().parse_args(["evaluate", "--int8-dynamic", "--smooth-alpha", "0.5"])
    )
    assert smooth.smooth_alpha == 0.5 and registry.active(smooth)[0].name == "smoothquant"
    bf16 = config_from_args(build_parser().parse_args(["evaluate", "--precision", "bf16"]))
    assert bf16.precision == "bf16" and not bf16.is_identity
    assert CompressionConfig.from_dict(config.to_dict()) == config


def test_fused_attention_gives_the_same_probabilities_and_maps_stay_available(
    tiny_models, tiny_dataset
):
    from llmopt.attention import attention_implementation, attention_maps
    from llmopt.evaluation import predict_proba

    for loaded in tiny_models.values():
        fused, _, _ = predict_proba(loaded, tiny_dataset.texts)
        eager, _, _ = predict_proba(loaded, tiny_dataset.texts, fused=False)
        assert abs(fused - eager).max() < 1e-5
        with attention_implementation(loaded.model, "sdpa"):  # the maps wait for the lock
            pass
        maps = attention_maps(loaded, tiny_dataset.texts[0])
        sums = torch.as_tensor(maps.maps).sum(-1)
        torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-4, rtol=0)


def test_a_method_file_is_discovered_and_brings_its_picture(tmp_path, tiny_models):
    """A new method is one file: nothing to list in ``methods/__init__.py``; the CLI, gradual
    pruning and the explainer find it, and the explainer draws the file's own picture."""
    from method_file import NAME, TITLE, method_file

    from llmopt.explain import Scene, get_weight

    with method_file(tmp_path) as method:
        assert NAME in _choices(build_parser(), "--sparsity-method")
        assert NAME in registry.gradual_methods()
        loaded = tiny_models["bert"]
        _, weight = get_weight(loaded)
        config = CompressionConfig(sparsity=0.5, sparsity_method=NAME)
        assert registry.selected(config, "prune") is method
        fig, caption = registry.picture(method)(Scene.of(weight, config))
        assert fig.layout.title.text.startswith(TITLE) and "largest" in caption
        small, _ = compress(loaded, config)
        name = next(iter(small.compression["masks"]))
        w = get_weight(loaded, name)[1]
        kept = small.compression["masks"][name].numpy()
        for i in range(w.shape[0]):  # in every row, the largest ones went
            assert abs(w[i][kept[i]]).max() <= abs(w[i][~kept[i]]).min()
    assert NAME not in registry.names("prune") and NAME not in registry.gradual_methods()
