"""The first start's progress text: the time left comes from steps measured on this machine.

The old text promised "about a minute" and the first start took 6.6 minutes on a busy machine;
the old bar said nothing about the time left at all, so these tests fail on it.
"""

from __future__ import annotations

import re
import types

import numpy as np

import llmopt
from llmopt import head


class _Clock:
    """A machine on which each call to the clock is 2 s later than the one before."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 2.0
        return self.now


def test_time_left_is_the_measured_pace_and_says_so():
    assert head.time_left(32, 320, 10.0, batches=2) == ""  # not measured enough yet
    assert head.time_left(320, 320, 100.0, batches=10) == ""  # nothing left
    text = head.time_left(96, 960, 30.0, batches=3)
    assert "about 4 min 30 s left" in text  # 864 texts at 96 per 30 s
    assert "measured here" in text and "96 texts in 30 s" in text


def test_head_training_reports_the_time_left_from_measured_batches(tiny_bert_dir, monkeypatch):
    from tinymodels import make_texts

    texts, labels = make_texts(160, seed=21)  # five batches of 32, a head not cached yet
    train = llmopt.TextDataset(texts, np.array(labels), ["LABEL_0", "LABEL_1"], name="eta")
    monkeypatch.setattr(head, "time", types.SimpleNamespace(monotonic=_Clock().monotonic))
    seen: list[tuple[float, str]] = []
    llmopt.load_model(
        f"encoder:{tiny_bert_dir}", train_data=train, progress=lambda f, m: seen.append((f, m))
    )
    encoding = [m for _, m in seen if m.startswith("encoding training texts")]
    assert len(encoding) == 5
    assert not any("left" in m for m in encoding[:2])  # two batches: no estimate yet
    # After the third batch: 96 texts took 3 clock steps of 2 s; 64 texts are left.
    assert re.search(r"96/160 · about 4 s left at the pace measured here so far", encoding[2])
    assert "left" not in encoding[-1]  # all encoded
    assert any(m.startswith("fitting the classification head") for _, m in seen)


def test_first_run_text_promises_no_fixed_time():
    from dashboard.sidebar import FIRST_RUN

    assert "minute" not in FIRST_RUN and "depends on the machine" in FIRST_RUN
