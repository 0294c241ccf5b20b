"""Pre-train a small GPT-style causal LM from scratch on a text column, within a time budget.

The model is a transformers ``GPT2LMHeadModel`` built from a config (nothing downloaded) with
a byte-level BPE tokenizer trained on the same texts (``llmopt.lm.bpe``). The texts are packed
into one token stream, separated by the end-of-text token or by "\n\n" (``token_stream``),
and trained on random windows with AdamW. Training runs until the minutes run out: the
learning-rate schedule (linear warm-up, cosine decay to a tenth) follows the fraction of the
budget spent, so however fast the machine is the decay ends when the time does; the ETA and
the planned step count come from the steps measured so far. A fixed step count instead of a
budget gives the same model however loaded the machine is: ``lm:bundled`` trains that way.
On a CPU with native bf16 the forward pass runs under bf16 autocast.

``bundled_lm`` is the model source ``lm:bundled``: such a model pre-trained on the bundled
reviews' training split at first use and cached under ``$LLMOPT_HOME/lm/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from llmopt import atomic
from llmopt.errors import Fix, LlmoptError
from llmopt.lm.bpe import DEFAULT_VOCAB, END_OF_TEXT, train_bpe
from llmopt.lm.device import fuse_gelu
from llmopt.loaded import Progress
from llmopt.paths import llmopt_home

PRETRAIN_VERSION = 3  # bump when the recipe changes: old cached models become stale
BUNDLED_SOURCE = "lm:bundled"
BUNDLED_NAME = "GPT-2-style LM pre-trained on the bundled reviews"
BUNDLED_MINUTES = 4.0  # the default time budget of `pretrain --minutes` on other texts
# lm:bundled trains a fixed number of steps, so its quality does not depend on how loaded the
# machine is: 600 steps (5.8 epochs of the reviews) took 260 s on a quiet 2-core machine with
# bf16 autocast and reached 1.85 held-out bits per byte (README).
BUNDLED_STEPS = 600
META = "llmopt_pretrain.json"
STAGE = "pretrain"  # the progress messages' prefix (one bar per run in the CLI)

StepHook = Callable[[int, float], None]  # (step, training loss) after every step


@dataclass(frozen=True)
class PretrainConfig:
    """The model and how long and how it is trained."""

    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    vocab_size: int = DEFAULT_VOCAB
    seq_len: int = 256  # training window = the model's position limit
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    minutes: float = BUNDLED_MINUTES  # the time budget (the training loop's, tokenizer excluded)
    steps: int | None = None  # a fixed step count instead of a budget (reproducible, tests)
    seed: int = 0
    autocast: str = "auto"  # auto (bf16 on a CPU with native bf16) | bf16 | off

    def check(self) -> None:
        """Raises LlmoptError for a budget or size that cannot train."""
        if self.steps is None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise LlmoptError(
                f"the time budget must be a positive number of minutes, got {self.minutes}"
            )
        if self.steps is not None and self.steps < 1:
            raise LlmoptError(f"the number of steps must be >= 1, got {self.steps}")
        if self.n_embd % self.n_head:
            raise LlmoptError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        if self.seq_len < 8 or self.batch_size < 1 or self.n_layer < 1:
            raise LlmoptError("seq_len >= 8, batch_size >= 1 and n_layer >= 1 are needed")
        if self.autocast not in ("auto", "bf16", "off"):
            raise LlmoptError(f"autocast {self.autocast!r} is not one of: auto, bf16, off")


BUNDLED_CONFIG = PretrainConfig(steps=BUNDLED_STEPS)  # lm:bundled's recipe, pretrain's default


@dataclass
class PretrainResult:
    model: torch.nn.Module  # GPT2LMHeadModel, fp32, eval mode
    tokenizer: Any  # PreTrainedTokenizerFast (untyped library)
    history: list[dict] = field(default_factory=list)  # {"step", "loss", "seconds"}
    stats: dict = field(default_factory=dict)  # steps, seconds, tokens, tokens_per_second, …


def build_model(config: PretrainConfig, vocab_size: int, eos_id: int):
    """A freshly initialised GPT-2 (no dropout: a few epochs of a small corpus)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt = GPT2Config(
        vocab_size=vocab_size,
        n_positions=config.seq_len,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(gpt)
    fuse_gelu(model)  # the same function, fused: trains and scores faster
    model.loss_type = "ForCausalLM"  # what transformers falls back to, without its warning
    return model


PAPER_SEPARATOR = "\n\n"  # how the paper protocol joins texts (llmopt.lm.perplexity)


def token_stream(tokenizer, texts: list[str], seed: int = 0) -> torch.Tensor:
    """All texts' tokens in order: (tokens,).

    Texts are packed in runs of one or more, joined within a run by "\n\n" (as the paper
    protocol joins held-out texts) and each run followed by the end-of-text token (as the
    per-document protocol starts each text); a run ends after a text with probability 1/2.
    Trained on end-of-text alone, the model pays about 0.1 bits per byte more on the paper
    protocol's separators (measured on the bundled reviews).
    """
    import random

    rng = random.Random(seed)  # noqa: S311 - which separator follows a text, not a secret
    runs, current = [], []
    for text in texts:
        current.append(text)
        if rng.random() < 0.5:
            runs.append(PAPER_SEPARATOR.join(current))
            current = []
    if current:
        runs.append(PAPER_SEPARATOR.join(current))
    eos = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    ids: list[int] = []
    for row in tokenizer(runs, add_special_tokens=False)["input_ids"]:
        ids.extend(row)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def use_bf16(config: PretrainConfig) -> bool:
    from llmopt.lm.device import native_bf16

    return config.autocast == "bf16" or (config.autocast == "auto" and native_bf16())


def clean_texts(texts) -> list[str]:
    """The non-empty texts; raises LlmoptError when there are none."""
    out = [str(t) for t in texts if str(t).strip()]
    if not out:
        raise LlmoptError("there are no non-empty texts to pre-train on")
    return out


def pretrain(
    texts: list[str],
    config: PretrainConfig = PretrainConfig(),
    *,
    progress: Progress | None = None,
    on_step: StepHook | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PretrainResult:
    """Train a tokenizer and a GPT-2-style model on ``texts`` within ``config.minutes``.

    Args:
        texts: the training texts (empty ones are skipped).
        config: model size and training recipe.
        progress: ``(fraction, message)`` callback; the message carries step, loss and ETA.
        on_step: called with ``(step, loss)`` after every step (a live loss curve).
        should_stop: polled every step; training ends early when it returns true.

    Raises:
        LlmoptError: no texts, a bad budget, or texts too short to fill one window.
    """
    config.check()
    texts = clean_texts(texts)
    torch.manual_seed(config.seed)
    if progress:
        progress(0.0, f"{STAGE}: training a byte-level BPE tokenizer on {len(texts)} texts")
    tokenizer = train_bpe(texts, config.vocab_size)
    stream = token_stream(tokenizer, texts, config.seed)
    window = config.seq_len
    if len(stream) <= window:
        raise LlmoptError(
            f"the texts hold {len(stream)} tokens, fewer than one training window of {window}",
            fix=Fix(cli="give more text", app="choose a dataset with more text"),
        )
    eos = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    model = build_model(config, len(tokenizer), eos)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": other, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    bf16 = use_bf16(config)
    generator = torch.Generator().manual_seed(config.seed)
    budget = None if config.steps is not None else 60.0 * config.minutes
    history: list[dict] = []
    start = time.perf_counter()
    step, elapsed = 0, 0.0
    while True:
        done = elapsed / budget if budget is not None else step / (config.steps or 1)
        if done >= 1.0 or (should_stop is not None and should_stop()):
            break
        lr = config.lr * min(1.0, (step + 1) / config.warmup_steps)
        lr *= 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(stream) - window, (config.batch_size,), generator=generator)
        batch = torch.stack([stream[s : s + window] for s in starts.tolist()])
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        elapsed = time.perf_counter() - start
        value = float(loss.detach())
        if not math.isfinite(value):
            raise LlmoptError(f"pre-training diverged at step {step} (loss {value}); lower the lr")
        history.append({"step": step, "loss": value, "seconds": round(elapsed, 3)})
        if on_step:
            on_step(step, value)
        if progress:
            progress(*_progress_line(step, value, elapsed, budget, config.steps))
    model.eval()
    seconds = time.perf_counter() - start
    tokens = step * config.batch_size * window
    stats = {
        "steps": step,
        "seconds": round(seconds, 2),
        "tokens_seen": tokens,
        "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
        "train_tokens": int(len(stream)),
        "epochs": round(tokens / len(stream), 2),
        "final_loss": round(sum(h["loss"] for h in history[-20:]) / max(len(history[-20:]), 1), 4)
        if history
        else None,
        "bf16_autocast": bf16,
        "params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
    }
    if progress:
        progress(1.0, f"{STAGE}: done, {step} steps in {seconds:.0f} s")
    return PretrainResult(model, tokenizer, history, stats)


def _progress_line(
    step: int, loss: float, elapsed: float, budget: float | None, steps: int | None
) -> tuple[float, str]:
    """(fraction, message) with the planned steps and the ETA from the measured step time."""
    per_step = elapsed / step
    if budget is None:
        total = steps or step
        left = per_step * (total - step)
        fraction = step / total
    else:
        total = max(step, int(budget / per_step))
        left = max(0.0, budget - elapsed)
        fraction = min(1.0, elapsed / budget)
    eta = f"{int(left // 60)}:{int(left % 60):02d}"
    return fraction, f"{STAGE}: step {step}/~{total}, loss {loss:.3f}, {eta} left"


def save_pretrained(result: PretrainResult, directory: Path, meta: dict) -> None:
    """A checkpoint ``load_causal_lm`` reads: config, safetensors weights, tokenizer, meta."""
    result.model.save_pretrained(directory, safe_serialization=True)
    result.tokenizer.save_pretrained(directory)
    (directory / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")


# ---- lm:bundled -------------------------------------------------------------------------


def bundled_key(fingerprint: str, config: PretrainConfig) -> str:
    src = json.dumps([PRETRAIN_VERSION, fingerprint, asdict(config)], sort_keys=True)
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def cached_folder(folder: Path, key: str) -> tuple[bool, str | None]:
    """``(True, None)`` for a complete cache folder, ``(False, None)`` when there is none,
    ``(False, why)`` when it is unreadable (then it is trained again, never fatal)."""
    if not folder.exists():
        return False, None
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        ok = (
            isinstance(meta, dict)
            and meta.get("key") == key
            and (folder / "config.json").is_file()
            and (folder / "model.safetensors").is_file()
            and (folder / "tokenizer.json").is_file()
        )
    except FileNotFoundError as exc:
        return False, f"{Path(exc.filename or '').name or 'a file'} is missing"
    except Exception as exc:  # noqa: BLE001 - any damage means "train it again"
        return False, type(exc).__name__
    return (True, None) if ok else (False, "it does not match this recipe")


def ensure_bundled(
    config: PretrainConfig | None = None,
    *,
    progress: Progress | None = None,
    texts: list[str] | None = None,
    fingerprint: str | None = None,
) -> tuple[Path, list[str]]:
    """The cache folder of ``lm:bundled``, pre-training it first if it is not there.

    A file lock beside the folder makes a second process wait for the first one's training
    instead of training too; the folder is published atomically, so a half-written one is
    never read.

    Args:
        config: the recipe (default: ``BUNDLED_CONFIG``, ``BUNDLED_STEPS`` steps).
        texts, fingerprint: the training texts and their fingerprint (default: the bundled
            reviews' training split); for tests.

    Returns:
        The folder and notes for the user (a damaged cache that was rebuilt).
    """
    from llmopt.sqlitefile import file_lock

    config = config or BUNDLED_CONFIG
    if texts is None:
        from llmopt.data import load_dataset

        train = load_dataset("bundled", "train")
        texts, fingerprint = train.texts, train.fingerprint
    fingerprint = fingerprint or hashlib.sha256("\n".join(texts).encode()).hexdigest()
    key = bundled_key(fingerprint, config)
    root = llmopt_home() / "lm"
    root.mkdir(parents=True, exist_ok=True)
    folder = root / key
    notes: list[str] = []
    ok, problem = cached_folder(folder, key)
    if ok:
        return folder, notes
    with file_lock(folder):
        ok, problem = cached_folder(folder, key)  # another process may have finished meanwhile
        if ok:
            return folder, notes
        if problem:
            notes.append(
                f"the cached pre-trained LM was unreadable ({problem}), so it was trained again"
            )
        if progress:
            progress(
                0.0,
                f"{STAGE}: pre-training {BUNDLED_SOURCE} on {len(texts)} reviews "
                f"(once, {planned(config)})",
            )
        result = pretrain(texts, config, progress=progress)
        meta = {
            "key": key,
            "source": BUNDLED_SOURCE,
            "dataset": "Amazon fine-food reviews (training split)",
            "dataset_fingerprint": fingerprint,
            "config": asdict(config),
            "stats": result.stats,
            "version": PRETRAIN_VERSION,
        }
        with atomic.staged_dir(folder, replace=problem is not None) as tmp:
            save_pretrained(result, tmp, meta)
    return folder, notes


def bundled_lm(
    *,
    dtype: str = "auto",
    device: str = "auto",
    attn_implementation: str | None = None,
    progress: Progress | None = None,
    config: PretrainConfig | None = None,
):
    """``lm:bundled`` as a ``LoadedLM`` (pre-trained at first use, then read from the cache)."""
    from llmopt.lm.device import resolve_device
    from llmopt.lm.load import _from_pretrained, local_checkpoint_size

    torch_device = resolve_device(device)
    folder, notes = ensure_bundled(config, progress=progress)
    lm = _from_pretrained(
        str(folder),
        BUNDLED_SOURCE,
        True,
        local_checkpoint_size(folder),
        dtype,
        torch_device,
        attn_implementation,
    )
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    stats = meta.get("stats", {})
    lm.name = BUNDLED_NAME
    lm.notes = [
        f"pre-trained here: {stats.get('params', 0) / 1e6:.1f} M parameters, "
        f"{stats.get('steps')} steps in {stats.get('seconds')} s on the bundled reviews' "
        "training split",
        *notes,
    ]
    return lm


def with_budget(
    config: PretrainConfig, minutes: float | None, steps: int | None = None
) -> PretrainConfig:
    """``config`` trained for ``minutes`` (a time budget) or ``steps`` (a fixed count)."""
    if minutes is not None and steps is not None:
        raise LlmoptError("give a time budget (--minutes) or a step count (--steps), not both")
    if steps is not None:
        return replace(config, steps=steps)
    return config if minutes is None else replace(config, minutes=minutes, steps=None)


def planned(config: PretrainConfig) -> str:
    """How long training is planned, in words: "600 steps" or "about 4 min"."""
    if config.steps is not None:
        return f"{config.steps} steps"
    return f"about {config.minutes:g} min"
