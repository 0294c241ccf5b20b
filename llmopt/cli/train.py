"""``llmopt finetune``, ``llmopt distill`` and ``llmopt prune-gradual``: training from the shell."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from llmopt import atomic
from llmopt.cli.common import Bar, load, positive_int, seed, source_args, train_split
from llmopt.cli.compression_flags import LazyParser
from llmopt.errors import LlmoptError


class TrainBar(Bar):
    """One progress bar for a whole training run; its text carries step, loss and ETA.

    Messages from the same task (``finetune: step 3/250, loss …``) update one bar in place;
    a message from another stage (evaluating, loading) starts a new one.
    """

    def __call__(self, fraction: float, message: str) -> None:
        from llmopt import tasks

        stage = message.split(":", 1)[0]
        if stage in tasks.stages() and self.bar is not None and self.bar.desc.startswith(stage):
            self.bar.set_description_str(message, refresh=False)
            self.bar.n = round(100 * fraction)
            self.bar.refresh()
            return
        super().__call__(fraction, message)


def _layers(text: str):
    if text in ("head", "all"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected head, all or a number of top layers, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the number of top layers must be >= 1, got {value}")
    return value


def _float(low: float, high: float, what: str, *, closed_high: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = low < value <= high if closed_high else low <= value < high
        if not ok or value != value:
            bracket = "]" if closed_high else ")"
            raise argparse.ArgumentTypeError(f"{what} must be in ({low}, {high}{bracket}: {text}")
        return value

    return parse


def _common(p: argparse.ArgumentParser, *, epochs: str, layers: bool = True) -> None:
    source_args(p)
    p.add_argument("--epochs", type=_float(0, 1000, "epochs", closed_high=True),
                   help=f"passes over the training rows (default {epochs})")  # fmt: skip
    p.add_argument(
        "--lr",
        type=_float(0, 1, "the learning rate"),
        help="peak learning rate (default 1e-3 for the head alone, 3e-5 otherwise)",
    )
    if layers:
        p.add_argument("--train-layers", type=_layers,
                       help="head, the number of top blocks (default 4), or all")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, help="training rows per step (default 16)")
    p.add_argument("--train-limit", type=positive_int,
                   help="train on this many training rows (default 2000; validation is carved "
                   "from them)")  # fmt: skip
    p.add_argument("--limit", type=positive_int, help="evaluate on the first N test rows")
    p.add_argument("--seed", type=seed, help="seed of the shuffle, split and training (default 0)")
    p.add_argument("--json", type=Path, help="write the results as JSON to this path")
    p.add_argument("--save-model", type=Path, help="save the trained model to this folder")
    p.add_argument("--overwrite", action="store_true",
                   help="let --save-model replace a non-empty folder")  # fmt: skip
    p.add_argument("--no-record", action="store_true",
                   help="do not record this run in the experiment store")  # fmt: skip


TYPES = {  # the parsers a task's Param names in its ``cli`` keywords
    "positive_int": positive_int,
    "fraction": _float(0, 1, "--final-sparsity"),
    "temperature": _float(0, 1000, "the temperature"),
    "weight": _float(0, 1, "alpha", closed_high=True),
}


def add_commands(sub) -> None:
    """One command per training task of the registry that names one (``finetune``,
    ``prune-gradual``, ``distill``, and any task registered later)."""
    from llmopt import tasks

    for task in tasks.training().values():
        if task.command is None:
            continue
        p = sub.add_parser(task.command, help=task.summary)
        _common(p, epochs=task.epochs, layers=task.trains_layers)
        for param in task.params:
            if param.flag is not None:
                options = dict(param.cli)
                if isinstance(options.get("type"), str):
                    options["type"] = TYPES[options["type"]]
                add = functools.partial(_add_param, flag=param.flag, key=param.key, **options)
                if "choices" in options and isinstance(p, LazyParser):
                    p.defer(add)  # choices from the method registry cost torch: on first use
                else:
                    add(p)
        p.set_defaults(run=functools.partial(run_task, task.name))


def _add_param(parser, *, flag: str, key: str, **options) -> None:
    parser.add_argument(flag, dest=key, **options)


def _train_config(args, base):
    changes = {
        "epochs": args.epochs,
        "learning_rate": args.lr,
        "train_layers": getattr(args, "train_layers", None),
        "batch_size": args.batch_size,
        "train_limit": args.train_limit,
        "seed": args.seed,
    }
    return base.with_(**changes)


def _prepare(args, load_model=None):
    """Check outputs, load the test rows and the model; returns (test rows, model, bar).

    ``load_model(args, bar)`` loads the model (default: a classifier, ``load``)."""
    from llmopt.cli.evaluate import check_outputs
    from llmopt.data import load_dataset

    if args.overwrite and args.save_model is None:
        raise LlmoptError("--overwrite applies to --save-model; add --save-model DIR or drop it")
    args.predictions = None
    check_outputs(args)
    test = load_dataset(
        args.dataset, "test", text_column=args.text_column, label_column=args.label_column,
        limit=args.limit, seed=args.seed,
    )  # fmt: skip
    bar = TrainBar()
    loaded = (load_model or load)(args, bar)
    if getattr(args, "train_layers", None) is not None:
        from llmopt.training.loop import check_layers

        check_layers(loaded.model, args.train_layers)
    return test, loaded, bar


def _load_lm(args, bar):
    from llmopt.lm.load import load_causal_lm

    return load_causal_lm(args.model, dtype="fp32", device="auto", progress=bar)  # trains in fp32


def _finish(args, run, test, payload: dict, bar, loaded) -> int:
    from llmopt.cli import record
    from llmopt.cli.evaluate import format_results

    bar.close()
    if run.cancelled:
        raise LlmoptError("training was cancelled; nothing was saved")
    print(format_results(run.model.name, test, run.before, run.after))
    best = max((h for h in run.history if h.get("val_accuracy") is not None),
               key=lambda h: h["val_accuracy"], default=None)  # fmt: skip
    stop = " (stopped early: validation stopped improving)" if run.stopped_early else ""
    print(f"trained {run.train_rows} rows, validated on {run.val_rows}, {len(run.history)} "
          f"checkpoints in memory, {run.seconds:.1f} s{stop}")  # fmt: skip
    if best is not None:
        print(f"best validation accuracy {best['val_accuracy']:.4f} at step {best['step']}")
    payload["run_id"] = record.record_trained(args, loaded, test, run.before, run)
    if args.json is not None:
        atomic.write_text(args.json, json.dumps(payload, indent=2))
    if args.save_model is not None:
        from llmopt.compression import save_model

        save_model(run.model, args.save_model, overwrite=args.overwrite)
        print(f"trained model saved to {args.save_model}")
    return 0


def _header(args, test, run) -> dict:
    return {
        "model": args.model,
        "dataset": args.dataset,
        "split": "test",
        "n": len(test),
        "label_names": list(run.model.label_names),
        "task": run.task,
        "recipe": run.recipe,
        "parent": run.parent,
        "seconds": run.seconds,
        "stopped_early": run.stopped_early,
    }


def run_task(name: str, args) -> int:
    """Run the training task ``name`` from the registry with the command's arguments."""
    from llmopt import tasks

    task = tasks.get(name)
    params = {p.key: getattr(args, p.key, None) for p in task.params if p.flag is not None}
    if task.check is not None:
        task.check(params)
    config = _train_config(args, task.defaults())
    if _is_causal_lm(args.model):
        return _run_lm(task, args, params, config)
    test, loaded, bar = _prepare(args)
    hooks = tasks.Hooks(eval_data=test, progress=bar)
    run = task.run(loaded, train_split(args), params, config, hooks)
    if task.report is not None:
        extra, lines = task.report(run, test)
    else:
        extra = {"before": run.before.to_dict(), "after": run.after.to_dict(),
                 "history": run.history}  # fmt: skip
        lines = []
    for line in lines:
        print(line, file=sys.stdout)
    return _finish(args, run, test, {**_header(args, test, run), **extra}, bar, loaded)


# --------------------------------------------------------------------------- causal LMs


def _is_causal_lm(source: str) -> bool:
    from llmopt.lm.load import CAUSAL_LM, model_kind

    return model_kind(source) == CAUSAL_LM


def _run_lm(task, args, params: dict, config) -> int:
    """A training task on a causal LM: it trains on the next-token NLL (distillation: the
    token-level KL to the teacher), and before and after are perplexity and bits per byte of
    the starting and the trained model on the same windows of the test texts, with intervals.

    ``--json`` writes ``{"model", "dataset", "split", "n", "task", "recipe", "parent",
    "seconds", "stopped_early", "protocol", "seq_len", BEFORE: LM, AFTER: LM, "fidelity":
    {"top1_agreement", "mean_kl"}, "delta_intervals": {metric: [lo, hi]}, "intervals",
    "history", "run_id"}`` with ``BEFORE``/``AFTER`` the task's labels (``before``/``after``;
    distillation: ``teacher``/``student``) and ``LM`` as ``evaluate --task perplexity`` writes
    it (``perplexity``, ``bits_per_byte``, ``tokens``, ``documents``, ``tokens_per_second``,
    ``interval``)."""
    from llmopt import tasks
    from llmopt.cli import record
    from llmopt.training.lm import evaluate_lm_training, record_lm_training

    test, lm, bar = _prepare(args, _load_lm)
    run = task.run(lm, train_split(args), params, config, tasks.Hooks(progress=bar))
    if run.cancelled:
        bar.close()
        raise LlmoptError("training was cancelled; nothing was saved")
    evaluation = evaluate_lm_training(lm, run.model, test.texts, progress=bar)
    bar.close()
    labels = task.labels
    print(f"{run.model.name} on {test.name}: {len(test)} test texts")
    for line in evaluation.lines(labels):
        print(line)
    if task.name == "distill":
        print(f"student keeps teacher layers {run.recipe['layers']}")
    best = min((h for h in run.history if h.get("val_loss") is not None),
               key=lambda h: h["val_loss"], default=None)  # fmt: skip
    stop = " (stopped early: validation stopped improving)" if run.stopped_early else ""
    print(f"trained on {run.train_rows} windows, validated on {run.val_rows}, "
          f"{len(run.history)} steps, {run.seconds:.1f} s{stop}")  # fmt: skip
    if best is not None:
        print(f"best validation loss {best['val_loss']:.4f} at step {best['step']}")
    run_id = record._store(
        args,
        lambda store, where: record_lm_training(
            store, run, evaluation, base_lm=lm, dataset=test, **where
        ),
    )
    payload = {
        "model": args.model, "dataset": args.dataset, "split": "test", "n": len(test),
        "task": run.task, "recipe": run.recipe, "parent": run.parent, "seconds": run.seconds,
        "stopped_early": run.stopped_early, **evaluation.to_dict(labels),
        "history": run.history, "run_id": run_id,
    }  # fmt: skip
    if args.json is not None:
        atomic.write_text(args.json, json.dumps(payload, indent=2))
    if args.save_model is not None:
        from llmopt.compression import save_model

        save_model(run.model, args.save_model, overwrite=args.overwrite)
        print(f"trained model saved to {args.save_model}")
    return 0
