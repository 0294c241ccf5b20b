"""The compression flags of the command line, derived from the config and the method registry.

The method choices come from the registry, whose methods import torch; on a ``LazyParser`` the
flags are therefore added only when that subcommand is parsed or its help shown, so that
``llmopt --help`` and the other commands stay fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import re

from llmopt.cli.common import Parser, positive_int
from llmopt.compression import registry
from llmopt.compression.config import (
    BITS_ALLOCATIONS,
    CALIBRATIONS,
    PRECISIONS,
    RANK_ALLOCATIONS,
    CompressionConfig,
    LayerRuleError,
)
from llmopt.errors import LlmoptError

# Config fields whose flag is not the value itself: --layers FILE holds the rules, --skip is
# given once per pattern.
LAYER_FIELDS = ("layers", "skip")


def config_fields() -> tuple[str, ...]:
    """Every config field: each has its flag (--sparsity-method for sparsity_method, …)."""
    return tuple(f.name for f in dataclasses.fields(CompressionConfig))


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


class LazyParser(Parser):
    """A subcommand's parser whose costly arguments are added on first use: when it parses,
    formats its help, or anything reads its actions."""

    def defer(self, add) -> None:
        self.__dict__.setdefault("_deferred", []).append(add)

    def _complete(self) -> None:
        deferred = self.__dict__.get("_deferred", [])
        while deferred:
            deferred.pop(0)(self)  # popped first: adding reads _actions, which lands here

    @property
    def _actions(self) -> list:  # type: ignore[override]  # argparse's list of actions, completed on first read
        if not self.__dict__.get("_adding"):
            self._complete()
        return self.__dict__["_all_actions"]

    def _add_action(self, action):  # adding another argument is not a read
        return self._raw(super()._add_action, action)

    def set_defaults(self, **kwargs) -> None:  # deferred arguments take these when added
        self._raw(super().set_defaults, **kwargs)

    def _raw(self, call, *args, **kwargs):
        self.__dict__["_adding"] = True
        try:
            return call(*args, **kwargs)
        finally:
            self.__dict__["_adding"] = False

    @_actions.setter  # type: ignore[no-redef, attr-defined]
    def _actions(self, value: list) -> None:
        self.__dict__["_all_actions"] = value

    def parse_known_args(self, *args, **kwargs):  # noqa: D102 - argparse hook
        self._complete()
        return super().parse_known_args(*args, **kwargs)

    def format_help(self) -> str:  # noqa: D102 - argparse hook
        self._complete()
        return super().format_help()

    def format_usage(self) -> str:  # noqa: D102 - argparse hook
        self._complete()
        return super().format_usage()


def bits_value(text: str) -> int | float:
    """``--bits``: a whole number (``4``), or a fractional average (``3.5``) that the config
    accepts with a bits allocation only."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bits, e.g. 4") from None
    return int(value) if value.is_integer() else value


def _choices_help(kind: str) -> str:
    return "; ".join(f"{m.name}: {m.summary}" for m in registry.methods(kind).values())


def add_compression_args(parser: argparse.ArgumentParser) -> None:
    """Add every compression flag; method choices and their help come from the registry
    (on a ``LazyParser``: when the subcommand is first parsed or its help shown)."""
    if isinstance(parser, LazyParser):
        parser.defer(_add_compression_args)
    else:
        _add_compression_args(parser)


def _add_compression_args(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--sparsity", type=float, help="fraction of weights to zero, in [0, 1)")
    add("--sparsity-method", choices=registry.names("prune"), help=_choices_help("prune"))
    add("--sparsity-pattern", choices=["unstructured", "2:4", "4:8"])
    add(
        "--sparsity-scope",
        choices=["layer", "global"],
        help="rank weights per output row (layer) or across all layers (global; magnitude)",
    )
    allocations = registry.allocations()
    add(
        "--sparsity-allocation",
        choices=["uniform", *allocations],
        help="how the sparsity is spread over the blocks: uniform (default); "
        + "; ".join(f"{a.name}: {a.summary}" for a in allocations.values()),
    )
    add(
        "--owl-lambda",
        type=float,
        help="with --sparsity-allocation owl: the block sparsities span at most twice this "
        f"(default {CompressionConfig.owl_lambda})",
    )
    add(
        "--owl-m",
        type=float,
        help="with --sparsity-allocation owl: a score above this many times its block's mean "
        f"is an outlier (default {CompressionConfig.owl_m:g})",
    )
    add(
        "--bits",
        type=bits_value,
        help="weight bit-width 2..8 (simulated quantization); with --bits-allocation "
        "sensitivity the average bits per weight, e.g. 3.5",
    )
    add(
        "--bits-allocation",
        choices=list(BITS_ALLOCATIONS),
        help="how the bits are spread over the matrices: uniform (default); sensitivity: each "
        "matrix 2..8 bits from its sensitivity measured on validation rows of the training "
        "split, --bits the average (same size or less)",
    )
    add("--group-size", type=int, help="input weights per scale (default: per row)")
    add("--quant-method", choices=registry.names("quantize"), help=_choices_help("quantize"))
    add(
        "--act-order",
        action="store_true",
        default=None,
        help="GPTQ: quantize columns by decreasing Hessian diagonal",
    )
    add(
        "--asymmetric",
        action="store_true",
        default=None,
        help="a zero point per scale: all 2^b levels (symmetric grids use 2^b - 1)",
    )
    add("--rank", type=int, help="low-rank factorisation rank of every targeted layer")
    add(
        "--rank-allocation",
        choices=list(RANK_ALLOCATIONS),
        help="how the rank is spread over the matrices: uniform (default); energy: each "
        "matrix keeps the same share of its singular-value energy, as many factor weights "
        "in all as --rank everywhere",
    )
    add("--lowrank-method", choices=registry.names("lowrank"), help=_choices_help("lowrank"))
    add(
        "--int8-dynamic",
        action="store_true",
        default=None,
        help="real int8 kernels (torch dynamic quantization)",
    )
    add(
        "--smooth-alpha",
        type=float,
        help="with --int8-dynamic: SmoothQuant smoothing strength in [0, 1] (0.5 is usual)",
    )
    add(
        "--calibration",
        choices=list(CALIBRATIONS),
        help="sequential (default): each block calibrated on the compressed blocks' outputs; "
        "one-pass: every layer on the uncompressed model's activations",
    )
    add(
        "--calibration-samples",
        type=positive_int,
        help="training texts for calibrated methods (default "
        f"{CompressionConfig.calibration_samples})",
    )
    add(
        "--precision",
        choices=list(PRECISIONS),
        help="float precision the compressed model runs in (bf16/fp16: 16-bit kernels)",
    )
    add(
        "--include-head",
        action="store_true",
        default=None,
        help="compress the classification head too",
    )
    add(
        "--layers",
        metavar="FILE",
        help='per-layer settings: a JSON (or YAML) object {"PATTERN": {"sparsity"|"bits"|'
        '"group_size"|"rank"|"skip": value}}; PATTERN is an fnmatch pattern over layer names '
        "(e.g. '*.attn.*'); a layer takes the most specific matching pattern's settings (most "
        "non-wildcard characters; ties: the first listed), the flags above elsewhere",
    )
    add(
        "--skip",
        metavar="PATTERN",
        action="append",
        help="leave the layers matching this fnmatch pattern uncompressed (repeatable)",
    )
    _add_knob_args(parser)


def _add_knob_args(parser: argparse.ArgumentParser) -> None:
    """A flag for each knob a method declares (``registry.Knob``), typed by its config field."""
    default = {f.name: f.default for f in dataclasses.fields(CompressionConfig)}
    for method, knob in registry.knobs():
        if knob.field not in default or _flag(knob.field) in parser._option_string_actions:
            continue
        first = default[knob.field]
        text = f"{method.name} only: {knob.help}"
        if isinstance(first, bool):
            parser.add_argument(_flag(knob.field), action="store_true", default=None, help=text)
        else:
            kind = int if isinstance(first, int) else float
            parser.add_argument(_flag(knob.field), type=kind, help=f"{text} (default {first})")


def config_from_args(
    args: argparse.Namespace, recipe: dict | None = None
) -> CompressionConfig | None:
    """The config the flags describe (over a recipe's config, when given: flags win), or None
    when neither gives one.

    Raises:
        LlmoptError: invalid values or combinations, or flags that change nothing on their own.
    """
    given = {k: getattr(args, k) for k in config_fields() if getattr(args, k, None) is not None}
    if given.get("layers") is not None:
        from llmopt.recording import load_layers

        given["layers"] = load_layers(given["layers"])
    if "skip" in given:
        given["skip"] = tuple(given["skip"])
    if not given and not recipe:
        return None
    try:
        config = CompressionConfig(**{**(recipe or {}), **given})
    except LayerRuleError as exc:  # a rule's own words: its pattern, its setting's JSON key
        where = f"--layers {str(args.layers)!r}: " if getattr(args, "layers", None) else ""
        raise LlmoptError(where + exc.message, fix=exc.fix) from None
    except LlmoptError as exc:  # the same check, in the words of the command line
        raise LlmoptError(in_flags(exc.message), fix=exc.fix) from None
    if config.is_identity:
        if not given:
            return None  # a recipe of the uncompressed model: evaluate the model alone
        flags = " ".join("--" + k.replace("_", "-") for k in given)
        raise LlmoptError(
            f"{flags} change nothing on their own: add --sparsity above 0, --bits, --rank, "
            "--int8-dynamic or --precision bf16/fp16 (or a --layers rule that sets one)"
        )
    idle = _idle_flags(config, given)
    if idle:
        raise LlmoptError(f"{idle} change nothing here: {_why(idle)}")
    return config


def _idle_flags(config: CompressionConfig, given: dict) -> str:
    """Method flags given for a kind of compression that is off (e.g. --quant-method without
    --bits)."""
    idle = []
    for kind in ("prune", "quantize", "lowrank"):
        spec = registry.KINDS[kind]
        if spec.field is not None and spec.field in given and not config.uses(kind):
            idle.append("--" + spec.field.replace("_", "-"))
    if not config.uses("quantize"):
        idle += [f"--{k.replace('_', '-')}" for k in ("asymmetric", "act_order") if given.get(k)]
    if "sparsity_allocation" in given and not config.uses("prune"):
        idle.append("--sparsity-allocation")
    if "bits_allocation" in given and not config.uses("quantize"):
        idle.append("--bits-allocation")
    if "rank_allocation" in given and not config.uses("lowrank"):
        idle.append("--rank-allocation")
    if config.sparsity_allocation == "uniform":
        idle += [_flag(k) for k in ("owl_lambda", "owl_m") if k in given]
    for method, knob in registry.knobs():
        if knob.field in given and not registry.acting_knob(config, method):
            idle.append(_flag(knob.field))
    return " ".join(idle)


def _why(idle: str) -> str:
    needs = {
        "--sparsity-method": "--sparsity above 0 or an N:M --sparsity-pattern",
        "--quant-method": "--bits",
        "--lowrank-method": "--rank",
        "--asymmetric": "--bits",
        "--act-order": "--bits with --quant-method gptq",
        "--sparsity-allocation": "--sparsity above 0",
        "--bits-allocation": "--bits",
        "--rank-allocation": "--rank",
        "--owl-lambda": "--sparsity-allocation owl",
        "--owl-m": "--sparsity-allocation owl",
    }
    for method, knob in registry.knobs():
        spec = registry.KINDS[method.kind]
        picks = f"{_flag(spec.field)} {method.name}" if spec.field else f"the {method.label} method"
        needs[_flag(knob.field)] = picks
    return "; ".join(f"{flag} needs {needs[flag]}" for flag in idle.split())


def in_flags(message: str) -> str:
    """A config error in the command line's words: field names as flags (``act_order`` ->
    ``--act-order``, ``bits=4`` -> ``--bits 4``), and no mention of ``None`` (the API's "off",
    which a flag expresses by being left out)."""
    for field in sorted(set(config_fields()) - set(LAYER_FIELDS), key=len, reverse=True):
        flag = "--" + field.replace("_", "-")
        message = re.sub(rf"(?<![\w-]){field}=(\S+)", rf"{flag} \1", message)
        message = re.sub(rf"(?<![\w-]){field}(?![\w-])", flag, message)
    message = re.sub(r" \(or None[^)]*\)", "", message)
    return re.sub(r",? or None( for [^;:,]*)?", "", message)
