"""A compression method added as one file: the module text, and a fixture-style helper that
writes it into a folder the method package searches (``registry.discover``) and removes it."""

from __future__ import annotations

import contextlib
import sys
import textwrap
from pathlib import Path

MODULE = "filemethod"
NAME = "file-dummy"
TITLE = "Dummy file method: largest weights dropped"
SOURCE = textwrap.dedent(
    f'''
    """A test method in its own file: zero the largest |w| of each row; its own picture."""

    from llmopt.compression.methods.magnitude import kept, mask_picture, prune_by_scores
    from llmopt.compression.registry import Method, register
    from llmopt.compression.targets import get_weight


    def _apply(ctx, names, _stats):
        scores = {{n: -get_weight(ctx.model.get_submodule(n)).abs() for n in names}}
        prune_by_scores(ctx, names, {{n: s - s.min() for n, s in scores.items()}})


    def _draw(scene):
        import numpy as np

        from llmopt import figures

        fig, _ = mask_picture(scene, scores=np.abs(scene.weight).max() - np.abs(scene.weight))
        fig.update_layout(title={TITLE!r})
        return fig, "the largest weights of each row are dropped"


    METHOD = register(
        Method(
            name={NAME!r},
            kind="prune",
            label="Dummy file method",
            summary="zero the largest weights (a test method in its own file)",
            help="A method a test adds as one file.",
            formula=r"**Dummy file** $-|W|$",
            apply=_apply,
            draw=_draw,
            kept=kept,
            gradual=True,
        )
    )
    '''
)


@contextlib.contextmanager
def method_file(folder: Path):
    """Write the method's file into ``folder``, let the method package search it, discover;
    afterwards unregister the method and forget the folder and the module."""
    import llmopt.compression.methods as package
    from llmopt.compression import registry

    (folder / f"{MODULE}.py").write_text(SOURCE, encoding="utf-8")
    package.__path__.append(str(folder))
    try:
        assert MODULE in registry.discover()
        yield registry.get("prune", NAME)
    finally:
        registry.unregister("prune", NAME)
        package.__path__.remove(str(folder))
        sys.modules.pop(f"{package.__name__}.{MODULE}", None)
