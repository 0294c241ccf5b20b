"""Sparsity schedules for pruning during training: TF-MOT's ConstantSparsity and PolynomialDecay.

Both answer, for an optimizer step ``step`` (the number of updates done so far), whether to
prune now and to which sparsity, with the formulas of TensorFlow Model Optimization's
``pruning_schedule.py``: pruning happens at steps ``begin_step, begin_step + frequency, …`` up to
``end_step`` (``-1``: no end, constant schedules only), and the polynomial schedule's sparsity is

    p = min(1, max(0, (step - begin_step) / (end_step - begin_step)))
    sparsity = final + (initial - final) * (1 - p) ** power
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from llmopt.errors import LlmoptError

SCHEDULES = ("polynomial", "constant")


def _check_steps(begin_step: int, end_step: int, frequency: int, allow_no_end: bool) -> None:
    for name, value in (
        ("begin_step", begin_step),
        ("end_step", end_step),
        ("frequency", frequency),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise LlmoptError(f"{name} must be a whole number, got {value!r}")
    if begin_step < 0:
        raise LlmoptError(f"begin_step must be >= 0, got {begin_step}")
    if end_step == -1 and not allow_no_end:
        raise LlmoptError("a polynomial schedule needs an end_step (it cannot be -1)")
    if end_step != -1 and end_step < begin_step:
        raise LlmoptError(f"end_step {end_step} comes before begin_step {begin_step}")
    if frequency <= 0:
        raise LlmoptError(f"frequency must be >= 1 step, got {frequency}")


def _check_sparsity(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise LlmoptError(f"{name} must be a number in [0, 1), got {value!r}")
    if not 0.0 <= value < 1.0:
        raise LlmoptError(f"{name} {value} is outside [0, 1): it is the fraction of weights zeroed")
    return float(value)


def should_prune(step: int, begin_step: int, end_step: int, frequency: int) -> bool:
    """TF-MOT's ``_should_prune_in_step``: in [begin, end] (or no end) and on a frequency tick."""
    in_range = step >= begin_step and (step <= end_step or end_step < 0)
    return in_range and (step - begin_step) % frequency == 0


@dataclass(frozen=True)
class ConstantSparsity:
    """Prune to ``target`` from ``begin_step``, every ``frequency`` steps, up to ``end_step``."""

    target: float  # the sparsity from the first pruning step on
    begin_step: int = 0  # prune from the start: the model is already trained
    end_step: int = -1  # -1 = keep re-pruning to the end of training, as TF-MOT's default
    frequency: int = 100  # TF-MOT's default; llmopt's trainers pass one that fits the run

    kind = "constant"

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", _check_sparsity("target sparsity", self.target))
        _check_steps(self.begin_step, self.end_step, self.frequency, allow_no_end=True)

    @property
    def final(self) -> float:
        return self.target

    def sparsity(self, step: int) -> float:
        """The sparsity this schedule asks for at ``step``."""
        return self.target

    def __call__(self, step: int) -> tuple[bool, float]:
        """``(prune at this step?, sparsity)``, as TF-MOT's schedule objects return them."""
        return should_prune(step, self.begin_step, self.end_step, self.frequency), self.target

    def last_step(self, total_steps: int) -> int:
        """The last step at which this schedule prunes in a run of ``total_steps`` updates."""
        end = total_steps - 1 if self.end_step < 0 else min(self.end_step, total_steps - 1)
        if end < self.begin_step:
            return self.begin_step
        return self.begin_step + (end - self.begin_step) // self.frequency * self.frequency

    def to_dict(self) -> dict:
        return {"schedule": self.kind, **asdict(self)}


@dataclass(frozen=True)
class PolynomialDecay:
    """Sparsity rising from ``initial`` to ``final`` between ``begin_step`` and ``end_step``."""

    initial: float  # sparsity at begin_step; 0 = start from the dense model
    final: float  # sparsity reached at end_step and kept after it
    begin_step: int  # first pruning step
    end_step: int  # the step at which ``final`` is reached
    power: float = 3  # Zhu & Gupta's cube: prune fast while weights are redundant, then slowly
    frequency: int = 100  # TF-MOT's default; llmopt's trainers pass one that fits the run

    kind = "polynomial"

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial", _check_sparsity("initial sparsity", self.initial))
        object.__setattr__(self, "final", _check_sparsity("final sparsity", self.final))
        _check_steps(self.begin_step, self.end_step, self.frequency, allow_no_end=False)
        if self.end_step == self.begin_step:
            raise LlmoptError("a polynomial schedule needs end_step after begin_step")
        if isinstance(self.power, bool) or not isinstance(self.power, (int, float)):
            raise LlmoptError(f"power must be a number, got {self.power!r}")

    def sparsity(self, step: int) -> float:
        """TF-MOT's polynomial decay at ``step``."""
        p = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return (self.initial - self.final) * (1.0 - p) ** self.power + self.final

    def __call__(self, step: int) -> tuple[bool, float]:
        """``(prune at this step?, sparsity)``, as TF-MOT's schedule objects return them."""
        return should_prune(step, self.begin_step, self.end_step, self.frequency), self.sparsity(
            step
        )

    def last_step(self, total_steps: int) -> int:
        """The last step at which this schedule prunes in a run of ``total_steps`` updates."""
        end = min(self.end_step, total_steps - 1)
        if end < self.begin_step:
            return self.begin_step
        return self.begin_step + (end - self.begin_step) // self.frequency * self.frequency

    def to_dict(self) -> dict:
        return {"schedule": self.kind, **asdict(self)}


Schedule = ConstantSparsity | PolynomialDecay


def default_schedule(
    kind: str, final: float, total_steps: int, *, initial: float = 0.0, power: float = 3
) -> Schedule:
    """A schedule that fits a run of ``total_steps`` updates.

    Pruning starts at step 0 and happens about 20 times; the polynomial ramp ends at 70% of the
    run, leaving the last 30% to train with the final mask (as Zhu & Gupta recommend).

    Raises:
        LlmoptError: an unknown kind, or a sparsity outside [0, 1).
    """
    if kind not in SCHEDULES:
        raise LlmoptError(f"schedule {kind!r} is unknown; allowed: {', '.join(SCHEDULES)}")
    total_steps = max(int(total_steps), 2)
    frequency = max(1, total_steps // 20)
    if kind == "constant":
        return ConstantSparsity(final, begin_step=0, end_step=-1, frequency=frequency)
    end = max(1, int(round(0.7 * total_steps)))
    end = (end // frequency) * frequency or frequency  # on a pruning tick: final is reached
    return PolynomialDecay(initial, final, 0, end, power=power, frequency=frequency)


def schedule_points(schedule: Schedule, total_steps: int) -> list[dict]:
    """The sparsity in force at every step of a run: ``[{"step", "sparsity"}, …]``.

    Between pruning steps the mask of the last pruning step stays, so the sparsity is a staircase;
    before the first pruning step it is 0.
    """
    points, current = [], 0.0
    for step in range(int(total_steps)):
        prune, target = schedule(step)
        if prune:
            current = float(target)
        points.append({"step": step, "sparsity": current})
    return points
