"""TrainConfig: the knobs every training task shares (fine-tune, recover, prune, distil)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from llmopt.errors import LlmoptError

HEAD_LR = 1e-3  # a head alone (a linear layer) tolerates, and needs, a large step
ENCODER_LR = 3e-5  # BERT's recommended range is 2e-5 .. 5e-5; the head starts already fitted


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: which layers, how long, how fast; the defaults finish the bundled case in a
    few minutes on two CPU cores."""

    epochs: float = 2.0  # two passes move a pretrained encoder without overfitting 2,000 rows
    learning_rate: float | None = None  # None: HEAD_LR for the head alone, ENCODER_LR otherwise
    warmup_ratio: float = 0.1  # linear warm-up over the first 10% of steps, then linear decay
    weight_decay: float = 0.01  # AdamW's decoupled decay, as in the BERT fine-tuning recipe
    batch_size: int = 16  # small batches: more updates per minute on a CPU, little padding
    train_layers: str | int = 4  # "head", the top K blocks (+ head), or "all": 4 of MiniLM's 6
    train_limit: int | None = 2000  # training rows used (after a seeded shuffle); None = all
    val_fraction: float = 0.1  # carved from the training rows, stratified, for early stopping
    eval_every: int | None = None  # steps between validations; None = 4 per epoch
    patience: int | None = 4  # validations without improvement (one epoch) before stopping
    max_length: int = 128  # tokens per text: covers most reviews; attention cost grows with it
    seed: int = 0  # the shuffle, the validation split, dropout and the order of batches

    def __post_init__(self) -> None:
        if not _is_number(self.epochs) or self.epochs <= 0:
            raise LlmoptError(f"epochs must be a positive number, got {self.epochs!r}")
        lr = self.learning_rate
        if lr is not None and (not _is_number(lr) or not 0 < lr < 1):
            raise LlmoptError(f"the learning rate must be in (0, 1), e.g. 5e-5, got {lr!r}")
        if not _is_number(self.warmup_ratio) or not 0 <= self.warmup_ratio < 1:
            raise LlmoptError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise LlmoptError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise LlmoptError(f"batch_size must be a whole number >= 1, got {self.batch_size!r}")
        layers = self.train_layers
        if isinstance(layers, str) and layers.isdigit():
            object.__setattr__(self, "train_layers", int(layers))
        elif not (layers in ("head", "all") or (_is_int(layers) and layers >= 1)):
            raise LlmoptError(
                f"train_layers {layers!r} is not valid; allowed: 'head', a number of top "
                "transformer blocks (>= 1), or 'all'"
            )
        if self.train_limit is not None and (not _is_int(self.train_limit) or self.train_limit < 2):
            raise LlmoptError(f"train_limit must be a whole number >= 2, got {self.train_limit!r}")
        if not _is_number(self.val_fraction) or not 0 <= self.val_fraction < 0.5:
            raise LlmoptError(f"val_fraction must be in [0, 0.5), got {self.val_fraction!r}")
        if self.eval_every is not None and (not _is_int(self.eval_every) or self.eval_every < 1):
            raise LlmoptError(f"eval_every must be a whole number >= 1, got {self.eval_every!r}")
        if self.patience is not None and (not _is_int(self.patience) or self.patience < 1):
            raise LlmoptError(f"patience must be a whole number >= 1, got {self.patience!r}")
        if not _is_int(self.max_length) or self.max_length < 2:
            raise LlmoptError(f"max_length must be a whole number >= 2, got {self.max_length!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise LlmoptError(f"seed must be a whole number >= 0, got {self.seed!r}")

    @property
    def lr(self) -> float:
        """The learning rate in force (the default depends on what trains)."""
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return HEAD_LR if self.train_layers == "head" else ENCODER_LR

    def to_dict(self) -> dict:
        """Plain JSON-ready values of every field, and the learning rate in force."""
        return {**asdict(self), "learning_rate": self.lr}

    def with_(self, **changes) -> TrainConfig:
        """A copy with some fields changed (``None`` values are ignored: "not given")."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from ``to_dict`` output.

        Raises:
            LlmoptError: unknown keys or invalid values.
        """
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise LlmoptError(f"unknown training settings {unknown}; allowed: {sorted(allowed)}")
        return cls(**d)


# Recovery after compression: one short pass over 1,000 rows, every layer, compression kept.
RECOVERY = TrainConfig(epochs=1.0, train_layers="all", train_limit=1000)
