"""A training task added in one place (a ``tasks.register`` call): a head re-fit under its
own name, step and setting, for the tests that look for it on the page, the CLI and the store."""

from __future__ import annotations

import contextlib
import dataclasses

NAME = "dummy"
COMMAND = "dummy-train"
STEP = "dummy-step"
TITLE = "Dummy task (head re-fit)"


def _run(loaded, train, params, config, hooks):
    from llmopt import tasks

    run = tasks.get("recover").run(loaded, train, {"method": "head"}, config, hooks)
    recipe = {**run.recipe, "task": STEP, "knob": params.get("knob")}
    return dataclasses.replace(run, task=STEP, recipe=recipe)


@contextlib.contextmanager
def dummy_task():
    """Register the task; unregister it afterwards."""
    from llmopt import tasks

    task = tasks.register(
        tasks.TrainTask(
            name=NAME,
            title=TITLE,
            summary="a test task: re-fit the head",
            steps=(STEP,),
            lineage="dummy",
            inputs=("base model", "training rows"),
            outputs=(),
            recipe=("task", "knob"),
            defaults=tasks.get("recover").defaults,
            run=_run,
            describe=lambda recipe, length: f"dummy-trained with knob {recipe.get('knob')}",
            params=(
                tasks.Param(
                    "knob",
                    "Knob",
                    "number",
                    "t_knob",
                    default=3,
                    low=1,
                    high=9,
                    step=1,
                    flag="--knob",
                    cli={"type": int, "default": 3},
                ),
            ),  # fmt: skip
            command=COMMAND,
            trains_layers=False,
        )
    )
    try:
        yield task
    finally:
        tasks.unregister(NAME)
