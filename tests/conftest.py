"""Shared fixtures: tiny random classifiers saved like real checkpoints, and tiny datasets.

Nothing here touches the network: models are built from configs and a tokenizer from a
vocabulary written to a temp dir, then loaded through ``llmopt.load_model`` like any checkpoint.
"""

from __future__ import annotations

import numpy as np
import pytest
from matrixsummary import matrix_line
from tinymodels import make_texts, make_tiny


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """{family: directory} of saved tiny random binary classifiers."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {f: make_tiny(f, root / f) for f in ("bert", "distilbert", "gpt2")}


@pytest.fixture(scope="session")
def tiny_bert_dir(tiny_dirs):
    return tiny_dirs["bert"]


@pytest.fixture()
def tiny_dataset():
    from llmopt.data import TextDataset

    texts, labels = make_texts(40)
    return TextDataset(texts, np.array(labels), ["LABEL_0", "LABEL_1"], name="tiny", split="test")


@pytest.fixture()
def tiny_csv(tmp_path):
    """A CSV with columns text,label (labels 'pos'/'neg'), 50 rows."""
    import pandas as pd

    texts, labels = make_texts(50)
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"text": texts, "label": ["pos" if y == 0 else "neg" for y in labels]}).to_csv(
        path, index=False
    )
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """Trained heads go to a per-session temp cache, or to ``$LLMOPT_TEST_HOME`` if set
    (point it at ``~/.cache/llmopt`` to reuse an already prepared bundled model)."""
    import os

    home = os.environ.get("LLMOPT_TEST_HOME") or str(tmp_path_factory.mktemp("llmopt_home"))
    # Runs recorded by tests go to a per-session store, never the user's (even with
    # LLMOPT_TEST_HOME pointing at the real cache).
    store = str(tmp_path_factory.mktemp("experiments") / "experiments.sqlite")
    old = {k: os.environ.get(k) for k in ("LLMOPT_HOME", "LLMOPT_EXPERIMENTS")}
    os.environ["LLMOPT_HOME"] = home
    os.environ["LLMOPT_EXPERIMENTS"] = store
    yield home
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def bundled_model(_isolated_home):
    """The real bundled model (its head is trained once per test home: about a minute)."""
    import llmopt

    return llmopt.load_model("bundled")


# ---------------------------------------------------------------- matrix sizes in the output

_MATRICES: dict[str, list[str]] = {}  # matrix name -> node ids of its cases


# The fast loop, ``pytest -m smoke`` (about a minute): these files' tests, less any that load
# the real model or drive a browser. They cover imports, the CLI's flags and bad inputs, the
# store, statistics, and model and data loading on tiny models.
SMOKE_FILES = {
    "test_imports.py",
    "test_summary_line.py",
    "test_sources.py",
    "test_stats.py",
    "test_data.py",
    "test_estimate.py",
    "test_experiments.py",
    "test_models.py",
    "test_cli_bad_inputs.py",
    "test_compress_config.py",
    "test_registry.py",
}


def pytest_collection_modifyitems(items):
    """Mark the smoke subset; group the cases of every ``@pytest.mark.matrix("name")`` test by
    matrix name."""
    _MATRICES.clear()
    for item in items:
        slow = item.get_closest_marker("integration") or item.get_closest_marker("browser")
        if item.path.name in SMOKE_FILES and not slow:
            item.add_marker(pytest.mark.smoke)
        marker = item.get_closest_marker("matrix")
        if marker is not None:
            _MATRICES.setdefault(marker.args[0], []).append(item.nodeid)


def pytest_terminal_summary(terminalreporter):
    """Print how many cases each bad-input matrix has and what became of them."""
    if not _MATRICES:
        return
    terminalreporter.section("bad-input matrices")
    for name, ids in sorted(_MATRICES.items()):
        terminalreporter.write_line(matrix_line(name, ids, terminalreporter.stats))
