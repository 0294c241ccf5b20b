"""The training loop every task shares: Hugging Face ``Trainer`` with llmopt's callbacks.

``Trainer`` runs the optimisation (AdamW, linear warm-up + decay, weight decay, seeded
length-grouped batches); llmopt's callbacks add what the app and the command line need:
validation on rows carved from the training split, early stopping that restores the best
weights, a live history, progress with an ETA, a cancel flag checked after every step, and a
hook that runs before a step (gradual pruning). No checkpoint is ever written to disk: the best
weights are kept in memory, so a cancelled run leaves nothing half-written behind.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from llmopt.batching import Encoded, accepts_token_types, encode, iter_batches
from llmopt.compression.targets import block_list
from llmopt.data import TextDataset
from llmopt.errors import LlmoptError
from llmopt.evaluation import label_map
from llmopt.loaded import LoadedModel, Progress
from llmopt.training.config import TrainConfig

LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (logits, labels, rows) -> scalar loss
History = list[dict]
VAL_BATCH = 64  # texts per validation forward pass (inference only)


@dataclass
class TrainingRun:
    """What a training task made, and everything a record of it needs.

    ``before``/``after`` are evaluations on the held-out rows passed as ``eval_data`` (for
    distillation: the teacher and the student); ``parent`` is the source of the model it started
    from; ``recipe`` the task's settings as plain JSON values.
    """

    task: str  # finetune | recover-head | recover-finetune | prune-gradual | distill
    model: LoadedModel  # the trained model (a new object; the starting model is untouched)
    parent: str  # source of the starting model
    recipe: dict  # the task's settings, JSON-ready
    history: History = field(default_factory=list)  # {"step", "epoch", "loss", "val_accuracy"…}
    before: object | None = None  # EvalResult of the starting model on eval_data
    after: object | None = None  # EvalResult of the trained model on eval_data
    schedule: list[dict] | None = None  # gradual pruning: [{"step", "sparsity"}] planned
    cancelled: bool = False  # stopped by the cancel flag (the model is the best one so far)
    stopped_early: bool = False  # early stopping ended it (validation stopped improving)
    seconds: float = 0.0  # wall time of the whole task (training and evaluations)
    train_rows: int = 0
    val_rows: int = 0

    @classmethod
    def finished(
        cls,
        task: str,
        model: LoadedModel,
        start: LoadedModel,
        recipe: dict,
        *,
        started: float,
        train,
        val=None,
        loop=None,
        before=None,
        after=None,
        schedule: list[dict] | None = None,
    ) -> TrainingRun:
        """The run of every task, built in one place: ``recipe`` gets its ``task``, the loop
        (if one trained) its history and how it stopped, ``started`` (``perf_counter``) the
        wall time."""
        return cls(
            task=task,
            model=model,
            parent=start.source,
            recipe={"task": task, **recipe},
            history=loop.history if loop is not None else [],
            before=before,
            after=after,
            schedule=schedule,
            cancelled=loop is not None and loop.cancelled,
            stopped_early=loop is not None and loop.stopped_early,
            seconds=time.perf_counter() - started,
            train_rows=len(train),
            val_rows=0 if val is None else len(val),
        )


def split_train_val(data: TextDataset, val_fraction: float, seed: int):
    """(training rows, validation rows): a seeded split, stratified when every class can spare
    a row; no validation rows when ``val_fraction`` is 0 or the data are too few."""
    n = len(data)
    n_val = int(round(val_fraction * n))
    if n_val < 1 or n - n_val < 1:
        return data, None
    rng = np.random.default_rng(seed)
    counts = np.bincount(data.labels, minlength=len(data.label_names))
    val: list[int] = []
    if (counts[counts > 0] >= 2).all():
        for c in np.flatnonzero(counts):
            rows = rng.permutation(np.flatnonzero(data.labels == c))
            take = max(1, int(round(val_fraction * len(rows))))
            val += rows[: min(take, len(rows) - 1)].tolist()
    else:
        val = rng.permutation(n)[:n_val].tolist()
    val_set = set(val)
    train = [i for i in range(n) if i not in val_set]
    return _rows(data, train), _rows(data, sorted(val))


def _rows(data: TextDataset, rows: list[int]) -> TextDataset:
    return TextDataset(
        texts=[data.texts[i] for i in rows],
        labels=data.labels[rows],
        label_names=list(data.label_names),
        name=data.name,
        split=data.split,
        source=data.source,
        indices=data.indices[rows],
    )


def prepare_rows(loaded: LoadedModel, data: TextDataset, config: TrainConfig):
    """Training and validation rows in the model's label space, after ``train_limit``.

    Raises:
        LlmoptError: too few rows, or dataset labels the model does not know.
    """

    if not isinstance(data, TextDataset):
        raise LlmoptError(
            f"training needs a TextDataset (from llmopt.load_dataset), got {type(data).__name__}"
        )
    if config.train_limit is not None and config.train_limit < len(data):
        data = data.subset(config.train_limit, seed=config.seed)
    if len(data) < 2:
        raise LlmoptError(f"training needs at least 2 rows; {data.name} has {len(data)}")
    mapping = label_map(loaded, data)
    data = TextDataset(
        list(data.texts), mapping[data.labels], list(loaded.label_names), data.name,
        data.split, data.source, data.indices,
    )  # fmt: skip
    return split_train_val(data, config.val_fraction, config.seed)


# ---------------------------------------------------------------- which parameters train


def check_layers(model: nn.Module, train_layers: str | int) -> None:
    """Refuse a number of top blocks the model does not have (the command line's check).

    Raises:
        LlmoptError: K larger than the number of transformer blocks.
    """
    blocks, _ = layer_groups(model)
    if isinstance(train_layers, int) and train_layers > len(blocks):
        raise LlmoptError(
            f"the model has {len(blocks)} transformer blocks, so at most {len(blocks)} can "
            f"train; got {train_layers} (use 'all' for every layer and the embeddings)"
        )


def layer_groups(model: nn.Module) -> tuple[list[str], str | None]:
    """(names of the transformer blocks in order, e.g. ``encoder.layer.0``; the block list)."""

    blocks = block_list(model)
    if blocks is None:
        return [], None
    return [f"{blocks}.{i}" for i in range(len(model.get_submodule(blocks)))], blocks


def _is_embedding_param(model: nn.Module, name: str) -> bool:
    owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    return isinstance(owner, nn.Embedding) or ".embeddings." in f".{name}"


def select_trainable(model: nn.Module, train_layers: str | int) -> tuple[int, int]:
    """Freeze every parameter but the chosen ones; returns (trainable, total) counts.

    ``head``: everything outside the transformer blocks and the embeddings (the classifier,
    a pooler, a final layer norm). ``K``: the head and the top K blocks (every block when the
    model has fewer). ``all``: everything, embeddings included.
    """
    blocks, prefix = layer_groups(model)
    top = blocks[max(len(blocks) - train_layers, 0) :] if isinstance(train_layers, int) else []
    trainable = total = 0
    for name, p in model.named_parameters():
        if train_layers == "all":
            on = True
        elif prefix is not None and name.startswith(prefix + "."):
            on = any(name.startswith(b + ".") for b in top)
        else:
            on = not _is_embedding_param(model, name)
        p.requires_grad_(on)
        total += p.numel()
        trainable += p.numel() if on else 0
    return trainable, total


# ---------------------------------------------------------------- data for Trainer


class _Rows(torch.utils.data.Dataset):
    """Tokenized rows as dicts (``input_ids`` lets Trainer group batches by length)."""

    def __init__(self, encoded: Encoded, labels: np.ndarray):
        self.encoded, self.labels = encoded, labels

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> dict:
        item = {"input_ids": self.encoded.input_ids[i], "labels": int(self.labels[i]), "rows": i}
        if self.encoded.token_type_ids is not None:
            item["token_type_ids"] = self.encoded.token_type_ids[i]
        return item


def _collate(pad_id: int) -> Callable[[list[dict]], dict]:
    def collate(items: list[dict]) -> dict:
        width = max(len(x["input_ids"]) for x in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)  # (batch, width)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        types = torch.zeros((len(items), width), dtype=torch.long)
        for j, x in enumerate(items):
            n = len(x["input_ids"])
            ids[j, :n] = torch.tensor(x["input_ids"])
            mask[j, :n] = 1
            if "token_type_ids" in x:
                types[j, :n] = torch.tensor(x["token_type_ids"])
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.tensor([x["labels"] for x in items]),
            "rows": torch.tensor([x["rows"] for x in items]),
        }
        if "token_type_ids" in items[0]:
            batch["token_type_ids"] = types
        return batch

    return collate


def cross_entropy(logits: Tensor, labels: Tensor, rows: Tensor) -> Tensor:
    """The fine-tuning loss: mean cross-entropy of the labels."""
    return nn.functional.cross_entropy(logits, labels)


@torch.inference_mode()
def validate(model: nn.Module, encoded: Encoded, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on tokenized rows, in eval mode."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    try:
        for rows, inputs in iter_batches(encoded, VAL_BATCH):
            logits = model(**inputs).logits.float()
            y = torch.as_tensor(labels[rows])
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
    finally:
        model.train(was_training)
    n = max(len(encoded), 1)
    return correct / n, loss / n


# ---------------------------------------------------------------- Trainer and its callbacks


def _trainer_class():
    from transformers import Trainer

    class LlmoptTrainer(Trainer):
        """``Trainer`` whose loss is llmopt's function of (logits, labels, rows)."""

        def __init__(self, *args, loss_fn: LossFn, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_fn = loss_fn
            self.loss_sum, self.loss_count = 0.0, 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels, rows = inputs.pop("labels"), inputs.pop("rows")
            outputs = model(**inputs)
            loss = self.loss_fn(outputs.logits, labels, rows)
            if model.training:
                self.loss_sum += float(loss.detach())
                self.loss_count += 1
            return (loss, outputs) if return_outputs else loss

        def take_loss(self) -> float | None:
            """Mean training loss since the last call."""
            if not self.loss_count:
                return None
            mean = self.loss_sum / self.loss_count
            self.loss_sum, self.loss_count = 0.0, 0
            return mean

    return LlmoptTrainer


def _monitor_class():
    from transformers import TrainerCallback

    class Monitor(TrainerCallback):
        """Validation, history, early stopping with the best weights kept, progress, cancel."""

        def __init__(self, loop: Loop):
            self.loop = loop

        def on_train_begin(self, args, state, control, **kwargs):
            self.loop.begin(state)

        def on_step_begin(self, args, state, control, **kwargs):
            if self.loop.before_step is not None:
                self.loop.before_step(state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            self.loop.step_end(state, control)

    return Monitor


@dataclass
class Loop:
    """One run of ``Trainer``: its data, its settings and what the callbacks record."""

    model: nn.Module
    config: TrainConfig
    task: str
    train_enc: Encoded
    train_labels: np.ndarray
    val_enc: Encoded | None
    val_labels: np.ndarray | None
    loss_fn: LossFn = cross_entropy
    progress: Progress | None = None
    cancel: threading.Event | None = None
    on_history: Callable[[dict], None] | None = None
    before_step: Callable[[int], None] | None = None  # called with the step about to run
    extra: Callable[[], dict] | None = None  # more values for each history entry
    eligible: Callable[[int], bool] = lambda step: True  # may this step's weights be kept?
    history: History = field(default_factory=list)
    cancelled: bool = False
    stopped_early: bool = False
    eval_every: int = 1
    _trainer: object = None
    _best: tuple | None = None  # (accuracy, -loss, step)
    _best_state: dict | None = None
    _bad: int = 0
    _start: float = 0.0

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.train_enc) / self.config.batch_size))

    def begin(self, state) -> None:
        self._start = time.perf_counter()
        self.record(0, 0.0, None)

    def record(self, step: int, epoch: float, loss: float | None) -> dict:
        entry = {"step": int(step), "epoch": round(float(epoch), 4), "loss": loss}
        if self.val_enc is not None:
            acc, val_loss = validate(self.model, self.val_enc, self.val_labels)
            entry.update(val_accuracy=acc, val_loss=val_loss)
        else:
            entry.update(val_accuracy=None, val_loss=None)
        if self.extra is not None:
            entry.update(self.extra())
        entry["seconds"] = round(time.perf_counter() - self._start, 3)
        self.history.append(entry)
        if self.on_history is not None:
            self.on_history(dict(entry))
        if entry["val_accuracy"] is not None and self.eligible(step):
            score = (entry["val_accuracy"], -entry["val_loss"])
            if self._best is None or score > self._best[:2]:
                self._best = (*score, step)
                self._best_state = {
                    n: p.detach().clone() for n, p in self.model.named_parameters()
                    if p.requires_grad
                }  # fmt: skip
                self._bad = 0
            else:
                self._bad += 1
        return entry

    def step_end(self, state, control) -> None:
        step = state.global_step
        last = step >= state.max_steps
        if step % self.eval_every == 0 or last:
            self.record(step, state.epoch or 0.0, self._trainer.take_loss())
            patience = self.config.patience
            if patience is not None and self._bad >= patience and not last:
                self.stopped_early = True
                control.should_training_stop = True
        if self.cancel is not None and self.cancel.is_set():
            self.cancelled = True
            control.should_training_stop = True
        if self.progress is not None:
            self.progress(min(step / max(state.max_steps, 1), 1.0), self.status(step, state))

    def status(self, step: int, state) -> str:
        elapsed = time.perf_counter() - self._start
        eta = elapsed / max(step, 1) * (state.max_steps - step)
        last = self.history[-1] if self.history else {}
        parts = [f"{self.task}: step {step}/{state.max_steps}"]
        if last.get("loss") is not None:
            parts.append(f"loss {last['loss']:.3f}")
        if last.get("val_accuracy") is not None:
            parts.append(f"val acc {last['val_accuracy']:.3f}")
        parts.append(f"ETA {int(eta) // 60}:{int(eta) % 60:02d}")
        return ", ".join(parts)

    @torch.no_grad()
    def restore_best(self) -> None:
        """Put back the weights of the best validation (early stopping's promise)."""
        if self._best_state is None:
            return
        params = dict(self.model.named_parameters())
        for name, value in self._best_state.items():
            params[name].copy_(value)

    def run(self) -> None:
        """Train with ``Trainer``; on return the model holds its best validated weights."""
        from transformers import TrainingArguments
        from transformers.utils import logging as hf_logging

        cfg = self.config
        steps_epoch = self.steps_per_epoch()
        self.eval_every = cfg.eval_every or max(1, steps_epoch // 4)
        hf_logging.set_verbosity_error()
        with tempfile.TemporaryDirectory(prefix="llmopt-train-") as out, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args = TrainingArguments(
                output_dir=out,  # nothing is saved there: save_strategy "no"
                per_device_train_batch_size=cfg.batch_size,
                num_train_epochs=float(cfg.epochs),
                learning_rate=cfg.lr,
                lr_scheduler_type="linear",
                warmup_steps=cfg.warmup_ratio,
                weight_decay=cfg.weight_decay,
                optim="adamw_torch",
                seed=cfg.seed,
                data_seed=cfg.seed,
                train_sampling_strategy="group_by_length",
                save_strategy="no",
                eval_strategy="no",
                logging_strategy="no",
                report_to="none",
                disable_tqdm=True,
                use_cpu=True,
                dataloader_num_workers=0,
                remove_unused_columns=False,
                log_level="error",
            )
            trainer = _trainer_class()(
                model=self.model,
                args=args,
                train_dataset=_Rows(self.train_enc, self.train_labels),
                data_collator=_collate(self.train_enc.pad_token_id),
                callbacks=[_monitor_class()(self)],
                loss_fn=self.loss_fn,
            )
            from transformers.trainer_callback import PrinterCallback, ProgressCallback

            for quiet in (PrinterCallback, ProgressCallback):  # llmopt reports progress itself
                trainer.remove_callback(quiet)
            self._trainer = trainer
            logging.getLogger("transformers.trainer").setLevel(logging.ERROR)
            trainer.train()
        self.restore_best()
        self.model.eval()


def make_loop(
    loaded: LoadedModel,
    train: TextDataset,
    val: TextDataset | None,
    config: TrainConfig,
    task: str,
    **kwargs,
) -> Loop:
    """A ``Loop`` over ``loaded.model`` (trained in place: pass a copy) with tokenized rows."""
    model = loaded.model
    max_length = min(config.max_length, loaded.max_length)
    types = accepts_token_types(model)
    train_enc = encode(loaded.tokenizer, train.texts, max_length, token_types=types)
    val_enc = encode(loaded.tokenizer, val.texts, max_length, token_types=types) if val else None
    return Loop(
        model=model, config=config, task=task, train_enc=train_enc, train_labels=train.labels,
        val_enc=val_enc, val_labels=None if val is None else val.labels, **kwargs,
    )  # fmt: skip
