"""The printed confusion matrix stays narrow with long class names."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

NAMES = [f"customer support tickets about a long-winded topic number {c}" for c in range(7)]


class _Rows(list):
    name, split = "long.csv", "test"

    def dropped_note(self) -> None:
        return None


def _result(names, confusion):
    return SimpleNamespace(
        label_names=names,
        confusion=confusion,
        metrics={"accuracy": 0.5},
        size_bytes=1e6,
        params_total=10,
        params_nonzero=10,
        latency_ms_per_sample=1.0,
        n_truncated=0,
        notes=[],
    )


def test_long_class_names_are_numbered_cut_and_listed_in_a_legend():
    """Each column was as wide as the longest class name: seven 60-character names printed
    matrix lines of ~500 characters. Now long names number the columns, rows show the number
    and the name cut with an ellipsis, and a legend lists the full names. On the old code the
    matrix lines were far wider than 100 characters."""
    from llmopt.cli.evaluate import format_results

    confusion = np.arange(49).reshape(7, 7) * 3
    text = format_results("m", _Rows(range(10)), _result(NAMES, confusion))
    matrix = text[text.index("confusion matrix") :].splitlines()
    table = matrix[1 : 2 + len(NAMES)]
    assert max(len(line) for line in table) <= 80
    assert table[0].split() == [f"[{i}]" for i in range(1, 8)]
    assert table[1].startswith("[1] customer su…") and table[1].split()[-1] == "18"
    legend = matrix.index("classes:")
    assert [line.strip() for line in matrix[legend + 1 : legend + 1 + len(NAMES)]] == [
        f"[{i + 1}] {n}" for i, n in enumerate(NAMES)
    ]

    short = format_results("m", _Rows(range(10)), _result(["neg", "pos"], np.eye(2) * 5))
    lines = short[short.index("confusion matrix") :].splitlines()
    assert lines[1].split() == ["neg", "pos"] and lines[2].split() == ["neg", "5", "0"]
    assert "classes:" not in short  # short names print as they always did
