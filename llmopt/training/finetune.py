"""Fine-tune a classifier; recover a compressed one (head re-fit, or a constrained fine-tune)."""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from llmopt.batching import accepts_token_types, encode, iter_batches
from llmopt.data import TextDataset
from llmopt.errors import Fix, LlmoptError
from llmopt.evaluation import evaluate, label_map
from llmopt.head import fit_head
from llmopt.loaded import LoadedModel, Progress, private_copy
from llmopt.training.config import RECOVERY, TrainConfig
from llmopt.training.constraints import constrain, project, release
from llmopt.training.loop import TrainingRun, make_loop, prepare_rows, select_trainable

RECOVER_METHODS = ("head", "finetune")


def check_model(loaded, what: str = "training") -> None:
    """Raises LlmoptError unless ``loaded`` is a LoadedModel."""
    if not isinstance(loaded, LoadedModel):
        raise LlmoptError(
            f"{what} needs a LoadedModel (from llmopt.load_model), got {type(loaded).__name__}"
        )


def check_config(config) -> TrainConfig:
    if config is None:
        return TrainConfig()
    if not isinstance(config, TrainConfig):
        raise LlmoptError(f"config must be a TrainConfig, got {type(config).__name__}")
    return config


def copy_model(loaded: LoadedModel, name: str) -> LoadedModel:
    """A deep copy to train (the starting model may be shared, so it is never changed)."""
    return dataclasses.replace(
        loaded,
        model=private_copy(loaded.model),
        name=name,
        notes=list(loaded.notes),
        compression=copy.deepcopy(loaded.compression),
    )


def evaluate_pair(start: LoadedModel, end: LoadedModel, eval_data, progress, before=None):
    """(before, after) evaluations on ``eval_data`` (None, None without it)."""
    if eval_data is None:
        return None, None

    if before is None:
        before = evaluate(start, eval_data, progress=progress)
    return before, evaluate(end, eval_data, progress=progress)


def finetune(
    loaded: LoadedModel,
    train_data: TextDataset,
    config: TrainConfig | None = None,
    *,
    eval_data: TextDataset | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    on_history: Callable[[dict], None] | None = None,
    task: str = "finetune",
) -> TrainingRun:
    """Fine-tune a copy of ``loaded`` with cross-entropy (Hugging Face ``Trainer``, AdamW).

    A compressed model (``loaded.compression``) keeps its compression while it trains: pruning
    masks stay exact, quantized weights stay on their grid (straight-through estimator), and
    low-rank layers stay factorised.

    Args:
        loaded: the starting model (never modified).
        train_data: the training split; validation rows are carved from it.
        config: what trains and for how long (``TrainConfig``; default: top 4 blocks, 2 epochs,
            2,000 rows).
        eval_data: held-out rows (the test split) to evaluate the model before and after.
        progress: called with (fraction, message with loss and ETA).
        cancel: set it to stop after the current step; the run returns the best model so far.
        on_history: called with each new history entry (live curves).
        task: the name recorded in the run.

    Returns:
        A ``TrainingRun``: the trained model, history, before/after evaluations, recipe.

    Raises:
        LlmoptError: bad settings, too few rows, labels the model does not know, or a model
            that cannot be trained (real int8 kernels).
    """
    check_model(loaded)
    config = check_config(config)
    start = time.perf_counter()
    train, val = prepare_rows(loaded, train_data, config)
    before = None
    if eval_data is not None:
        before = evaluate(loaded, eval_data, progress=progress)
    work = copy_model(loaded, f"{loaded.name} (fine-tuned)")
    keeps = constrain(work.model, work.compression)
    try:
        trainable, total = select_trainable(work.model, config.train_layers)
        loop = make_loop(work, train, val, config, task, progress=progress, cancel=cancel,
                         on_history=on_history)  # fmt: skip
        loop.run()
    finally:
        release(work.model)
        for p in work.model.parameters():
            p.requires_grad_(False)
    work.notes.append(
        f"fine-tuned ({config.train_layers} layers, {trainable:,} of {total:,} parameters) on "
        f"{len(train)} {train_data.name} training rows"
        + (" with compression kept" if keeps else "")
    )
    _, after = evaluate_pair(loaded, work, eval_data, progress, before=before)
    recipe = {"train": config.to_dict(), "compression": _compression_config(loaded)}
    return TrainingRun.finished(task, work, loaded, recipe, started=start, train=train, val=val,
                                loop=loop, before=before, after=after)  # fmt: skip


def _compression_config(loaded: LoadedModel) -> dict | None:
    return (loaded.compression or {}).get("config")


# ---------------------------------------------------------------- head re-fit


def head_module(model: nn.Module, num_labels: int) -> tuple[str, nn.Linear]:
    """The classifier's last Linear layer (the one producing the logits).

    Raises:
        LlmoptError: no Linear layer with ``num_labels`` outputs.
    """
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_labels:
            found = (name, module)
    if found is None:
        raise LlmoptError("found no classification layer to re-fit in this model")
    return found


@torch.inference_mode()
def head_features(loaded: LoadedModel, texts: list[str], progress: Progress | None = None):
    """The inputs of the classification layer for ``texts``: (n, features), in their order."""

    _, head = head_module(loaded.model, len(loaded.label_names))
    captured: dict = {}

    def grab(_module, args):
        captured["x"] = args[0]

    handle = head.register_forward_pre_hook(grab)
    model = loaded.model.eval()
    encoded = encode(
        loaded.tokenizer, texts, loaded.max_length, token_types=accepts_token_types(model)
    )
    out = np.zeros((len(texts), head.in_features), dtype=np.float32)
    try:
        batches = list(iter_batches(encoded, 32))
        for i, (rows, inputs) in enumerate(batches):
            model(**inputs)
            x = captured["x"]
            if x.dim() == 3:  # GPT-2 style: logits come from the last real token
                last = inputs["attention_mask"].sum(1) - 1  # (batch,)
                x = x[torch.arange(len(rows)), last]
            out[rows] = x.float().numpy()
            if progress:
                progress((i + 1) / len(batches), f"features for the head: {i + 1}/{len(batches)}")
    finally:
        handle.remove()
    return out


def refit_head(
    loaded: LoadedModel,
    train_data: TextDataset,
    *,
    train_limit: int | None = 2000,
    eval_data: TextDataset | None = None,
    progress: Progress | None = None,
) -> TrainingRun:
    """Re-fit the classification layer on the (compressed) model's own features.

    The head becomes a logistic regression (L2 strength by cross-validation on the training
    rows) on the inputs the compressed layers now give it; nothing else changes. A head that
    was itself compressed is put back on its mask and grid.

    Raises:
        LlmoptError: too few rows, labels the model does not know, a class with no rows.
    """

    check_model(loaded, "re-fitting the head")
    start = time.perf_counter()
    data = train_data
    if train_limit is not None and train_limit < len(data):
        data = data.subset(train_limit, seed=0)
    labels = label_map(loaded, data)[data.labels]
    k = len(loaded.label_names)
    missing = [loaded.label_names[c] for c in range(k) if not (labels == c).any()]
    if missing:
        raise LlmoptError(
            f"labels {missing} have no rows among the {len(data)} training rows used, so the head "
            "cannot learn them",
            fix=Fix(cli="raise --train-limit", app="use more training rows"),
        )
    before = None
    if eval_data is not None:
        before = evaluate(loaded, eval_data, progress=progress)
    work = copy_model(loaded, f"{loaded.name} (head re-fit)")
    feats = head_features(work, data.texts, progress)
    name, head = head_module(work.model, k)
    weight, bias = fit_head(feats, labels, k, intercept=head.bias is not None)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        if head.bias is not None:
            head.bias.copy_(torch.from_numpy(bias))
    project(work.model, work.compression)  # a compressed head goes back on its mask and grid
    work.model.eval()
    work.notes.append(f"head re-fit on {len(data)} {train_data.name} training rows")
    _, after = evaluate_pair(loaded, work, eval_data, progress, before=before)
    recipe = {"train_limit": train_limit, "layer": name,
              "compression": _compression_config(loaded)}  # fmt: skip
    return TrainingRun.finished("recover-head", work, loaded, recipe, started=start, train=data,
                                before=before, after=after)  # fmt: skip


def recover(
    compressed: LoadedModel,
    train_data: TextDataset,
    method: str = "finetune",
    config: TrainConfig | None = None,
    *,
    eval_data: TextDataset | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    on_history: Callable[[dict], None] | None = None,
) -> TrainingRun:
    """Win back accuracy a compression lost, keeping the compression.

    Args:
        compressed: a model from ``llmopt.compress`` (its ``compression`` holds the masks and
            scales to keep; an uncompressed model is simply fine-tuned).
        train_data: the training split.
        method: ``head`` (re-fit the classification layer: seconds) or ``finetune`` (a short
            fine-tune of every block with masks, grids and factors kept).
        config: the fine-tune's settings (default ``RECOVERY``: one epoch, every layer).
        eval_data, progress, cancel, on_history: as for ``finetune``.

    Returns:
        A ``TrainingRun`` whose model keeps ``compressed``'s masks, grids and factors.

    Raises:
        LlmoptError: an unknown method, or what ``finetune``/``refit_head`` raise.
    """
    if method not in RECOVER_METHODS:
        raise LlmoptError(f"recovery method {method!r} is unknown; allowed: head, finetune")
    check_model(compressed, "recovery")
    if method == "head":
        limit = (config or RECOVERY).train_limit
        return refit_head(
            compressed, train_data, train_limit=limit, eval_data=eval_data, progress=progress
        )
    run = finetune(
        compressed, train_data, config or RECOVERY, eval_data=eval_data, progress=progress,
        cancel=cancel, on_history=on_history, task="recover-finetune",
    )  # fmt: skip
    run.model.name = f"{compressed.name} (recovered)"
    return run
