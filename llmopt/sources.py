"""What kind of model a ``load_model`` source string names: the one parser of that syntax.

``"bundled"``; ``"encoder:SRC"`` (a classifier head trained on an encoder); a path on this
machine (it exists, or starts with ``.``, ``/`` or ``~``); otherwise a Hugging Face hub id.
The loader and the dashboard's model picker both read a source through ``model_source``.
No heavy imports: the dashboard's picker calls it on every run.
"""

from __future__ import annotations

import os

BUNDLED, ENCODER, LOCAL, HUB = "bundled", "encoder", "local", "hub"
ENCODER_PREFIX = "encoder:"


def model_source(source: str) -> tuple[str, str]:
    """(kind, reference) of a model source: ``("bundled", "")``, ``("encoder", SRC)`` with SRC
    as written after ``encoder:``, ``("local", path)`` or ``("hub", id)``.

    The source is stripped of surrounding white space first; validation (does the folder hold a
    model, is the hub id well formed) is the loader's.
    """
    source = str(source).strip()
    if source == "bundled":
        return BUNDLED, ""
    if source.startswith(ENCODER_PREFIX):
        return ENCODER, source[len(ENCODER_PREFIX) :]
    if is_local(source):
        return LOCAL, source
    return HUB, source


def is_local(source: str) -> bool:
    """Whether ``source`` names a path on this machine rather than a hub id (a dangling link
    counts: the loader then says what is wrong with it)."""
    return os.path.lexists(os.path.expanduser(source)) or source.startswith((".", "/", "~"))
