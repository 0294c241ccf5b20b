"""Knowledge distillation: a student made of some of the teacher's layers learns its soft labels.

Loss (Hinton et al., 2015): ``α · CE(labels) + (1 − α) · T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))``.
The T² keeps the soft term's gradients the same size whatever the temperature. The teacher's
logits are computed once, before training, for every training row (its weights never change).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from llmopt.batching import iter_batches
from llmopt.data import TextDataset
from llmopt.errors import Fix, LlmoptError
from llmopt.evaluation import evaluate
from llmopt.loaded import LoadedModel, Progress, private_copy
from llmopt.training.config import TrainConfig
from llmopt.training.finetune import check_config, check_model
from llmopt.training.loop import (
    TrainingRun,
    layer_groups,
    make_loop,
    prepare_rows,
    select_trainable,
)

CHOICES = ("every", "first")
DISTILL = TrainConfig(epochs=2.0, train_layers="all")  # every layer of the student learns
REFIT_ROWS = 2000  # rows for the student's first head: a logistic regression settles on fewer


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    temperature: float = 2.0,
    alpha: float = 0.5,
) -> Tensor:
    """``α · CE(labels) + (1 − α) · T² · KL(p_t ‖ p_s)`` with ``p = softmax(z / T)``.

    The KL term is written out (``Σ p_t (log p_t − log p_s)``, averaged over the batch) so tests
    can compare it with ``torch.nn.functional.kl_div``.

    Args:
        student_logits: (batch, classes).
        teacher_logits: (batch, classes), no gradient needed.
        labels: (batch,) true classes.
        temperature: T > 0; higher spreads the teacher's probabilities over more classes.
        alpha: weight of the hard-label cross-entropy, in [0, 1].

    Returns:
        The scalar loss.
    """
    t = float(temperature)
    log_ps = torch.log_softmax(student_logits / t, dim=-1)  # (batch, classes)
    log_pt = torch.log_softmax(teacher_logits.detach() / t, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()
    loss = (1.0 - alpha) * t * t * kl
    if alpha:
        loss = loss + alpha * nn.functional.cross_entropy(student_logits, labels)
    return loss


def student_layers(total: int, n: int, choice: str = "every") -> list[int]:
    """Which of ``total`` teacher blocks a student of ``n`` blocks keeps (0-based, in order).

    ``every``: evenly spaced, ending with the last block (every k-th block when k = total / n
    is whole: 6 -> 3 keeps 1, 3, 5). ``first``: blocks 0 .. n-1.

    Raises:
        LlmoptError: n outside 1..total, or an unknown choice.
    """
    if choice not in CHOICES:
        raise LlmoptError(f"layer choice {choice!r} is unknown; allowed: every, first")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= total:
        raise LlmoptError(
            f"the student keeps between 1 and {total} of the teacher's {total} layers; got {n!r}",
            fix=Fix(cli=f"pass --student-layers 1..{total}", app=f"choose 1 to {total} layers"),
        )
    if choice == "first":
        return list(range(n))
    return [math.ceil((i + 1) * total / n) - 1 for i in range(n)]


def make_student(teacher: LoadedModel, layers: list[int]) -> LoadedModel:
    """A copy of ``teacher`` with only the blocks ``layers``, in that order, with their weights.
    ``teacher`` may also be a causal LM (``LoadedLM``): its decoder blocks are kept the same way.

    Embeddings, head and every kept block keep the teacher's weights; the config's layer count
    is updated so the student saves and loads as a normal checkpoint.

    Raises:
        LlmoptError: a model without a list of transformer blocks, or bad layer indices.
    """
    from llmopt.training.lm import is_lm

    if not is_lm(teacher):
        check_model(teacher, "distillation")
    blocks, prefix = layer_groups(teacher.model)
    if prefix is None:
        raise LlmoptError(
            f"found no transformer blocks in {teacher.name!r} to build a student from"
        )
    if (
        not layers
        or any(not 0 <= i < len(blocks) for i in layers)
        or len(set(layers)) < len(layers)
    ):
        raise LlmoptError(
            f"student layers {layers} must be distinct blocks in 0..{len(blocks) - 1}"
        )
    model = private_copy(teacher.model)
    old = model.get_submodule(prefix)
    kept = nn.ModuleList([old[i] for i in layers])
    for j, block in enumerate(kept):  # caches are indexed by position: renumber
        for m in block.modules():
            if hasattr(m, "layer_idx"):
                m.layer_idx = j
    parent, _, child = prefix.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, kept)
    config = model.config
    config.num_hidden_layers = len(layers)  # n_layer / n_layers through the attribute map
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in layers]
    model.eval()
    return dataclasses.replace(
        teacher,
        model=model,
        name=f"{teacher.name} (student, {len(layers)} of {len(blocks)} layers)",
        notes=[*teacher.notes, f"student: teacher layers {layers} kept with their weights"],
        size_bytes=None,
        compression=None,
    )


@torch.inference_mode()
def teacher_logits(teacher: LoadedModel, encoded, batch_size: int = 64) -> Tensor:
    """The teacher's logits for every tokenized row, in row order: (n, classes)."""

    model = teacher.model.eval()
    out = torch.zeros((len(encoded), len(teacher.label_names)), dtype=torch.float32)
    for rows, inputs in iter_batches(encoded, batch_size):
        out[torch.as_tensor(rows)] = model(**inputs).logits.float()
    return out


def distill(
    teacher: LoadedModel,
    train_data: TextDataset,
    *,
    n_layers: int = 3,
    choice: str = "every",
    temperature: float = 2.0,
    alpha: float = 0.5,
    config: TrainConfig | None = None,
    refit_head: bool = True,
    eval_data: TextDataset | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    on_history: Callable[[dict], None] | None = None,
) -> TrainingRun:
    """Build a student of ``n_layers`` of the teacher's blocks and train it on the teacher.

    Args:
        teacher: the model to imitate (never modified).
        train_data: the training split (its labels feed the CE term; validation rows are
            carved from it).
        n_layers: blocks the student keeps.
        choice: ``every`` (evenly spaced) or ``first``.
        temperature: T of the soft labels, > 0.
        alpha: weight of the hard-label term, in [0, 1] (0: learn only from the teacher).
        config: training settings (default ``DISTILL``: every student layer, 2 epochs).
        refit_head: first re-fit the student's classification layer to its own features (a
            logistic regression on up to ``REFIT_ROWS`` training rows, seconds): the
            teacher's head expects the features of all its layers, so training starts closer.
        eval_data, progress, cancel, on_history: as for ``finetune``; ``before`` is the
            teacher's evaluation and ``after`` the student's.

    Returns:
        A ``TrainingRun`` whose model is the student.

    Raises:
        LlmoptError: bad layers, temperature or alpha, and what ``finetune`` raises.
    """
    check_model(teacher, "distillation")
    config = check_config(config or DISTILL)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not (0 < temperature < 1000)
    ):
        raise LlmoptError(f"the temperature must be a positive number, e.g. 2, got {temperature!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise LlmoptError(f"alpha must be in [0, 1], got {alpha!r}")
    start = time.perf_counter()
    blocks, _ = layer_groups(teacher.model)
    layers = student_layers(len(blocks), n_layers, choice)
    train, val = prepare_rows(teacher, train_data, config)
    before = None
    if eval_data is not None:
        before = evaluate(teacher, eval_data, progress=progress)
    student = make_student(teacher, layers)
    if refit_head:
        from llmopt.training.finetune import refit_head as refit

        rows = train.subset(min(REFIT_ROWS, len(train)), seed=config.seed)
        name = student.name
        student = refit(student, rows, train_limit=None, progress=progress).model
        student.name = name
    trainable, total = select_trainable(student.model, config.train_layers)
    loop = make_loop(student, train, val, config, "distill", progress=progress, cancel=cancel,
                     on_history=on_history)  # fmt: skip
    if progress:
        progress(0.0, f"distill: the teacher's logits for {len(train)} training rows (once)")
    cached = teacher_logits(teacher, loop.train_enc)  # (n, classes)

    def loss_fn(logits: Tensor, labels: Tensor, rows: Tensor) -> Tensor:
        return distillation_loss(logits, cached[rows], labels, temperature=temperature, alpha=alpha)

    loop.loss_fn = loss_fn
    try:
        loop.run()
    finally:
        for p in student.model.parameters():
            p.requires_grad_(False)
    student.notes.append(
        f"distilled (T={temperature}, alpha={alpha}) on {len(train)} {train_data.name} rows"
    )
    after = None
    if eval_data is not None:
        after = evaluate(student, eval_data, progress=progress)
    return TrainingRun.finished(
        "distill",
        student,
        teacher,
        {
            "layers": layers,
            "choice": choice,
            "n_layers": n_layers,
            "temperature": float(temperature),
            "alpha": float(alpha),
            "train": config.to_dict(),
            "trainable_params": trainable,
            "params": total,
        },
        started=start,
        train=train,
        val=val,
        loop=loop,
        before=before,
        after=after,
    )
