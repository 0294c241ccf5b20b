"""The evaluation-task registry: an evaluation task registered in one place (``llmopt.tasks``)
is an ``evaluate --task`` choice, brings its own flag, runs from the CLI through its runner and
is listed for its model kind (where the Compress page's task selector reads it).

Before the registry held the runners, ``evaluate --task`` offered a fixed tuple, the flags each
task allowed were a table in ``cli/lm.py`` and ``run_evaluate`` dispatched on the task's name,
so the dummy task below was not offered, its flag did not exist and it could not run.
"""

from __future__ import annotations

import json

import pytest

from llmopt import tasks
from llmopt.cli import main

NAME = "length"
CALLS: list[str] = []


def _run_length(args, recipe) -> int:
    """The dummy task: the mean length in characters of the rows' texts (of those with at
    least ``--min-chars`` characters)."""
    from llmopt.data import load_dataset

    CALLS.append(args.dataset)
    dataset = load_dataset(args.dataset, args.split, text_column=args.text_column,
                           label_column=args.label_column, limit=args.limit)  # fmt: skip
    kept = [len(t) for t in dataset.texts if len(t) >= (args.min_chars or 0)]
    mean = sum(kept) / max(len(kept), 1)
    print(f"mean length: {mean:.2f} characters over {len(kept)} of {len(dataset)} rows")
    if args.json is not None:
        args.json.write_text(json.dumps({"task": NAME, "mean_chars": mean, "n": len(kept)}))
    return 0


@pytest.fixture()
def length_task():
    task = tasks.register_eval(
        tasks.EvalTask(
            name=NAME,
            title="Mean text length",
            inputs=("texts",),
            models=("sequence-classification",),
            metrics=("mean_chars",),
            flags=("--min-chars",),
            options=(
                tasks.EvalOption(
                    "--min-chars", {"type": int, "help": "length: count texts this long"}
                ),
            ),
            run=_run_length,
        )
    )
    CALLS.clear()
    yield task
    tasks.unregister_eval(NAME)


def _help(capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: the choices are not wrapped
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_a_registered_evaluation_task_is_offered_run_and_listed(
    length_task, tiny_bert_dir, tiny_csv, tmp_path, capsys, monkeypatch
):
    from llmopt.data import load_dataset

    text = _help(capsys, monkeypatch)
    assert "{perplexity,zero-shot,classify,length}" in text and "--min-chars MIN_CHARS" in text
    assert NAME in tasks.eval_tasks("sequence-classification")
    assert NAME not in tasks.eval_tasks("causal-lm")

    out = tmp_path / "length.json"
    rc = main(["evaluate", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv),
               "--task", NAME, "--min-chars", "30", "--json", str(out)])  # fmt: skip
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert CALLS == [str(tiny_csv)]  # its runner ran, once
    texts = load_dataset(str(tiny_csv), "test").texts
    kept = [len(t) for t in texts if len(t) >= 30]
    assert 0 < len(kept) < len(texts)  # the flag reached the runner and changed what it counted
    payload = json.loads(out.read_text())
    assert payload == {"task": NAME, "mean_chars": pytest.approx(sum(kept) / len(kept)),
                       "n": len(kept)}  # fmt: skip
    assert f"over {len(kept)} of {len(texts)} rows" in printed.out


def test_a_tasks_flag_is_refused_by_the_other_tasks(length_task, tiny_bert_dir, tiny_csv, capsys):
    """The allowed flags are read from the registry: ``--min-chars`` belongs to the dummy task
    only, and the dummy task does not take the classifier's ``--recover``."""
    base = ["evaluate", "--model", str(tiny_bert_dir), "--dataset", str(tiny_csv)]
    assert main([*base, "--min-chars", "3"]) == 2  # the classifier's default task: classify
    assert "--min-chars does not apply to --task classify; drop it" in capsys.readouterr().err
    assert main([*base, "--task", NAME, "--recover", "head"]) == 2
    assert f"--recover does not apply to --task {NAME}; drop it" in capsys.readouterr().err
    assert CALLS == []


def test_the_builtin_tasks_come_from_the_registry(capsys, monkeypatch):
    """Without the dummy: the choices, the defaults per model kind, and no trace of it."""
    assert list(tasks.evaluate_tasks()) == ["perplexity", "zero-shot", "classify"]
    assert tasks.default_eval_task("causal-lm") == "perplexity"
    assert tasks.default_eval_task("sequence-classification") == "classify"
    text = _help(capsys, monkeypatch)
    assert "{perplexity,zero-shot,classify}" in text and "--min-chars" not in text
    assert NAME not in tasks.eval_tasks()
