"""Tiny classifiers for the training tests (binary and three classes)."""

from __future__ import annotations

import pytest
from tinymodels import make_tiny


@pytest.fixture(scope="session")
def tiny3_dir(tmp_path_factory):
    """A tiny random BERT with three labels ``category_00..02``."""
    names = {i: f"category_{i:02d}" for i in range(3)}
    return make_tiny("bert", tmp_path_factory.mktemp("tiny3") / "bert", 3, id2label=names)


@pytest.fixture(scope="session")
def tiny2_dir(tmp_path_factory):
    """A tiny random BERT with two labels ``category_00/01``."""
    names = {i: f"category_{i:02d}" for i in range(2)}
    return make_tiny("bert", tmp_path_factory.mktemp("tiny2") / "bert", 2, id2label=names)
