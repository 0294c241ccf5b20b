"""A new knob of a new method, added as a real one is: one config field (the line
``foo: float = 0.25`` in ``CompressionConfig``) and a method file declaring it
(``knobs=(Knob("foo", ...),)``). The field is added by a subclass of the config put where the
config is read, for the length of a ``with`` block."""

from __future__ import annotations

import contextlib
import dataclasses
import sys

FIELD = "foo"
DEFAULT = 0.25
METHOD = "knobbed"
LABEL = "Foo strength"


@contextlib.contextmanager
def dummy_knob():
    """Yield the registered method; afterwards the config and the registry are as before."""
    from llmopt import lineage
    from llmopt.compression import config as config_module
    from llmopt.compression import registry

    base = config_module.CompressionConfig
    grown = dataclasses.make_dataclass(
        "CompressionConfig", [(FIELD, float, DEFAULT)], bases=(base,), frozen=True
    )
    grown.__module__, grown.__doc__ = base.__module__, base.__doc__
    holders = [
        m for m in list(sys.modules.values()) if vars(m).get("CompressionConfig") is base
    ]  # every module that imported the config by name reads the grown one
    magnitude = registry.get("prune", "magnitude")
    method = registry.Method(
        name=METHOD,
        kind="prune",
        label="Knobbed",
        summary="magnitude pruning with a foo knob (a test method)",
        help="A method a test adds with a knob of its own.",
        formula=r"**Knobbed** $|W|$",
        apply=magnitude.apply,
        kept=magnitude.kept,
        picture="mask",
        knobs=(registry.Knob(FIELD, LABEL, "How hard foo pushes.", 0.0, 1.0, 0.05),),
    )
    for module in holders:
        module.CompressionConfig = grown
    lineage._built.cache_clear()
    registry.register(method)
    try:
        yield method
    finally:
        registry.unregister("prune", METHOD)
        # modules first imported inside the block (a page's imports) took the grown class too
        for module in list(sys.modules.values()):
            if module is not None and vars(module).get("CompressionConfig") is grown:
                module.CompressionConfig = base
        lineage._built.cache_clear()
