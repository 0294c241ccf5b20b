"""Tiny classifiers and labelled texts for the training tests (binary and three classes)."""

from __future__ import annotations

import numpy as np
import pytest
from tinymodels import make_class_texts, make_tiny

from llmopt.data import TextDataset

LR = 1e-2  # a tiny random model learns its keyword task in a few dozen steps at this rate


def class_dataset(n: int, k: int, seed: int = 0, split: str = "train") -> TextDataset:
    """``n`` texts of ``k`` classes, each class marked by its own keyword."""
    texts, labels = make_class_texts(n, k, seed)
    names = sorted(set(labels))
    return TextDataset(
        texts, np.array([names.index(y) for y in labels]), names, name=f"tiny{k}", split=split
    )


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
