"""The bad-input matrices' summary line says what became of every case."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from matrixsummary import matrix_line

pytestmark = pytest.mark.smoke


def _report(nodeid, when="call"):
    return SimpleNamespace(nodeid=nodeid, when=when)


def test_deselected_cases_are_not_reported_as_not_passing():
    """The old line was ``m: 3 cases, 0 passed`` when ``-m`` had deselected all three."""
    ids = ["t::a", "t::b", "t::c"]
    stats = {"deselected": [SimpleNamespace(nodeid=i) for i in ids]}
    assert matrix_line("m", ids, stats) == "m: 3 cases, 0 passed, 3 deselected"


def test_every_outcome_is_counted_once():
    ids = ["t::a", "t::b", "t::c", "t::d", "t::e"]
    stats = {
        "passed": [_report("t::a", "setup"), _report("t::a"), _report("t::b", "setup")],
        "failed": [_report("t::b")],
        "skipped": [_report("t::c", "setup")],
        "deselected": [SimpleNamespace(nodeid="t::d")],
    }
    line = matrix_line("m", ids, stats)
    assert line == "m: 5 cases, 1 passed, 1 failed, 1 skipped, 1 deselected"
