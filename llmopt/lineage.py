"""Lineage: which steps a stored recipe runs, which stored run it extends, what a step adds.

The compression steps are the method registry's kinds, in its order (``registry.ORDER``:
low-rank → prune → quantize → kernels), then 16-bit precision; a trained run's task comes last.
Each step owns config fields: its kind's method field, the knobs its kind bounds
(``Kind.ranges``), the fields its methods' sweeps set, its methods' knobs (``Method.knobs``)
and the few listed in ``KIND_FIELDS``. A kind, a method or a method's knob added to the
registry therefore shows up here without an edit.

Step names are stored with each run (``Run.steps``) and shown in Compare's filter, so they keep
the names older versions wrote ("low-rank", "int8 kernels"); ``canonical_step`` maps a kind's
registry name to its stored one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass

from llmopt import tasks
from llmopt.compression import registry
from llmopt.errors import LlmoptError

TRAINING = "training"  # the config key of a trained run: its task's recipe
# The stored name of a kind's step where it differs from the kind's name (stores hold these).
STEP_NAMES = {"lowrank": "low-rank", "kernel": "int8 kernels"}
# Config fields of a kind beyond its method field, its ranges' knobs and its methods' sweeps.
KIND_FIELDS = {
    "prune": (
        "sparsity_pattern",
        "sparsity_scope",
        "sparsity_allocation",
        "owl_lambda",
        "owl_m",
        "calibration",
        "calibration_samples",
    ),
    "quantize": ("group_size", "act_order", "asymmetric"),
    "kernel": ("int8_dynamic",),
}
PRECISION_STEP = "16-bit"  # weights and kernels in bf16/fp16: after every kind's step


@dataclass(frozen=True)
class Step:
    """One lineage step: its stored name, the config fields that set it, whether a config
    runs it."""

    name: str
    fields: tuple[str, ...]
    active: Callable[[dict], bool]


def canonical_step(name: str) -> str:
    """The stored step name of ``name``, which may be a registry kind ("lowrank" → "low-rank")."""
    return STEP_NAMES.get(name, name)


def steps() -> list[Step]:
    """The compression steps in the order compression applies them (read from the registry at
    each call, so a registered kind or method is included)."""
    out = [_kind_step(kind) for kind in (registry.KINDS[k] for k in registry.ORDER)]
    out.append(Step(PRECISION_STEP, ("precision",), _sixteen_bit))
    return out


def step_fields() -> dict[str, tuple[str, ...]]:
    """{step name: config fields that set it}, in order (the old ``STEP_FIELDS``)."""
    return {s.name: s.fields for s in steps()}


def _kind_step(kind) -> Step:
    fields = [kind.field, *kind.ranges, *KIND_FIELDS.get(kind.name, ())]
    for method in registry.methods(kind.name).values():
        for setting in method.sweep.values():
            fields.extend(setting)
        fields.extend(knob.field for knob in method.knobs)
    names = tuple(dict.fromkeys(f for f in fields if f))

    def active(config: dict) -> bool:
        try:  # with per-layer rules: when any layer's settings run it
            return any(kind.active(v) for v in _variants(_as_config(config)))
        except (LlmoptError, TypeError, ValueError, AttributeError):
            # recorded by another llmopt version: active when a knob is off its default
            return _changed(config, [f for f in names if f != kind.field])

    return Step(canonical_step(kind.name), names, active)


def _variants(built) -> list:
    """The uniform configs a built config applies (``CompressionConfig.variants``): itself
    when it has no per-layer rules."""
    if built.__dict__.get("layers") or built.__dict__.get("skip"):
        return built.variants()
    return [built]


def _sixteen_bit(config: dict) -> bool:
    return (config.get("precision") or "fp32") != "fp32"


def _defaults() -> dict:
    from llmopt.compression import CompressionConfig

    return CompressionConfig().to_dict()


def _changed(config: dict, fields: list[str]) -> bool:
    off = _defaults()
    return any(k in config and config[k] not in (None, False, off.get(k)) for k in fields)


def _as_config(config: dict):
    """A ``CompressionConfig`` of a stored config, for the kinds' predicates: validated when
    it is valid here; else (another version's recipe, or fields a newer kind reads) its
    values set as they are, unknown ones included. Built once per distinct config."""
    return _built(json.dumps(config, sort_keys=True, default=str))


@functools.lru_cache(maxsize=4096)
def _built(text: str):
    from llmopt.compression import CompressionConfig

    config = json.loads(text)

    known = {f.name for f in dataclasses.fields(CompressionConfig)}
    try:
        built = CompressionConfig.from_dict({k: v for k, v in config.items() if k in known})
    except LlmoptError:
        built = object.__new__(CompressionConfig)
        for key, value in {"layers": (), "skip": (), **_defaults()}.items():
            object.__setattr__(built, key, value)
    for key, value in config.items():
        if key not in known or built.__dict__.get(key) != value:
            object.__setattr__(built, key, value)
    return built


def config_steps(config: dict | None) -> list[str]:
    """The steps a config runs, in the order compression applies them; a trained run's task
    comes last (e.g. ["prune", "recover"])."""
    if not config:
        return []
    compression = {k: v for k, v in config.items() if k != TRAINING}
    names = [s.name for s in steps() if s.active(compression)]
    task = (config.get(TRAINING) or {}).get("task")
    if task:
        trained = tasks.for_step(task)
        names.append(trained.lineage if trained else task)
    return names


def step_order() -> list[str]:
    """Every step name in lineage order: compression steps, then training tasks."""
    return [*step_fields(), *dict.fromkeys(t.lineage for t in tasks.training().values())]


def describe_training(training: dict) -> str:
    """A short description of a training recipe, e.g. 'recovered by fine-tuning, 1 epoch'
    (the task registry describes its own recipes)."""
    return tasks.describe(training)


def describe_config(config: dict | None) -> str:
    """A short description of a stored config (as ``CompressionConfig.describe``)."""
    if not config:
        return "no compression"
    from llmopt.compression import CompressionConfig

    if config.get(TRAINING):
        rest = {k: v for k, v in config.items() if k != TRAINING}
        trained = describe_training(config[TRAINING])
        compressed = describe_config(rest) if rest else ""
        return trained if not rest or compressed == "no compression" else f"{compressed}, {trained}"
    try:
        return CompressionConfig.from_dict(config).describe()
    except LlmoptError:  # recorded by another llmopt version: list what it set
        return ", ".join(f"{k}={v}" for k, v in sorted(config.items()) if v not in (None, False))


def is_ancestor(older: dict | None, newer: dict | None) -> bool:
    """Whether ``older`` is ``newer`` stopped after a leading part of its steps (same settings
    for those steps and everything else): the model ``newer`` compresses passes through
    ``older``'s model on the way."""
    if not older or not newer:
        return False
    steps_old, steps_new = config_steps(older), config_steps(newer)
    if not 0 < len(steps_old) < len(steps_new) or steps_new[: len(steps_old)] != steps_old:
        return False
    fields = step_fields()
    step_keys = {k for keys in fields.values() for k in keys}
    others = (set(older) | set(newer)) - step_keys  # include_head, and fields llmopt adds later
    shared = [k for s in steps_old for k in fields.get(s, ())]
    return all(older.get(k) == newer.get(k) for k in [*others, *shared])


def infer_parent(store, base_id: int, model_fp: str, rows_fp: str, config: dict | None) -> int:
    """The stored variant of this model and rows that ``config`` extends by the most steps
    (the latest one on a tie), else the base run."""
    best, best_steps = base_id, 0
    for run in store.runs(model_fingerprint=model_fp, rows_fingerprint=rows_fp, kind="variant"):
        if is_ancestor(run.config, config) and len(config_steps(run.config)) >= best_steps:
            best, best_steps = run.id, len(config_steps(run.config))
    return best


def step_change(parent_config: dict | None, config: dict | None) -> str:
    """What a run adds to its parent's recipe, e.g. '+ 4-bit weights (group 64)'."""
    if not parent_config or not config:
        return describe_config(config)
    before = set(config_steps(parent_config))
    added = [s for s in config_steps(config) if s not in before]
    if not added:
        return describe_config(config)
    if config.get(TRAINING) and added[-1] == config_steps(config)[-1]:
        return "+ " + describe_training(config[TRAINING])  # a training run adds its task
    fields = step_fields()
    step_keys = {k for keys in fields.values() for k in keys}
    only = _defaults()  # every step off ...
    only.update({k: v for k, v in config.items() if k not in step_keys})
    only.update({k: config.get(k) for s in added for k in fields.get(s, ())})  # ... but these
    return "+ " + describe_config(only)
