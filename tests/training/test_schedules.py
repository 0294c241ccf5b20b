"""Sparsity schedules equal TF-MOT's published formulas (pruning_schedule.py) step by step."""

from __future__ import annotations

import pytest

from llmopt.errors import LlmoptError
from llmopt.training.schedules import (
    ConstantSparsity,
    PolynomialDecay,
    default_schedule,
    schedule_points,
    should_prune,
)


def tfmot_polynomial(step, initial, final, begin, end, power):
    """TF-MOT PolynomialDecay.__call__, transcribed: p clipped to [0, 1]."""
    p = min(1.0, max(0.0, (step - begin) / (end - begin)))
    return (initial - final) * (1 - p) ** power + final


@pytest.mark.parametrize("step", [0, 10, 37, 50, 99, 100, 150])
def test_polynomial_equals_tfmot_formula(step):
    s = PolynomialDecay(0.0, 0.8, begin_step=10, end_step=110, power=3, frequency=5)
    assert s.sparsity(step) == pytest.approx(tfmot_polynomial(step, 0.0, 0.8, 10, 110, 3))


def test_polynomial_known_values():
    # TF-MOT's docstring example: from 50% to 80% over [0, 100] with power 3
    s = PolynomialDecay(0.5, 0.8, begin_step=0, end_step=100, frequency=10)
    assert s.sparsity(0) == pytest.approx(0.5)
    assert s.sparsity(50) == pytest.approx(0.8 - 0.3 * 0.5**3)  # 0.7625
    assert s.sparsity(100) == pytest.approx(0.8)
    assert s.sparsity(1000) == pytest.approx(0.8)  # held after end_step
    assert s(20) == (True, pytest.approx(0.8 - 0.3 * 0.8**3))
    assert s(25)[0] is False  # not a frequency tick
    assert s(110)[0] is False  # after end_step


def test_should_prune_matches_tfmot_rules():
    assert [t for t in range(30) if should_prune(t, 5, 20, 5)] == [5, 10, 15, 20]
    assert [t for t in range(12) if should_prune(t, 2, -1, 3)] == [2, 5, 8, 11]  # no end


def test_constant_prunes_to_its_target_on_its_ticks():
    s = ConstantSparsity(0.6, begin_step=4, end_step=-1, frequency=4)
    assert [s(t) for t in (3, 4, 6, 8)] == [(False, 0.6), (True, 0.6), (False, 0.6), (True, 0.6)]
    points = schedule_points(s, 10)
    assert [p["sparsity"] for p in points] == [0.0] * 4 + [0.6] * 6
    assert s.last_step(10) == 8


def test_schedule_points_are_a_staircase_of_pruning_steps():
    s = PolynomialDecay(0.0, 0.7, begin_step=0, end_step=8, frequency=4)
    points = schedule_points(s, 12)
    expected = [tfmot_polynomial(t, 0.0, 0.7, 0, 8, 3) for t in (0, 4, 8)]
    assert [p["sparsity"] for p in points] == pytest.approx(
        [expected[0]] * 4 + [expected[1]] * 4 + [expected[2]] * 4
    )
    assert s.last_step(12) == 8


@pytest.mark.parametrize("kind", ["polynomial", "constant"])
def test_default_schedule_reaches_the_final_sparsity(kind):
    s = default_schedule(kind, 0.7, 250)
    points = schedule_points(s, 250)
    assert points[-1]["sparsity"] == pytest.approx(0.7)
    ticks = sum(should_prune(t, s.begin_step, s.end_step, s.frequency) for t in range(250))
    assert 5 <= ticks <= 21  # a handful of pruning steps, not one per step
    if kind == "polynomial":  # the ramp ends within the run, leaving steps to recover
        assert s.end_step < 0.8 * 250 and points[s.end_step]["sparsity"] == pytest.approx(0.7)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PolynomialDecay(0.0, 1.0, 0, 10),
        lambda: PolynomialDecay(0.0, 0.5, 10, 5),
        lambda: PolynomialDecay(0.0, 0.5, 0, -1),
        lambda: PolynomialDecay(0.0, 0.5, 0, 10, frequency=0),
        lambda: ConstantSparsity(-0.1),
        lambda: ConstantSparsity(0.5, begin_step=-1),
        lambda: default_schedule("cubic", 0.5, 100),
    ],
)
def test_bad_schedules_are_refused_with_a_message(make):
    with pytest.raises(LlmoptError):
        make()
