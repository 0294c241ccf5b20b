"""Imports cost what they use: the public names of ``llmopt`` load on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "sklearn", "pandas")


def _loaded_after(code: str) -> list[str]:
    """The heavy libraries in sys.modules after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint('HEAVY:', *(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return out.stdout.rsplit("HEAVY:", 1)[1].split()


@pytest.mark.smoke
@pytest.mark.parametrize(
    "code",
    [
        "import llmopt.errors",
        "import llmopt",
        "from llmopt.cli import build_parser; build_parser()",
        "from llmopt.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    ],
)
def test_light_imports_load_no_heavy_library(code):
    """Failed before the names were lazy: ``import llmopt.errors`` ran ``llmopt/__init__``,
    which imported compression (torch), data (pandas) and evaluation (scikit-learn)."""
    assert _loaded_after(code) == []


@pytest.mark.smoke
def test_public_names_still_import_and_are_listed():
    import llmopt
    from llmopt import compare, compress, evaluate, fidelity
    from llmopt.compression import compress as engine_compress

    assert compress is engine_compress
    assert fidelity is compare and callable(evaluate)
    assert set(llmopt.__all__) <= set(dir(llmopt))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        llmopt.nothing  # noqa: B018 - the attribute access is the test
