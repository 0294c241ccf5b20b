"""How long a training run will take, from training steps timed on this machine now.

A single step timed once is optimistic on a loaded machine (the quickest of a few runs is what
an idle machine would do), so the estimate times ``TIMED_STEPS`` steps after a warm-up and
uses their median; the page says how the figure was made.
"""

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
TIMED_STEPS = 3  # steps timed after one warm-up step: a median, not the luckiest run


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
        ``{"seconds", "steps", "step_seconds" (the median timed step, with the allowance and
        the student's share), "step_samples" (each timed step, seconds), "validation_seconds",
        "evaluation_seconds"}``.
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
    samples = _time_steps(model, batch)
    step = float(np.median(samples)) * STEP_OVERHEAD * student_fraction
    forward = _time_forward(model, batch) / config.batch_size * student_fraction  # per text
    evals = max(1, steps_epoch // 4)
    validation = (steps / evals + 1) * val_rows * forward
    evaluation = 2 * eval_rows * forward / max(student_fraction, 1e-9) if eval_rows else 0.0
    return {
        "seconds": steps * step + validation + evaluation,
        "steps": steps,
        "step_seconds": step,
        "step_samples": samples,
        "validation_seconds": validation,
        "evaluation_seconds": evaluation,
    }


def _time_steps(model: nn.Module, batch: dict, steps: int = TIMED_STEPS) -> list[float]:
    """Seconds of ``steps`` forward + backward passes, after one untimed warm-up pass (the
    first call allocates)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    samples = []
    for i in range(steps + 1):
        start = time.perf_counter()
        logits = model(**batch).logits
        loss = nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
        if params:
            loss.backward()
        for p in params:
            p.grad = None
        if i:
            samples.append(time.perf_counter() - start)
    model.eval()
    return samples


@torch.inference_mode()
def _time_forward(model: nn.Module, batch: dict) -> float:
    model.eval()
    model(**batch)
    start = time.perf_counter()
    model(**batch)
    return time.perf_counter() - start
