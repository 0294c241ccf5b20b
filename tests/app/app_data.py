"""Data and checks shared by the dashboard tests (a module, since ``conftest`` names clash)."""

from __future__ import annotations

import base64
import csv
import json
import time
from pathlib import Path

import numpy as np
from tinymodels import WORDS

KEYWORDS = WORDS[:24]  # one per class: the tiny vocabulary's sentiment words, all distinct
FILLER = WORDS[24:]  # neutral words around the keyword


def class_texts(k: int, per_class: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """``per_class`` short texts per class for ``k`` classes (k <= 24): each text holds its
    class's own keyword twice among neutral words, so a head on a random encoder can learn it."""
    if not 2 <= k <= len(KEYWORDS):
        raise ValueError(f"k must be 2..{len(KEYWORDS)}, got {k}")
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(k * per_class):
        label = i % k
        words = [KEYWORDS[label]] * 2 + list(rng.choice(FILLER, size=rng.integers(2, 9)))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def label_names(k: int) -> list[str]:
    """Readable names for three classes, ``category_<i>`` beyond."""
    return ["negative", "neutral", "positive"] if k == 3 else [f"category_{i}" for i in range(k)]


def write_class_csv(path: Path, k: int, per_class: int = 10, seed: int = 0) -> Path:
    """A CSV ``text,label`` of ``k`` classes (see ``class_texts``); returns ``path``."""
    texts, labels = class_texts(k, per_class, seed)
    names = label_names(k)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([text, names[y]] for text, y in zip(texts, labels, strict=True))
    return path


def make_sensitive_bert(directory: Path, scale: float = 20.0) -> Path:
    """The tiny random BERT with every Linear weight scaled up, so that its transformer layers
    (not only the embeddings) decide: its predictions are mixed and 50 % pruning flips about
    half of them, which a page needs to show flipped examples."""
    import torch
    from tinymodels import make_tiny
    from transformers import BertForSequenceClassification

    make_tiny("bert", directory, seed=0)
    model = BertForSequenceClassification.from_pretrained(directory)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(scale)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def decode(value) -> np.ndarray:
    """A plotly data array: a plain list, or NumPy data sent as base64 ``bdata``."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            dims = shape if isinstance(shape, list) else str(shape).split(",")
            array = array.reshape([int(d) for d in dims])
        return array
    return np.asarray(value)


def spec(element) -> dict:
    """The plotly figure of a ``plotly_chart`` element."""
    return json.loads(element.proto.spec)


def title(fig: dict) -> str:
    t = fig["layout"].get("title", {})
    return t.get("text", "") if isinstance(t, dict) else str(t)


def figures(at) -> list[dict]:
    """Every plotly figure on the page."""
    return [spec(el) for el in at.get("plotly_chart")]


def figure(at, starts: str) -> dict:
    """The one figure whose title starts so."""
    found = [f for f in figures(at) if title(f).startswith(starts)]
    assert len(found) == 1, [title(f) for f in figures(at)]
    return found[0]


def table(at, first_column: str):
    """The one table of the page (not the sidebar's preview) whose first column is named so."""
    found = [d.value for d in at.main.dataframe if d.value.columns[0] == first_column]
    assert len(found) == 1, [list(d.value.columns) for d in at.main.dataframe]
    return found[0]


def shown_text(at) -> str:
    """Everything the page and the sidebar show (every element's content, tables included),
    to check that nothing of a file's contents leaks."""

    def walk(node) -> list[str]:
        parts = [str(node.proto)] if getattr(node, "proto", None) is not None else []
        for child in getattr(node, "children", {}).values():
            parts += walk(child)
        return parts

    return "\n".join(walk(at.main) + walk(at.sidebar))


def messages(at) -> list[str]:
    """The texts of every st.error and st.warning on the page and in the sidebar."""
    return [e.value for e in at.error] + [w.value for w in at.warning]


def assert_readable(message: str) -> None:
    """A message a visitor can act on: one line, no traceback, no command-line flags."""
    assert message.strip(), "empty message"
    assert "\n" not in message.strip(), message
    assert "Traceback" not in message and 'File "' not in message, message
    assert "--" not in message, message  # the command line's flags, not the dashboard's boxes


def wait_for(at, done, limit: float, what: str = "the job"):
    """Rerun the page (as the live view's timer does) until ``done(at)`` or ``limit`` seconds."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        at.run()
        assert not at.exception, at.exception
        if done(at):
            return at
        time.sleep(0.5)
    raise AssertionError(f"{what} did not finish in time")
