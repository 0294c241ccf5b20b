"""How long a training run will take, from one timed training step on this machine."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from llmopt.batching import accepts_token_types, encode
from llmopt.data import TextDataset
from llmopt.loaded import LoadedModel, private_copy
from llmopt.training.config import TrainConfig
from llmopt.training.loop import select_trainable

SAMPLE_TEXTS = 64  # texts tokenized to find a typical length
STEP_OVERHEAD = 1.15  # an allowance for AdamW's update and batching beyond forward + backward


def estimate_seconds(
    loaded: LoadedModel,
    train_data: TextDataset,
    config: TrainConfig,
    *,
    eval_rows: int = 0,
    student_fraction: float = 1.0,
) -> dict:
    """Estimated wall time of a training run, from one timed step on a batch of typical texts.

    Args:
        loaded: the starting model (not changed: a copy is timed).
        train_data: the training split (its first texts give the typical length).
        config: the run's settings (rows, epochs, batch size, layers that train).
        eval_rows: held-out rows evaluated before and after training.
        student_fraction: the share of the blocks a distillation student keeps.

    Returns:
        ``{"seconds", "steps", "step_seconds", "validation_seconds", "evaluation_seconds"}``.
    """
    rows = len(train_data) if config.train_limit is None else min(config.train_limit,
                                                                  len(train_data))  # fmt: skip
    val_rows = int(round(config.val_fraction * rows))
    steps_epoch = max(1, math.ceil((rows - val_rows) / config.batch_size))
    steps = max(1, math.ceil(steps_epoch * config.epochs))
    model = private_copy(loaded.model)
    select_trainable(model, config.train_layers)
    texts = train_data.texts[:SAMPLE_TEXTS]
    max_length = min(config.max_length, loaded.max_length)
    enc = encode(loaded.tokenizer, texts, max_length, token_types=accepts_token_types(model))
    width = int(np.median([len(x) for x in enc.input_ids])) if len(enc) else 16
    batch = {
        "input_ids": torch.full((config.batch_size, width), enc.pad_token_id or 0),
        "attention_mask": torch.ones((config.batch_size, width), dtype=torch.long),
    }
    if enc.token_type_ids is not None:
        batch["token_type_ids"] = torch.zeros((config.batch_size, width), dtype=torch.long)
    ids = np.concatenate([np.asarray(x[:width]) for x in enc.input_ids])[
        : batch["input_ids"].numel()
    ]
    batch["input_ids"].view(-1)[: len(ids)] = torch.as_tensor(ids)
    step = _time_step(model, batch) * student_fraction
    forward = _time_forward(model, batch) / config.batch_size * student_fraction  # per text
    evals = max(1, steps_epoch // 4)
    validation = (steps / evals + 1) * val_rows * forward
    evaluation = 2 * eval_rows * forward / max(student_fraction, 1e-9) if eval_rows else 0.0
    return {
        "seconds": steps * step + validation + evaluation,
        "steps": steps,
        "step_seconds": step,
        "validation_seconds": validation,
        "evaluation_seconds": evaluation,
    }


def _time_step(model: nn.Module, batch: dict) -> float:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    best = float("inf")
    for _ in range(2):  # the first call allocates; the second is the step's time
        start = time.perf_counter()
        logits = model(**batch).logits
        loss = nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
        if params:
            loss.backward()
        for p in params:
            p.grad = None
        best = min(best, time.perf_counter() - start)
    model.eval()
    return best * STEP_OVERHEAD


@torch.inference_mode()
def _time_forward(model: nn.Module, batch: dict) -> float:
    model.eval()
    model(**batch)
    start = time.perf_counter()
    model(**batch)
    return time.perf_counter() - start
