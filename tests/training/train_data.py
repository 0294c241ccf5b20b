"""Data and settings shared by the training tests (a module: ``conftest`` names clash)."""

from __future__ import annotations

import numpy as np
from tinymodels import make_class_texts

from llmopt.data import TextDataset

LR = 1e-2  # a tiny random model learns its keyword task in a few dozen steps at this rate


def class_dataset(n: int, k: int, seed: int = 0, split: str = "train") -> TextDataset:
    """``n`` texts of ``k`` classes, each class marked by its own keyword."""
    texts, labels = make_class_texts(n, k, seed)
    names = sorted(set(labels))
    return TextDataset(
        texts, np.array([names.index(y) for y in labels]), names, name=f"tiny{k}", split=split
    )
