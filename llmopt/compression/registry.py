"""The one registry of compression methods: what each is, what it needs, and how it runs.

Every place that offers a method — config validation, the CLI's choices, the dashboard's
selectors and explainers, gradual pruning, the sweep's methods, the size estimate — reads it
from here, so a new method is one file in ``llmopt/compression/methods/`` that calls
``register``: every module of that package is imported (``discover``), there is no list to edit,
and the file holds the method's explainer picture too (``Method.draw``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmopt.errors import LlmoptError


@dataclass(frozen=True)
class Kind:
    """A family of methods, and the config field that picks one of them."""

    name: str  # "prune", "quantize", "lowrank", "kernel"
    title: str  # heading in the app
    field: str | None  # CompressionConfig field naming the method (None: picked by predicate)
    active: Callable[[Any], bool]  # whether a config uses this kind at all
    default: str  # the method a config names when the user picks none
    ranges: dict = field(default_factory=dict)  # knob -> (low, high) that the kind accepts


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "lowrank",
            "Low rank",
            "lowrank_method",
            lambda c: c.rank is not None,
            "svd",
            {"rank": (1, None)},
        ),
        Kind(
            "prune",
            "Pruning",
            "sparsity_method",
            lambda c: c.prunes,
            "magnitude",
            {"sparsity": (0.0, 1.0)},
        ),
        Kind(
            "quantize",
            "Quantization",
            "quant_method",
            lambda c: c.bits is not None,
            "rtn",
            {"bits": (2, 8)},
        ),
        Kind(
            "kernel",
            "Kernels",
            None,
            lambda c: c.int8_dynamic,
            "int8",
            {"smooth_alpha": (0.0, 1.0)},
        ),
    )
}
ORDER = tuple(KINDS)  # applied in this order: low-rank -> prune -> quantize -> kernels


@dataclass(frozen=True)
class Knob:
    """A setting a method adds: the ``CompressionConfig`` field of that name, which acts only
    while the method runs. Its type is the field's default's (float, int or bool); the config
    checks the range, the CLI adds ``--field-name``, the Compress page a control with this label
    and help, the lineage puts the field in the method's step, and recipes reset it to its
    default while the method is not selected."""

    field: str  # a CompressionConfig field
    label: str  # the control's label
    help: str  # one or two sentences: the control's tooltip and the flag's help
    low: float | None = None  # allowed range, both ends included (None: unbounded)
    high: float | None = None
    step: float | None = None  # the control's step (default: a twentieth of the range)

    def check(self, value, default) -> Any:
        """``value`` as the field's type, or an ``LlmoptError`` naming the allowed values."""
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise LlmoptError(f"{self.field} must be true or false, got {value!r}")
            return value
        whole = isinstance(default, int)
        ok = not isinstance(value, bool) and isinstance(value, int if whole else (int, float))
        if ok and not whole:
            ok = value == value  # not NaN
        low = -float("inf") if self.low is None else self.low
        high = float("inf") if self.high is None else self.high
        if not ok or not low <= value <= high:
            what = "a whole number" if whole else "a number"
            span = f"in [{_num(self.low)}, {_num(self.high)}]"
            raise LlmoptError(f"{self.field} must be {what} {span} ({self.label}), got {value!r}")
        return value if whole else float(value)


def _num(x) -> str:
    return "…" if x is None else f"{x:g}"


@dataclass(frozen=True)
class Method:
    """One compression method.

    ``apply(ctx, names, stats)`` changes the weight matrices ``names`` of the model copy in
    ``ctx`` (a ``llmopt.compression.engine.Context``); ``stats`` maps each name to its
    calibration ``ActivationStats`` when the method asks for ``stats``, else it is None.
    """

    name: str  # the value users type and configs hold, e.g. "gptq"
    kind: str  # a key of KINDS
    label: str  # short name for selectors and legends
    summary: str  # one line: what it does (CLI help, selector help)
    help: str  # a paragraph for the app's tooltip
    formula: str  # markdown with LaTeX: the explainer's text
    apply: Callable[..., None]
    stats: tuple[str, ...] = ()  # calibration statistics it needs ("norms", "hessian", "absmax")
    picture: str | None = None  # name of its explainer picture (methods may share one)
    draw: Callable[[Any], tuple[Any, str]] | None = None  # explain.Scene -> (figure, caption)
    selects: Callable[[Any], bool] | None = None  # kinds without a field: does a config pick it
    sweep: dict = field(default_factory=dict)  # sweep method label -> config fields it sets
    kept: Callable[[int, int, Any], int] | None = None  # prune: weights a (rows, cols) keeps
    reference: str = ""  # the paper
    position: int = 100  # where it is listed among its kind (lower first; new methods last)
    gradual: bool = False  # prune: its mask can be re-ranked while fine-tuning (gradual pruning)
    knobs: tuple[Knob, ...] = ()  # the config fields only this method reads (see Knob)

    @property
    def needs_calibration(self) -> bool:
        """Whether it measures activations on calibration texts."""
        return bool(self.stats)


@dataclass(frozen=True)
class Allocation:
    """A non-uniform allocation of the pruning budget over the transformer blocks (the config's
    ``sparsity_allocation``; "uniform", the default, is none). ``allocate(scores, config)``
    takes each block's Wanda score matrices ``|W|·‖X‖`` (on the uncompressed model) and returns
    (each block's sparsity, averaging ``config.sparsity``; a per-block figure for its note)."""

    name: str
    label: str
    summary: str
    allocate: Callable[[list, Any], tuple[list[float], list[float]]]
    reference: str = ""


_METHODS: dict[str, dict[str, Method]] = {k: {} for k in KINDS}
_ALLOCATIONS: dict[str, Allocation] = {}


def register_allocation(allocation: Allocation) -> Allocation:
    """Add a sparsity allocation (discovered with the methods, from their package)."""
    _ALLOCATIONS[allocation.name] = allocation
    return allocation


def allocations() -> dict[str, Allocation]:
    """{name: Allocation} of the registered non-uniform sparsity allocations."""
    _load()
    return dict(_ALLOCATIONS)


_loaded = False


def register(method: Method) -> Method:
    """Add ``method`` (a later registration with the same name replaces the earlier one)."""
    if method.kind not in KINDS:
        raise ValueError(f"unknown method kind {method.kind!r}; kinds: {', '.join(KINDS)}")
    _METHODS[method.kind][method.name] = method
    return method


def unregister(kind: str, name: str) -> None:
    """Remove a method (tests that register one of their own clean up with this)."""
    _METHODS[kind].pop(name, None)


def discover(package: str = "llmopt.compression.methods") -> list[str]:
    """Import every module of ``package`` (each registers its methods); returns their names.

    Modules already imported are not run again; a folder appended to the package's
    ``__path__`` (a plugin folder, a test's temporary one) is searched as well.
    """
    pkg = importlib.import_module(package)
    found = sorted(info.name for info in pkgutil.iter_modules(pkg.__path__))
    for name in found:
        importlib.import_module(f"{package}.{name}")
    return found


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        discover()


def methods(kind: str) -> dict[str, Method]:
    """{name: Method} of one kind, ordered by ``position`` (ties: registration order)."""
    _load()
    ordered = sorted(_METHODS[kind].values(), key=lambda m: m.position)  # stable: then by age
    return {m.name: m for m in ordered}


def names(kind: str) -> list[str]:
    """The method names of one kind (the CLI's choices, the selectors' options)."""
    return list(methods(kind))


def get(kind: str, name: str) -> Method:
    """One method by kind and name.

    Raises:
        LlmoptError: an unknown name, listing the known ones.
    """
    known = methods(kind)
    if not isinstance(name, str) or name not in known:
        field_name = KINDS[kind].field or kind
        raise LlmoptError(
            f"{field_name} {name!r} is unknown; allowed: {', '.join(known) or '(none)'}"
        )
    return known[name]


def selected(config, kind: str) -> Method | None:
    """The method of ``kind`` that ``config`` runs, or None when that kind is off (in every
    layer: a config with per-layer rules runs it where any of its ``variants`` does)."""
    if getattr(config, "layers", None) or getattr(config, "skip", None):
        found = (selected(v, kind) for v in config.variants())
        return next((m for m in found if m is not None), None)
    spec = KINDS[kind]
    if not spec.active(config):
        return None
    if spec.field is not None:
        return get(kind, getattr(config, spec.field))
    chosen = [m for m in methods(kind).values() if m.selects is not None and m.selects(config)]
    return chosen[-1] if chosen else get(kind, spec.default)


def active(config) -> list[Method]:
    """The methods ``config`` runs, in the order they are applied."""
    return [m for k in ORDER if (m := selected(config, k)) is not None]


def needs_calibration(config) -> bool:
    """Whether compressing with ``config`` needs calibration texts (the training split): a
    calibrated method, a non-uniform sparsity allocation (it weighs by activations), or a
    sensitivity bits allocation (it measures on validation rows of the split)."""
    allocated = getattr(config, "sparsity_allocation", "uniform") != "uniform"
    measured = getattr(config, "bits_allocation", "uniform") != "uniform"
    return (
        any(m.needs_calibration for m in active(config))
        or (allocated and selected(config, "prune") is not None)
        or (measured and selected(config, "quantize") is not None)
    )


def gradual_methods() -> list[str]:
    """The pruning methods gradual pruning can re-rank with while it fine-tunes."""
    return [m.name for m in methods("prune").values() if m.gradual]


def picture(method: Method) -> Callable[[Any], tuple[Any, str]] | None:
    """The explainer picture of ``method``: its own ``draw``, else the one of a method sharing
    its picture name, else the first picture of its kind (None when its kind has none)."""
    if method.draw is not None:
        return method.draw
    same_kind = list(methods(method.kind).values())
    for m in [*all_methods(), *same_kind]:
        if m.draw is not None and m.picture == method.picture:
            return m.draw
    return next((m.draw for m in same_kind if m.draw is not None), None)


def knobs(kind: str | None = None) -> list[tuple[Method, Knob]]:
    """Every declared knob with the method declaring it (of one kind, or of all kinds)."""
    found = all_methods() if kind is None else list(methods(kind).values())
    return [(m, k) for m in found for k in m.knobs]


def acting_knob(config, method: Method) -> bool:
    """Whether ``method`` runs under ``config``, so its knobs act."""
    return selected(config, method.kind) is method


def all_methods() -> list[Method]:
    """Every registered method, kind by kind in application order."""
    return [m for k in ORDER for m in methods(k).values()]
