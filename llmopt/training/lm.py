"""Training tasks of a causal LM: recovery minimises the next-token NLL with the compression
kept; distillation trains a shallower student on the teacher's token-level distributions."""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmopt.data import TextDataset
from llmopt.errors import LlmoptError
from llmopt.lm.load import LoadedLM
from llmopt.lm.windows import paper_windows
from llmopt.loaded import Progress, private_copy
from llmopt.training.config import TrainConfig
from llmopt.training.constraints import constrain, release
from llmopt.training.loop import TrainingRun, select_trainable

LossFn = Callable[[nn.Module, Tensor], Tensor]  # (model, windows (batch, seq)) -> scalar loss


def is_lm(loaded: object) -> bool:
    """Whether ``loaded`` is a causal LM (the training tasks dispatch on it)."""
    return isinstance(loaded, LoadedLM)


def check_lm(loaded: object, what: str) -> LoadedLM:
    if not isinstance(loaded, LoadedLM):
        raise LlmoptError(
            f"{what} of a language model needs a LoadedLM (from load_causal_lm), "
            f"got {type(loaded).__name__}"
        )
    return loaded


def seq_len_for(lm: LoadedLM, config: TrainConfig) -> int:
    """Tokens per training window: ``config.max_length`` within the model's position limit."""
    return min(config.max_length, lm.max_length) if lm.max_length else config.max_length


def training_windows(lm: LoadedLM, data: TextDataset, config: TrainConfig) -> Tensor:
    """The training texts (``train_limit`` of them after a seeded shuffle) joined with a blank
    line, tokenized once and cut into non-overlapping windows of ``seq_len_for`` tokens, as the
    paper protocol of perplexity cuts its texts.

    Returns:
        A ``(windows, seq_len)`` long tensor.

    Raises:
        LlmoptError: texts too short to fill two windows.
    """
    texts = [str(t) for t in data.texts]
    order = np.random.default_rng(config.seed).permutation(len(texts))
    if config.train_limit is not None:
        order = order[: config.train_limit]
    seq_len = seq_len_for(lm, config)
    windows, _, _ = paper_windows(lm.tokenizer, [texts[i] for i in order], seq_len)
    if len(windows) < 2:
        raise LlmoptError(
            f"the training texts fill {len(windows)} window(s) of {seq_len} tokens; training "
            "a language model needs at least 2: give more texts or a smaller max_length"
        )
    return torch.tensor(windows.tokens, dtype=torch.long)


def split_windows(windows: Tensor, config: TrainConfig) -> tuple[Tensor, Tensor | None]:
    """(training windows, validation windows or None): a seeded split by ``val_fraction``."""
    n_val = int(round(len(windows) * config.val_fraction))
    if n_val == 0 or n_val >= len(windows):
        return windows, None
    order = torch.from_numpy(np.random.default_rng(config.seed + 1).permutation(len(windows)))
    return windows[order[n_val:]], windows[order[:n_val]]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _logits(model: nn.Module, ids: Tensor) -> Tensor:
    return model(input_ids=ids.to(_device(model))).logits.float()


def nll_loss(model: nn.Module, ids: Tensor) -> Tensor:
    """Mean next-token NLL of the windows: tokens 1.. predicted from the tokens before them,
    as ``model(ids, labels=ids).loss`` computes it."""
    logits = _logits(model, ids)[:, :-1]
    targets = ids[:, 1:].to(logits.device)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def token_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Mean over tokens of KL(teacher ‖ student) between the next-token distributions at
    temperature T, times T² (Hinton et al.: the gradients keep their scale as T changes).

    Args:
        student_logits, teacher_logits: ``(batch, seq, vocab)`` of the same windows.
    """
    t = float(temperature)
    log_p = F.log_softmax(teacher_logits.float() / t, dim=-1)
    log_q = F.log_softmax(student_logits.float() / t, dim=-1)
    per_token = (log_p.exp() * (log_p - log_q)).sum(-1)
    return per_token.mean() * t * t


@torch.no_grad()
def mean_loss(model: nn.Module, windows: Tensor, loss: LossFn, batch_size: int) -> float:
    """``loss`` averaged over the windows (weighted by batch size), in eval mode."""
    was = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size]
        total += float(loss(model, batch)) * len(batch)
    model.train(was)
    return total / len(windows)


def window_nll(lm: LoadedLM, windows: Tensor, batch_size: int = 8) -> float:
    """Mean next-token NLL (nats) of ``lm`` on the windows."""
    return mean_loss(lm.model, windows, nll_loss, batch_size)


def _train(
    model: nn.Module,
    train: Tensor,
    val: Tensor | None,
    loss: LossFn,
    config: TrainConfig,
    *,
    progress: Progress | None,
    cancel: threading.Event | None,
    on_history: Callable[[dict], None] | None,
) -> tuple[list[dict], bool, bool]:
    """AdamW with linear warm-up and decay over ``config.epochs`` passes of shuffled windows,
    validated ``eval_every`` steps (4 times per epoch by default); the weights with the best
    validation loss are restored at the end.

    Returns:
        (history, cancelled, stopped early).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LlmoptError("nothing to train: train_layers selects no parameter of this model")
    per_epoch = math.ceil(len(train) / config.batch_size)
    steps = max(1, math.ceil(config.epochs * per_epoch))
    warmup = int(config.warmup_ratio * steps)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / max(1, warmup) if s < warmup else max(0.0, (steps - s) / (steps - warmup))
        ),
    )
    every = config.eval_every or max(1, per_epoch // 4)
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    history: list[dict] = []
    best, best_state, waits = math.inf, None, 0
    cancelled = stopped = False
    order = torch.randperm(len(train), generator=gen)
    started = time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        if cancel is not None and cancel.is_set():
            cancelled = True
            break
        k = (step - 1) % per_epoch
        if k == 0 and step > 1:
            order = torch.randperm(len(train), generator=gen)
        batch = train[order[k * config.batch_size : (k + 1) * config.batch_size]]
        value = loss(model, batch)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        sched.step()
        entry: dict = {"step": step, "epoch": step / per_epoch, "loss": float(value.detach())}
        if val is not None and (step % every == 0 or step == steps):
            entry["val_loss"] = mean_loss(model, val, loss, config.batch_size)
            if entry["val_loss"] < best:
                best, waits = entry["val_loss"], 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waits += 1
            if config.patience is not None and waits >= config.patience:
                stopped = True
        history.append(entry)
        if on_history is not None:
            on_history(entry)
        if progress is not None:
            eta = (time.perf_counter() - started) / step * (steps - step)
            progress(
                step / steps, f"step {step}/{steps}, loss {entry['loss']:.4f}, ETA {eta:.0f} s"
            )
        if stopped:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history, cancelled, stopped


@dataclasses.dataclass
class _LoopState:
    """What ``TrainingRun.finished`` reads from a loop."""

    history: list[dict]
    cancelled: bool
    stopped_early: bool


def _copy(lm: LoadedLM, name: str) -> LoadedLM:
    """A private copy to train; on the CPU always in float32, whatever the LM was loaded in:
    bf16 weights round away updates smaller than 1/256 of a weight, and the command line loads
    LMs in float32 to train them, so the Train page and the CLI train the same way."""
    model, dtype = private_copy(lm.model), lm.dtype
    if lm.device == "cpu" and dtype in ("bf16", "fp16"):
        model, dtype = model.float(), "fp32"
    return dataclasses.replace(
        lm,
        model=model,
        dtype=dtype,
        name=name,
        notes=list(lm.notes),
        compression=copy.deepcopy(lm.compression),
    )


def _eval_windows(lm: LoadedLM, eval_data: TextDataset | None, config: TrainConfig):
    if eval_data is None:
        return None
    return training_windows(lm, eval_data, dataclasses.replace(config, train_limit=None))


def recover_lm(
    compressed: LoadedLM,
    train_data: TextDataset,
    config: TrainConfig | None = None,
    *,
    eval_data: TextDataset | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    on_history: Callable[[dict], None] | None = None,
) -> TrainingRun:
    """Recovery fine-tuning of a compressed causal LM: minimise the next-token NLL on windows
    of the training texts, keeping the compression (pruning masks exact, quantized weights on
    their grid through a straight-through estimator, low-rank layers factorised).

    Args:
        compressed: a causal LM from ``llmopt.compress`` (never modified); an uncompressed one
            is simply fine-tuned.
        train_data: the training texts (labels unused); validation windows are carved from them.
        config: ``TrainConfig`` (``max_length`` = tokens per window).
        eval_data: held-out texts; ``before``/``after`` are the mean NLL (nats per token) of the
            starting and the recovered model on their windows.
        progress, cancel, on_history: as for the classifier's ``finetune``.

    Returns:
        A ``TrainingRun`` (task ``recover-finetune``) whose model keeps the compression.

    Raises:
        LlmoptError: too few texts, or a model that cannot be trained (real int8 kernels).
    """
    check_lm(compressed, "recovery")
    config = config or TrainConfig(epochs=1.0, train_layers="all", train_limit=1000)
    started = time.perf_counter()
    run_model = _copy(compressed, f"{compressed.name} (recovered)")
    windows = training_windows(compressed, train_data, config)
    train, val = split_windows(windows, config)
    evals = _eval_windows(compressed, eval_data, config)
    before = None if evals is None else window_nll(compressed, evals, config.batch_size)
    model = run_model.model
    select_trainable(model, config.train_layers)
    constrain(model, compressed.compression)
    try:
        history, cancelled, stopped = _train(
            model, train, val, nll_loss, config,
            progress=progress, cancel=cancel, on_history=on_history,
        )  # fmt: skip
    finally:
        release(model)
        for p in model.parameters():
            p.requires_grad_(False)
    after = None if evals is None else window_nll(run_model, evals, config.batch_size)
    return TrainingRun.finished(
        "recover-finetune", run_model, compressed,  # type: ignore[arg-type]
        {"method": "finetune", "objective": "nll", "train": config.to_dict(),
         "compression": (compressed.compression or {}).get("config")},
        started=started, train=train, val=val,
        loop=_LoopState(history, cancelled, stopped), before=before, after=after,
    )  # fmt: skip


def distill_lm(
    teacher: LoadedLM,
    train_data: TextDataset,
    *,
    n_layers: int = 3,
    choice: str = "every",
    temperature: float = 2.0,
    alpha: float = 0.5,
    config: TrainConfig | None = None,
    eval_data: TextDataset | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    on_history: Callable[[dict], None] | None = None,
) -> TrainingRun:
    """Distil a causal LM into a student that keeps ``n_layers`` of its decoder blocks: the
    loss is ``alpha`` × NLL of the text + (1 − ``alpha``) × T² · KL(teacher ‖ student) of the
    next-token distributions at temperature T, averaged over every token of the windows.

    Args:
        teacher: the LM to imitate (never modified).
        train_data: the training texts (labels unused).
        n_layers, choice: the blocks the student keeps (``every``: evenly spaced; ``first``).
        temperature: T > 0; alpha: in [0, 1] (0: learn only from the teacher).
        config: ``TrainConfig`` (``max_length`` = tokens per window).
        eval_data: held-out texts; ``before``/``after`` are the mean token KL (T = 1) of the
            starting student and the trained student to the teacher on their windows.
        progress, cancel, on_history: as for ``distill``.

    Returns:
        A ``TrainingRun`` (task ``distill``) with the student.

    Raises:
        LlmoptError: bad settings or too few texts.
    """
    from llmopt.training.distill import DISTILL, make_student, student_layers
    from llmopt.training.loop import layer_groups

    check_lm(teacher, "distillation")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise LlmoptError(f"the temperature must be > 0, got {temperature!r}")
    if not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
        raise LlmoptError(f"alpha must be in [0, 1], got {alpha!r}")
    config = config or DISTILL
    started = time.perf_counter()
    blocks, _ = layer_groups(teacher.model)
    layers = student_layers(len(blocks), n_layers, choice)
    student = make_student(teacher, layers)  # type: ignore[arg-type]
    windows = training_windows(teacher, train_data, config)
    train, val = split_windows(windows, config)
    evals = _eval_windows(teacher, eval_data, config)
    teacher_model = teacher.model

    def kl_to_teacher(t: float) -> LossFn:
        def loss(model: nn.Module, ids: Tensor) -> Tensor:
            with torch.no_grad():
                target = _logits(teacher_model, ids)
            return token_kl(_logits(model, ids), target, t)

        return loss

    soft = kl_to_teacher(float(temperature))

    def objective(model: nn.Module, ids: Tensor) -> Tensor:
        value = (1 - alpha) * soft(model, ids)
        return value + alpha * nll_loss(model, ids) if alpha > 0 else value

    measure = kl_to_teacher(1.0)
    before = None if evals is None else mean_loss(student.model, evals, measure, config.batch_size)
    select_trainable(student.model, config.train_layers)
    try:
        history, cancelled, stopped = _train(
            student.model, train, val, objective, config,
            progress=progress, cancel=cancel, on_history=on_history,
        )  # fmt: skip
    finally:
        for p in student.model.parameters():
            p.requires_grad_(False)
    after = None if evals is None else mean_loss(student.model, evals, measure, config.batch_size)
    recipe = {"n_layers": len(layers), "layers": layers, "choice": choice,
              "temperature": float(temperature), "alpha": float(alpha),
              "objective": "token-kl", "train": config.to_dict()}  # fmt: skip
    return TrainingRun.finished(
        "distill", student, teacher, recipe,  # type: ignore[arg-type]
        started=started, train=train, val=val,
        loop=_LoopState(history, cancelled, stopped), before=before, after=after,
    )  # fmt: skip


def finetune_lm(
    loaded: LoadedLM,
    train_data: TextDataset,
    config: TrainConfig | None = None,
    **hooks,
) -> TrainingRun:
    """Fine-tune an (uncompressed) causal LM on its next-token NLL: ``recover_lm`` without a
    compression to keep, recorded as a fine-tune (task ``finetune``)."""
    run = recover_lm(loaded, train_data, config, **hooks)
    run.task = "finetune"
    run.recipe = {**run.recipe, "task": "finetune"}
    return run


# --- before and after, as perplexity ---------------------------------------------------------


@dataclasses.dataclass
class LMTrainingEvaluation:
    """A trained LM against the model it started from, on the same held-out windows.

    ``before``/``after`` are ``PerplexityResult`` of the starting model (the compressed model
    of a recovery, the teacher of a distillation) and of the trained one; ``fidelity`` is the
    trained model's next-token agreement with the starting one; ``stats`` their bootstrap
    intervals and paired differences (``recording.lm_statistics``). ``base``/``base_fidelity``
    are the uncompressed model's result and its fidelity to the trained one when the start is
    not the base (a recovery): what the experiment store records.
    """

    before: object
    after: object
    fidelity: object
    stats: dict
    base: object = None
    base_fidelity: object = None

    def to_dict(self, labels: tuple[str, str] = ("before", "after")) -> dict:
        """``{labels[0]: LM, labels[1]: LM, "fidelity", "delta_intervals"}`` with each ``LM``
        as ``evaluate --task perplexity --json`` writes it (interval of its perplexity)."""
        first, second = labels
        return {
            "protocol": self.before.protocol,  # type: ignore[attr-defined]
            "seq_len": self.before.seq_len,  # type: ignore[attr-defined]
            first: self.before.to_dict(  # type: ignore[attr-defined]
                tuple(self.stats["baseline_intervals"]["perplexity"])
            ),
            second: self.after.to_dict(  # type: ignore[attr-defined]
                tuple(self.stats["intervals"]["perplexity"])
            ),
            "fidelity": self.fidelity.to_dict(),  # type: ignore[attr-defined]
            "delta_intervals": self.stats.get("delta_intervals", {}),
            "intervals": {first: self.stats["baseline_intervals"], second: self.stats["intervals"]},
        }

    def lines(self, labels: tuple[str, str] = ("before", "after")) -> list[str]:
        """The human-readable summary: perplexity and bits per byte with their intervals."""
        out = []
        for name, unit in (("perplexity", "perplexity"), ("bits_per_byte", "bits per byte")):
            b, a = self.before.metric(name), self.after.metric(name)  # type: ignore[attr-defined]
            lo_b, hi_b = self.stats["baseline_intervals"][name]
            lo_a, hi_a = self.stats["intervals"][name]
            out.append(
                f"{unit}: {labels[0]} {b:.4f} [{lo_b:.4f}, {hi_b:.4f}] -> {labels[1]} {a:.4f} "
                f"[{lo_a:.4f}, {hi_a:.4f}] (95% bootstrap intervals)"
            )
            delta = self.stats.get("delta_intervals", {}).get(name)
            if delta:
                noise = delta[0] <= 0 <= delta[1]
                out.append(
                    f"  paired difference {a - b:+.4f}, 95% interval [{delta[0]:+.4f}, "
                    f"{delta[1]:+.4f}]: {'noise (holds 0)' if noise else 'a real change'}"
                )
        f = self.fidelity
        out.append(
            f"next-token agreement with the {labels[0]} model "
            f"{f.top1_agreement:.4f}, mean KL {f.mean_kl:.4f} nats/token"  # type: ignore[attr-defined]
        )
        unit = "windows" if self.before.protocol == "paper" else "documents"  # type: ignore[attr-defined]
        out.append(
            f"{self.before.protocol} protocol, windows of {self.before.seq_len} tokens, "  # type: ignore[attr-defined]
            f"{self.before.n_tokens} tokens scored; intervals resample the {unit}"  # type: ignore[attr-defined]
        )
        return out


def evaluate_lm_training(
    start: LoadedLM,
    trained: LoadedLM,
    texts: list[str],
    *,
    base: LoadedLM | None = None,
    protocol: str = "paper",
    seq_len: int | None = None,
    progress: Progress | None = None,
) -> LMTrainingEvaluation:
    """Perplexity (with intervals) of the starting and the trained LM on the same windows of
    ``texts``, their paired differences and next-token fidelity; with ``base`` (a recovery's
    uncompressed model, not the start) also the base against the trained model.

    Raises:
        LlmoptError: what ``compare_lms`` raises (no texts, another tokenizer, …).
    """
    from llmopt.lm.fidelity import compare_lms
    from llmopt.recording import lm_statistics

    before, after, fidelity = compare_lms(
        start, trained, texts, protocol=protocol, seq_len=seq_len, progress=progress
    )
    stats = lm_statistics(before, after, fidelity)
    out = LMTrainingEvaluation(before, after, fidelity, stats)
    if base is not None and base is not start:
        out.base, _, out.base_fidelity = compare_lms(
            base, trained, texts, protocol=protocol, seq_len=seq_len, progress=progress
        )
    return out


def record_lm_training(
    store,
    run: TrainingRun,
    evaluation: LMTrainingEvaluation,
    *,
    base_lm: LoadedLM,
    dataset: TextDataset,
    parent: int | None = None,
    **where,
):
    """Store an LM training run as a perplexity variant of ``base_lm`` on ``dataset``'s texts:
    its recipe (the compression kept and the training), its parent (a recovery's: the
    compressed run it started from; default: the base run), perplexity with intervals and its
    fidelity to the base. ``where``: ``origin``, ``model_source``, ``dataset_source``, ``rows``.

    Returns:
        ``recording.Recorded``.
    """
    from llmopt.lm.load import lm_size
    from llmopt.recording import TRAINING, lm_statistics, record_lm_evaluation

    base = evaluation.base if evaluation.base is not None else evaluation.before
    fidelity = evaluation.base_fidelity if evaluation.base is not None else evaluation.fidelity
    recipe = dict(run.recipe)
    compression = recipe.pop("compression", None) or {}
    rows = dict(where.pop("rows", None) or {})
    rows.update(protocol=base.protocol, seq_len=base.seq_len)  # type: ignore[attr-defined]
    return record_lm_evaluation(
        store, lm=base_lm, dataset=dataset, base=base, base_size=lm_size(base_lm),
        other=evaluation.after, other_size=lm_size(run.model), fidelity=fidelity,
        config={**compression, TRAINING: recipe}, parent=parent, rows=rows,
        computed=lm_statistics(base, evaluation.after, fidelity), **where,
    )  # fmt: skip
