"""Gradual pruning: prune a little at a time while fine-tuning, following a sparsity schedule.

As TensorFlow Model Optimization's ``prune_low_magnitude``: at every pruning step of the
schedule the weights of each targeted layer are ranked again (by a pruning method marked
``gradual`` in the registry: magnitude, or Wanda's ``|W| · ||X||``) and a mask of the
scheduled sparsity is applied; between pruning steps the mask
is fixed, so pruned weights stay zero while the rest train and take over their work. With an
N:M pattern, the last pruning step switches to N:M. The masks come from ``llmopt.compress``, so
the ranking is exactly the one-shot method's.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import torch

from llmopt.compression import CompressionConfig, compress, registry
from llmopt.compression.targets import find_targets, in_blocks, is_conv1d
from llmopt.data import TextDataset
from llmopt.errors import LlmoptError
from llmopt.evaluation import evaluate
from llmopt.loaded import LoadedModel, Progress
from llmopt.training.config import TrainConfig
from llmopt.training.constraints import constrain, release
from llmopt.training.finetune import check_config, check_model, copy_model, evaluate_pair
from llmopt.training.loop import TrainingRun, make_loop, prepare_rows, select_trainable
from llmopt.training.schedules import (
    ConstantSparsity,
    PolynomialDecay,
    Schedule,
    default_schedule,
    schedule_points,
)

GRADUAL = TrainConfig(epochs=1.0, train_layers="all")  # the pruned layers must train


def plan(
    loaded: LoadedModel,
    train_data: TextDataset,
    final_sparsity: float = 0.7,
    *,
    schedule: str | Schedule = "polynomial",
    pattern: str | None = None,
    config: TrainConfig | None = None,
) -> tuple[Schedule, list[dict]]:
    """The schedule a ``prune_gradual`` run will follow and its sparsity at every step (to plot
    before training starts).

    Raises:
        LlmoptError: a bad sparsity, schedule kind or pattern.
    """

    config = check_config(config or GRADUAL)
    if pattern is not None:
        final_sparsity = CompressionConfig(sparsity_pattern=pattern).effective_sparsity
    train, _ = prepare_rows(loaded, train_data, config)
    steps = max(1, -(-len(train) * 1 // config.batch_size))  # ceil
    total = max(1, int(-(-steps * config.epochs // 1)))
    if isinstance(schedule, str):
        schedule = default_schedule(schedule, final_sparsity, total)
    elif not isinstance(schedule, (ConstantSparsity, PolynomialDecay)):
        raise LlmoptError(f"schedule must be 'polynomial', 'constant' or a schedule object, got "
                          f"{type(schedule).__name__}")  # fmt: skip
    return schedule, schedule_points(schedule, total)


def _measured_sparsity(keeps: dict) -> float:
    zeros = sum(int((~k.mask).sum()) for k in keeps.values())
    total = sum(k.mask.numel() for k in keeps.values())
    return zeros / max(total, 1)


def prune_gradual(
    loaded: LoadedModel,
    train_data: TextDataset,
    final_sparsity: float = 0.7,
    *,
    schedule: str | Schedule = "polynomial",
    method: str = "magnitude",
    pattern: str | None = None,
    config: TrainConfig | None = None,
    eval_data: TextDataset | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    on_history: Callable[[dict], None] | None = None,
) -> TrainingRun:
    """Fine-tune a copy of ``loaded`` while pruning it to ``final_sparsity`` on a schedule.

    Args:
        loaded: the starting model (never modified).
        train_data: the training split (Wanda's calibration texts come from it too).
        final_sparsity: the sparsity reached at the schedule's end, in [0, 1).
        schedule: ``polynomial`` or ``constant`` (fitted to the run: see
            ``schedules.default_schedule``), or a ``PolynomialDecay``/``ConstantSparsity``.
        method: a pruning method the registry marks usable for gradual pruning
            (``registry.gradual_methods()``: magnitude, wanda).
        pattern: ``None`` (unstructured) or an N:M pattern such as ``2:4``, applied at the last
            pruning step (the final sparsity is then 1 - N/M).
        config: training settings (default ``GRADUAL``: every layer, 1 epoch, 2,000 rows).
        eval_data, progress, cancel, on_history: as for ``finetune``.

    Returns:
        A ``TrainingRun`` with ``schedule`` (the planned sparsity per step, and the measured
        one in ``achieved``), the history (with the measured sparsity at each validation) and
        the pruned model (its masks in ``compression``).

    Raises:
        LlmoptError: bad settings, or what ``finetune`` raises.
    """

    check_model(loaded, "gradual pruning")
    config = check_config(config or GRADUAL)
    CompressionConfig(sparsity=0.0, sparsity_method=method)  # validates the method early
    usable = registry.gradual_methods()
    if method not in usable:
        raise LlmoptError(f"gradual pruning re-ranks with {', '.join(usable)}; {method!r} "
                          "changes the weights it keeps, so it cannot prune gradually")  # fmt: skip
    sched, points = plan(loaded, train_data, final_sparsity, schedule=schedule, pattern=pattern,
                         config=config)  # fmt: skip
    total = len(points)
    last_step = sched.last_step(total)
    start = time.perf_counter()
    train, val = prepare_rows(loaded, train_data, config)
    before = None
    if eval_data is not None:
        before = evaluate(loaded, eval_data, progress=progress)
    work = copy_model(loaded, f"{loaded.name} (gradually pruned)")
    if work.compression:
        raise LlmoptError(
            "gradual pruning starts from an uncompressed model; this one is already compressed"
        )
    targets = find_targets(work.model, in_blocks(work.model))
    if not targets:
        raise LlmoptError(f"found no Linear layers to prune in {loaded.name!r}")
    ones = {n: torch.ones_like(work.model.get_submodule(n).weight, dtype=torch.bool)
            for n in targets}  # fmt: skip

    ones = {n: (m.T if is_conv1d(work.model.get_submodule(n)) else m) for n, m in ones.items()}
    keeps = constrain(work.model, {"masks": ones})
    needs_texts = registry.get("prune", method).needs_calibration
    calibration = train_data if needs_texts else None
    achieved: dict[int, float] = {}

    def before_step(step: int) -> None:
        prune, target = sched(step)
        if prune and target > 0:
            nm = pattern is not None and step == last_step
            cfg = CompressionConfig(
                sparsity=0.0 if nm else float(target),
                sparsity_method=method,
                sparsity_pattern=pattern if nm else "unstructured",
            )
            pruned, _ = compress(work, cfg, calibration=calibration)
            for name, mask in pruned.compression["masks"].items():
                keeps[name].mask.copy_(mask)
        achieved[step] = _measured_sparsity(keeps)

    trainable, n_params = select_trainable(work.model, config.train_layers)
    loop = make_loop(
        work, train, val, config, "prune-gradual", progress=progress, cancel=cancel,
        on_history=on_history, before_step=before_step,
        extra=lambda: {"sparsity": _measured_sparsity(keeps)},
        eligible=lambda step: step > last_step,
    )  # fmt: skip
    try:
        loop.run()
    finally:
        masks = {n: k.mask.clone() for n, k in keeps.items()}
        release(work.model)
        for p in work.model.parameters():
            p.requires_grad_(False)
    reached = bool(achieved) and max(achieved) >= last_step
    method_cfg = CompressionConfig(
        sparsity=0.0 if pattern else float(sched.final),
        sparsity_method=method,
        sparsity_pattern=pattern or "unstructured",
    )
    work = _account(work, masks, method_cfg, reached)
    work.notes.append(
        f"gradually pruned to {_measured_sparsity_of(masks):.1%} ({sched.kind} schedule, "
        f"{method}) while fine-tuning on {len(train)} {train_data.name} rows"
    )
    _, after = evaluate_pair(loaded, work, eval_data, progress, before=before)
    for p in points:
        p["achieved"] = achieved.get(p["step"])
    return TrainingRun.finished(
        "prune-gradual",
        work,
        loaded,
        {
            "schedule": sched.to_dict(),
            "method": method,
            "pattern": pattern,
            "final_sparsity": float(sched.final),
            "train": config.to_dict(),
            "trainable_params": trainable,
            "params": n_params,
        },
        started=start,
        train=train,
        val=val,
        loop=loop,
        before=before,
        after=after,
        schedule=points,
    )


def _measured_sparsity_of(masks: dict) -> float:
    zeros = sum(int((~m).sum()) for m in masks.values())
    return zeros / max(sum(m.numel() for m in masks.values()), 1)


def _account(work: LoadedModel, masks: dict, config, reached: bool) -> LoadedModel:
    """The pruned model with its masks as ``compression`` and, when the final mask is in place,
    the packed size measured by the compression engine (its magnitude ranking of a model whose
    pruned weights are already zero picks exactly those, so the weights do not change)."""

    state = {"config": config.to_dict(), "masks": masks, "scales": {}, "bits": None,
             "group_size": None}  # fmt: skip
    if reached:
        same = CompressionConfig(
            sparsity=config.sparsity, sparsity_pattern=config.sparsity_pattern
        )  # magnitude: needs no data
        sized, _ = compress(work, same)
        a, b = work.model.state_dict(), sized.model.state_dict()
        if a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a):
            return dataclasses.replace(
                sized, name=work.name, notes=list(work.notes), compression=state
            )
    return dataclasses.replace(work, compression=state)
