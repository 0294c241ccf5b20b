"""A method's new knob is its config field and its method file: the flag, the validation, the
recipe, the lineage step, "what differs" and the sweep read the method's declaration. (The
page control is checked in ``tests/app/test_knob_control.py``.) Before ``registry.Knob``
none of these knew a method's own setting: no flag, no range check, a recipe keeping it while
another method ran, and no lineage step owning it."""

from __future__ import annotations

import re

import pytest
from knob_file import DEFAULT, FIELD, METHOD, dummy_knob

import llmopt
from llmopt import lineage
from llmopt.cli import build_parser, main
from llmopt.cli.compression_flags import config_from_args


def _evaluate_flags(parser) -> dict:
    sub = parser._subparsers._group_actions[0].choices["evaluate"]
    return {s: a for a in sub._actions for s in a.option_strings}


def test_a_declared_knob_appears_everywhere():
    from llmopt.comparison import what_differs
    from llmopt.compression import CompressionConfig as Base
    from llmopt.experiments import Run
    from llmopt.sweep import sweep_config

    with dummy_knob():
        from llmopt.compression import CompressionConfig

        assert CompressionConfig is not Base and CompressionConfig().foo == DEFAULT
        flag = _evaluate_flags(build_parser())["--foo"]  # the CLI flag, typed by the field
        assert flag.type is float and "How hard foo pushes." in flag.help
        argv = ["evaluate", "--sparsity", "0.5", "--sparsity-method", METHOD, "--foo", "0.75"]
        config = config_from_args(build_parser().parse_args(argv))
        assert config.foo == 0.75 and config.sparsity_method == METHOD
        with pytest.raises(llmopt.LlmoptError, match=r"foo must be a number in \[0, 1\]"):
            CompressionConfig(sparsity=0.5, sparsity_method=METHOD, foo=1.5)  # declared range
        with pytest.raises(llmopt.LlmoptError, match="foo must be a number"):
            CompressionConfig(foo="much")
        # the recipe keeps the knob while its method runs, resets it otherwise
        assert config.acting() == config
        assert CompressionConfig.from_dict(config.acting().to_dict()) == config
        other = CompressionConfig(sparsity=0.5, foo=0.75).acting()  # magnitude: foo idles
        assert other.foo == DEFAULT
        # lineage: the knob belongs to its method's step
        assert FIELD in lineage.step_fields()["prune"]
        assert lineage.config_steps(config.to_dict()) == ["prune"]
        # what differs: two runs that differ by the knob only
        common = {"model": "bundled", "model_fingerprint": "m", "dataset": "bundled",
                  "rows_fingerprint": "r", "n": 10}  # fmt: skip
        softer = CompressionConfig(sparsity=0.5, sparsity_method=METHOD, foo=0.5).to_dict()
        runs = [Run(**common, id=1, kind="variant", config=config.to_dict()),
                Run(**common, id=2, kind="variant", config=softer)]  # fmt: skip
        assert list(what_differs(runs).index) == [FIELD]
        # the sweep varies its kind's knob (sparsity) and keeps the method's knob of the base
        swept = sweep_config(CompressionConfig(foo=0.6), "sparsity", METHOD, 0.3)
        assert (swept.sparsity_method, swept.foo) == (METHOD, 0.6)
    assert "--foo" not in _evaluate_flags(build_parser())
    assert FIELD not in lineage.step_fields()["prune"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sparsity", "0.5", "--foo", "0.5"], "--foo needs --sparsity-method knobbed"),
        (
            ["--sparsity", "0.5", "--sparsity-method", METHOD, "--foo", "2"],
            r"--foo must be a number in \[0, 1\]",
        ),
    ],
)
def test_a_knob_flag_that_cannot_act_exits_2(argv, message, capsys):
    with dummy_knob():
        assert main(["evaluate", "--model", "no-such-model-is-loaded", *argv]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1, err
