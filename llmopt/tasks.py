"""The one registry of tasks: what a model is evaluated on, and how a model is trained.

The Train page's task selector and controls, its background job, the CLI's training commands
and the description of a stored training recipe all read this registry, so a new training task
is one ``register`` call: its inputs and outputs, the lineage step it records, its recipe's
keys, its settings (page controls and CLI flags from one ``Param`` list), how it runs and how a
recipe of it is described. Training modules are imported only when a task runs.

Likewise a new evaluation task is one ``register_eval`` call: ``evaluate --task``'s choices, the
default task of a model kind, the flags each task accepts, the command's dispatch and the
Compress page's task selector (``eval_tasks(kind)``) read its ``EvalTask``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmopt.errors import LlmoptError


@dataclass(frozen=True)
class EvalOption:
    """A CLI option an evaluation task adds to ``evaluate``: ``flag`` with argparse keywords."""

    flag: str
    cli: dict = field(default_factory=dict)  # e.g. {"type": int, "help": "..."}

    @property
    def dest(self) -> str:
        return flag_dest(self.flag)


@dataclass(frozen=True)
class EvalTask:
    """What is evaluated, and everything the CLI and the pages need of it.

    ``evaluate --task NAME`` offers every task with a ``run``; the model kinds in ``default_for``
    get it without ``--task``; of the flags any task names in ``flags``, a run accepts only its
    task's (the others are refused in one line); ``options`` are the flags a task adds to
    ``evaluate`` itself (name them in ``flags`` too).
    """

    name: str
    title: str
    inputs: tuple[str, ...]  # e.g. ("texts", "labels")
    models: tuple[str, ...]  # model kinds it accepts, e.g. ("sequence-classification",)
    metrics: tuple[str, ...]  # metric keys it produces
    default_for: tuple[str, ...] = ()  # the model kinds whose default task it is
    flags: tuple[str, ...] = ()  # the task-specific ``evaluate`` flags it accepts
    options: tuple[EvalOption, ...] = ()  # flags it adds to ``evaluate``
    run: Callable[[Any, Any], int] | None = None  # (args, --recipe or None) -> exit code
    replay: Callable[[Any, dict], None] | None = None  # (args, a recorded run's rows): its flags


def flag_dest(flag: str) -> str:
    """The argparse attribute of a flag: ``--seq-len`` -> ``seq_len``."""
    return flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Hooks:
    """What every training task is handed besides its model, rows and settings."""

    eval_data: Any = None  # held-out rows evaluated before and after (TextDataset)
    progress: Callable[[float, str], None] | None = None  # (fraction, message)
    cancel: threading.Event | None = None  # set it to stop after the current step
    on_history: Callable[[dict], None] | None = None  # each new history entry (live curves)

    def kwargs(self) -> dict:
        """As keyword arguments of the ``llmopt.training`` functions."""
        return {"eval_data": self.eval_data, "progress": self.progress, "cancel": self.cancel,
                "on_history": self.on_history}  # fmt: skip


@dataclass(frozen=True)
class Param:
    """One setting of a training task: a page control and, with ``flag``, a CLI option."""

    key: str  # the key in the task's params dict
    label: str
    kind: str  # "choice" (a selectbox) or "number" (a slider)
    widget: str  # the page widget's key
    default: Any = None  # a value, or a function of the model's number of blocks
    options: tuple | Callable[[int], list] = ()  # choices, or a function of the blocks
    low: float | Callable[[int], float] = 0.0  # numbers: range and step
    high: float | Callable[[int], float] = 1.0
    step: float | None = None
    help: str | None = None
    column: int = 2  # page column: 0 left, 1 middle, 2 right
    flag: str | None = None  # the CLI option (None: page only)
    cli: dict = field(default_factory=dict)  # argparse keywords of ``flag`` (type, default…)
    page: bool = True  # shown on the Train page (False: CLI only)

    def resolve(self, value, layers: int):
        return value(layers) if callable(value) else value


@dataclass(frozen=True)
class TrainTask:
    """One way of training a model, and everything the pages, CLI and store need of it."""

    name: str  # the page's key, e.g. "prune"
    title: str  # the task selector's label
    summary: str  # one line (CLI help)
    steps: tuple[str, ...]  # the names it records as the recipe's "task"
    lineage: str  # its step in a model's lineage ("fine-tune", "recover", …)
    inputs: tuple[str, ...]  # what it reads
    outputs: tuple[str, ...]  # what its TrainingRun carries beyond the model
    recipe: tuple[str, ...]  # the keys of its recipe
    defaults: Callable[[], Any]  # its TrainConfig
    run: Callable[..., Any]  # (start model, train rows, params, TrainConfig, Hooks) -> run
    describe: Callable[[dict, str], str]  # (recipe, ", N epochs" or "") -> short text
    params: tuple[Param, ...] = ()
    starts_from: str = "base"  # "base" or "compressed" (the Compress page's model)
    labels: tuple[str, str] = ("before", "after")  # the two evaluations' names
    command: str | None = None  # its CLI command (None: none)
    check: Callable[[dict], None] | None = None  # refuses bad params before any work
    report: Callable[[Any, Any], tuple[dict, list[str]]] | None = None  # CLI (payload, lines)
    student_fraction: Callable[[dict, int], float] | None = None  # share of blocks trained
    preview: Callable[..., list[dict]] | None = None  # (model, rows, params, config) -> schedule
    trains_layers: bool = True  # --train-layers applies
    epochs: str = "2"  # its default epochs, as the CLI help says it
    position: int = 100
    models: tuple[str, ...] = ("sequence-classification",)  # model kinds it trains


EVAL_TASKS: dict[str, EvalTask] = {}
_TRAIN: dict[str, TrainTask] = {}


def register_eval(task: EvalTask) -> EvalTask:
    """Add an evaluation task (a later one with the same name replaces the earlier one)."""
    EVAL_TASKS[task.name] = task
    return task


def unregister_eval(name: str) -> None:
    """Remove an evaluation task (tests that add one clean up with this)."""
    EVAL_TASKS.pop(name, None)


def register(task: TrainTask) -> TrainTask:
    """Add a training task (a later one with the same name replaces the earlier one)."""
    _TRAIN[task.name] = task
    return task


def unregister(name: str) -> None:
    """Remove a training task (tests that add one clean up with this)."""
    _TRAIN.pop(name, None)


def training(kind: str | None = None) -> dict[str, TrainTask]:
    """{name: TrainTask} that train models of ``kind`` (None: every task), in the order the
    page lists them."""
    ordered = sorted(_TRAIN.values(), key=lambda t: t.position)
    return {t.name: t for t in ordered if kind is None or kind in t.models}


def get(name: str) -> TrainTask:
    """One training task by name.

    Raises:
        LlmoptError: an unknown name, listing the known ones.
    """
    known = training()
    if name not in known:
        raise LlmoptError(f"training task {name!r} is unknown; allowed: {', '.join(known)}")
    return known[name]


def for_step(step: str) -> TrainTask | None:
    """The task that records the lineage step ``step`` (a recipe's "task"), or None."""
    return next((t for t in training().values() if step in t.steps), None)


def stages() -> tuple[str, ...]:
    """Every lineage step name of every training task (progress messages start with one)."""
    return tuple(s for t in training().values() for s in t.steps)


def describe(recipe: dict) -> str:
    """A short description of a training recipe, e.g. 'recovered by fine-tuning, 1 epoch'."""
    epochs = (recipe.get("train") or {}).get("epochs")
    length = f", {epochs:g} epoch{'s' if epochs != 1 else ''}" if epochs else ""
    task = for_step(recipe.get("task", "")) or get("finetune")
    return task.describe(recipe, length)


# --- evaluation tasks -------------------------------------------------------------------------


def _run_classify(args, recipe) -> int:
    from llmopt.cli.evaluate import run_classify

    return run_classify(args, recipe)


def _run_perplexity(args, recipe) -> int:
    from llmopt.cli.lm import run_perplexity

    return run_perplexity(args, recipe)


def _run_zero_shot(args, recipe) -> int:
    from llmopt.cli.lm import run_zero_shot

    return run_zero_shot(args, recipe)


def _replay_perplexity(args, rows: dict) -> None:
    from llmopt.cli.lm import replay_perplexity

    replay_perplexity(args, rows)


def _replay_zero_shot(args, rows: dict) -> None:
    from llmopt.cli.lm import replay_zero_shot

    replay_zero_shot(args, rows)


_LM_DEVICE = ("--dtype", "--device")  # cli/lm.py adds these (``generate`` shares them)

register_eval(
    EvalTask(
        name="perplexity",
        title="Perplexity (language modelling)",
        inputs=("texts",),
        models=("causal-lm",),
        metrics=("perplexity", "bits_per_byte", "top1_agreement", "mean_kl", "size_bytes"),
        default_for=("causal-lm",),
        flags=("--protocol", "--seq-len", "--recover", *_LM_DEVICE),
        run=_run_perplexity,
        replay=_replay_perplexity,
    )
)
register_eval(
    EvalTask(
        name="zero-shot",
        title="Zero-shot classification by label scoring",
        inputs=("texts", "labels", "prompt", "verbalizers"),
        models=("causal-lm",),
        metrics=("accuracy", "f1_macro", "roc_auc", "size_bytes"),
        flags=("--prompt", "--verbalizer", *_LM_DEVICE),
        run=_run_zero_shot,
        replay=_replay_zero_shot,
    )
)
register_eval(
    EvalTask(
        name="classify",
        title="Text classification",
        inputs=("texts", "labels"),
        models=("sequence-classification",),
        metrics=("accuracy", "f1_macro", "roc_auc", "latency_ms_per_sample", "size_bytes"),
        default_for=("sequence-classification",),
        flags=("--recover",),
        run=_run_classify,
    )
)
register_eval(
    EvalTask(
        name="generate",
        title="Generation side by side",
        inputs=("prompt",),
        models=("causal-lm",),
        metrics=(),
    )  # its own command, ``generate`` (cli/generate.py): no ``run`` here
)


def eval_tasks(kind: str | None = None) -> dict[str, EvalTask]:
    """{name: EvalTask} that accept models of ``kind`` (None: every task)."""
    return {n: t for n, t in EVAL_TASKS.items() if kind is None or kind in t.models}


def evaluate_tasks() -> dict[str, EvalTask]:
    """{name: EvalTask} that ``evaluate --task`` runs (those with a ``run``)."""
    return {n: t for n, t in EVAL_TASKS.items() if t.run is not None}


def default_eval_task(kind: str) -> str | None:
    """The task ``evaluate`` runs for a model of ``kind`` without ``--task`` (None: none)."""
    return next((n for n, t in evaluate_tasks().items() if kind in t.default_for), None)


# --- training tasks ---------------------------------------------------------------------------
# Pre-training (``llmopt pretrain``, the Train page's *Pre-train* section) is not a ``TrainTask``:
# it starts from no model (a tokenizer and a model are built from the texts), is budgeted in
# minutes rather than epochs of a ``TrainConfig``, and its result is a new base model rather
# than a variant in some model's lineage. ``llmopt.lm.pretrain`` is its one description.


def _finetune(loaded, train, params, config, hooks: Hooks):
    from llmopt.training.finetune import finetune
    from llmopt.training.lm import finetune_lm, is_lm

    if is_lm(loaded):  # a causal LM fine-tunes on the next-token NLL of the texts
        return finetune_lm(loaded, train, config, **hooks.kwargs())
    return finetune(loaded, train, config, **hooks.kwargs())


def _recover(compressed, train, params, config, hooks: Hooks):
    from llmopt.training.finetune import recover
    from llmopt.training.lm import is_lm, recover_lm

    if is_lm(compressed):  # a causal LM recovers by minimising the next-token NLL
        if params.get("method", "finetune") != "finetune":
            from llmopt.errors import LlmoptError

            raise LlmoptError("a language model recovers by fine-tuning (method 'finetune')")
        return recover_lm(compressed, train, config, **hooks.kwargs())
    return recover(compressed, train, params.get("method", "finetune"), config, **hooks.kwargs())


def _prune(loaded, train, params, config, hooks: Hooks):
    from llmopt.training.gradual import prune_gradual

    return prune_gradual(
        loaded, train, params.get("final_sparsity") or 0.0,
        schedule=params.get("schedule", "polynomial"), method=params.get("method", "magnitude"),
        pattern=params.get("pattern"), config=config, **hooks.kwargs(),
    )  # fmt: skip


def _distill(loaded, train, params, config, hooks: Hooks):
    from llmopt.training.distill import distill
    from llmopt.training.lm import distill_lm, is_lm

    if is_lm(loaded):  # a causal LM's student learns the teacher's next-token distributions
        return distill_lm(
            loaded, train, n_layers=params["n_layers"], choice=params.get("choice", "every"),
            temperature=params.get("temperature", 2.0), alpha=params.get("alpha", 0.5),
            config=config, **hooks.kwargs(),
        )  # fmt: skip
    return distill(
        loaded, train, n_layers=params["n_layers"], choice=params.get("choice", "every"),
        temperature=params.get("temperature", 2.0), alpha=params.get("alpha", 0.5),
        config=config, **hooks.kwargs(),
    )  # fmt: skip


def _train_config():
    from llmopt.training.config import TrainConfig

    return TrainConfig()


def _recovery_config():
    from llmopt.training.config import RECOVERY

    return RECOVERY


def _gradual_config():
    from llmopt.training.gradual import GRADUAL

    return GRADUAL


def _distill_config():
    from llmopt.training.distill import DISTILL

    return DISTILL


def _describe_finetune(recipe: dict, length: str) -> str:
    return f"fine-tuned ({(recipe.get('train') or {}).get('train_layers')} layers{length})"


def _describe_recover(recipe: dict, length: str) -> str:
    if recipe.get("task") == "recover-head":
        return "head re-fitted"
    return f"recovered by fine-tuning{length}"


def _describe_prune(recipe: dict, length: str) -> str:
    sparsity = recipe.get("final_sparsity") or 0.0
    what = recipe.get("pattern") or f"{sparsity:.0%}"
    return f"gradual {recipe.get('method', 'magnitude')} pruning to {what}{length}"


def _describe_distill(recipe: dict, length: str) -> str:
    n = recipe.get("n_layers")
    return (f"distilled to {n} layer{'s' if n != 1 else ''} (T {recipe.get('temperature')}, "
            f"α {recipe.get('alpha')}{length})")  # fmt: skip


def _plan_prune(loaded, train, params, config) -> list[dict]:
    from llmopt.training.gradual import plan

    return plan(loaded, train, params["final_sparsity"], schedule=params["schedule"],
                pattern=params.get("pattern"), config=config)[1]  # fmt: skip


def _check_prune(params: dict) -> None:
    sparsity, pattern = params.get("final_sparsity"), params.get("pattern")
    if sparsity is None and pattern is None:
        raise LlmoptError("prune-gradual needs --final-sparsity (e.g. 0.7) or --sparsity-pattern")
    if sparsity is not None and pattern is not None:
        raise LlmoptError(
            f"--sparsity-pattern {pattern} fixes the final sparsity; drop --final-sparsity or "
            "the pattern"
        )


def _report_prune(run, test) -> tuple[dict, list[str]]:
    payload = {"before": run.before.to_dict(), "after": run.after.to_dict(),
               "history": run.history, "schedule": run.schedule}  # fmt: skip
    reached = run.schedule[-1]["achieved"] if run.schedule else None
    lines = [] if reached is None else [f"sparsity of the pruned layers at the end: {reached:.4f}"]
    return payload, lines


def _report_distill(run, test) -> tuple[dict, list[str]]:
    from llmopt.evaluation import compare

    fidelity = compare(run.before, run.after)
    payload = {
        "teacher": run.before.to_dict(),
        "student": run.after.to_dict(),
        "fidelity": {**fidelity, "flipped": [int(test.indices[i]) for i in fidelity["flipped"]]},
        "speedup": run.before.latency_ms_per_sample / max(run.after.latency_ms_per_sample, 1e-9),
        "history": run.history,
    }
    line = (f"student keeps teacher layers {run.recipe['layers']}; agreement with the teacher "
            f"{fidelity['agreement']:.4f}")  # fmt: skip
    return payload, [line]


def _gradual_methods(_layers: int) -> list[str]:
    from llmopt.compression import registry

    return registry.gradual_methods()


class _Choices:
    """argparse ``choices`` read when the parser is built (gradual methods from the registry)."""

    def __init__(self, read: Callable[[], list[str]]):
        self.read = read

    def __contains__(self, item) -> bool:
        return item in self.read()

    def __iter__(self):
        return iter(self.read())


register(
    TrainTask(
        name="finetune",
        title="Fine-tune",
        summary="fine-tune a model on the dataset's training split",
        steps=("finetune",),
        lineage="fine-tune",
        inputs=("base model", "training rows"),
        outputs=("history",),
        recipe=("task", "train", "compression"),
        defaults=_train_config,
        run=_finetune,
        describe=_describe_finetune,
        params=(
            Param(
                "train_layers",
                "Layers that train",
                "choice",
                "t_layers",
                default=lambda n: ["head", *range(1, n + 1), "all"][min(4, n + 1)],
                options=lambda n: ["head", *range(1, n + 1), "all"],
                help="The classifier head only, the head and the top K transformer blocks, or all.",
            ),
        ),  # fmt: skip
        command="finetune",
        position=0,
        models=("sequence-classification", "causal-lm"),  # an LM: NLL (distil: token KL)
    )
)
register(
    TrainTask(
        name="recover",
        title="Recover the compressed model",
        summary="win back accuracy a compression lost, keeping the compression",
        steps=("recover-head", "recover-finetune"),
        lineage="recover",
        inputs=("compressed model", "training rows"),
        outputs=("history",),
        recipe=("task", "train", "compression", "train_limit", "layer"),
        defaults=_recovery_config,
        run=_recover,
        describe=_describe_recover,
        params=(
            Param(
                "method",
                "Method",
                "choice",
                "t_recover",
                default="head",
                options=("head", "finetune"),
                help="Re-fit the head (seconds), or a short fine-tune that keeps masks, grids "
                "and factors.",
            ),
        ),  # fmt: skip
        starts_from="compressed",
        position=1,
        models=("sequence-classification", "causal-lm"),  # an LM: NLL (distil: token KL)
    )
)
register(
    TrainTask(
        name="prune",
        title="Prune gradually",
        summary="prune while fine-tuning, on a sparsity schedule",
        steps=("prune-gradual",),
        lineage="gradual prune",
        inputs=("base model", "training rows"),
        outputs=("history", "schedule"),
        recipe=("task", "schedule", "method", "pattern", "final_sparsity", "train"),
        defaults=_gradual_config,
        run=_prune,
        describe=_describe_prune,
        params=(
            Param(
                "final_sparsity",
                "Final sparsity",
                "number",
                "t_fs",
                default=0.7,
                low=0.05,
                high=0.95,
                step=0.05,
                flag="--final-sparsity",
                cli={
                    "type": "fraction",
                    "help": "sparsity reached at the end of the schedule, e.g. 0.7",
                },
            ),
            Param(
                "schedule",
                "Schedule",
                "choice",
                "t_sched",
                default="polynomial",
                options=("polynomial", "constant"),
                column=0,
                flag="--schedule",
                cli={"choices": ["polynomial", "constant"], "default": "polynomial"},
            ),
            Param(
                "method",
                "Pruning method",
                "choice",
                "t_pmethod",
                default="magnitude",
                options=_gradual_methods,
                column=1,
                flag="--sparsity-method",
                cli={"choices": _Choices(lambda: _gradual_methods(0)), "default": "magnitude"},
            ),
            Param(
                "pattern",
                "Pattern",
                "choice",
                "t_pattern",
                flag="--sparsity-pattern",
                page=False,
                cli={
                    "choices": ["2:4", "4:8"],
                    "help": "switch to this N:M pattern at the last pruning step",
                },
            ),
        ),  # fmt: skip
        command="prune-gradual",
        check=_check_prune,
        preview=_plan_prune,
        report=_report_prune,
        epochs="1",
        position=2,
    )
)
register(
    TrainTask(
        name="distill",
        title="Distil a smaller student",
        summary="train a smaller student made of the teacher's layers",
        steps=("distill",),
        lineage="distill",
        inputs=("base model (the teacher)", "training rows"),
        outputs=("history",),
        recipe=("task", "layers", "choice", "n_layers", "temperature", "alpha", "train"),
        defaults=_distill_config,
        run=_distill,
        describe=_describe_distill,
        params=(
            Param(
                "n_layers",
                "Student layers",
                "number",
                "t_student",
                default=lambda n: max(1, n // 2),
                low=1,
                high=lambda n: n,
                step=1,
                flag="--student-layers",
                cli={
                    "type": "positive_int",
                    "metavar": "STUDENT_LAYERS",
                    "required": True,
                    "help": "transformer blocks the student keeps",
                },
            ),
            Param(
                "choice",
                "Layer choice",
                "choice",
                "t_choice",
                default="every",
                options=("every", "first"),
                flag="--layer-choice",
                page=False,
                cli={
                    "choices": ["every", "first"],
                    "default": "every",
                    "help": "keep evenly spaced blocks (every k-th) or the first N",
                },
            ),
            Param(
                "temperature",
                "Temperature",
                "number",
                "t_temp",
                default=2.0,
                low=1.0,
                high=8.0,
                step=0.5,
                column=0,
                flag="--temperature",
                cli={
                    "type": "temperature",
                    "default": 2.0,
                    "help": "softens the teacher's probabilities (default 2)",
                },
            ),
            Param(
                "alpha",
                "α (weight of the true labels or next tokens)",
                "number",
                "t_a",
                default=0.5,
                low=0.0,
                high=1.0,
                step=0.1,
                column=1,
                flag="--alpha",
                cli={
                    "type": "weight",
                    "default": 0.5,
                    "help": "weight of the true targets' loss (the labels, or a causal LM's "
                    "next tokens); 1 - alpha weighs the teacher's",
                },
            ),
        ),  # fmt: skip
        labels=("teacher", "student"),
        command="distill",
        report=_report_distill,
        student_fraction=lambda params, layers: min(1.0, params["n_layers"] / max(layers, 1)),
        trains_layers=False,
        position=3,
        models=("sequence-classification", "causal-lm"),  # an LM: NLL (distil: token KL)
    )
)
