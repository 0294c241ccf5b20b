"""How closely a compressed LM follows its base on the same token windows: next-token top-1
agreement, mean KL(base ‖ compressed) per token, and the tokens whose loss rose most, in
context with both models' top predictions."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from llmopt.errors import LlmoptError
from llmopt.lm.load import LoadedLM
from llmopt.lm.perplexity import (
    PerplexityResult,
    build_windows,
    check_seq_len,
    check_texts,
    result_from_scores,
)
from llmopt.lm.scoring import WindowScores, iter_batches, logits_of
from llmopt.lm.windows import Windows

TOP_K = 20  # harder tokens kept: a screenful
CONTEXT_TOKENS = 24  # tokens of context shown before each harder token


@dataclass(frozen=True)
class HarderToken:
    """One scored token whose loss rose under compression, in its context."""

    window: int
    position: int  # index in the window's targets
    context: str  # the text just before the token
    token: str  # the token to predict
    base_loss: float  # -log p (nats) under the base model
    compressed_loss: float
    base_top: str  # the base model's most likely next token
    base_top_prob: float
    compressed_top: str
    compressed_top_prob: float

    @property
    def loss_increase(self) -> float:
        return self.compressed_loss - self.base_loss

    def to_dict(self) -> dict:
        return {**self.__dict__, "loss_increase": self.loss_increase}


@dataclass
class FidelityResult:
    """Token-level agreement of two models, kept per unit (window or document)."""

    agree: np.ndarray  # (units,) scored tokens whose top-1 predictions agree
    kl: np.ndarray  # (units,) sum of KL(base ‖ compressed) in nats over scored tokens
    tokens: np.ndarray  # (units,) scored tokens
    harder: list[HarderToken] = field(default_factory=list)  # largest loss increase first

    @property
    def top1_agreement(self) -> float:
        n = self.tokens.sum()
        return float(self.agree.sum() / n) if n else math.nan

    @property
    def mean_kl(self) -> float:
        n = self.tokens.sum()
        return float(self.kl.sum() / n) if n else math.nan

    def interval(self, metric: str = "top1_agreement") -> tuple[float, float]:
        """95% bootstrap interval of ``top1_agreement`` or ``mean_kl`` over the units."""
        from llmopt.lm.intervals import _ends, _weights

        num = {"top1_agreement": self.agree, "mean_kl": self.kl}.get(metric)
        if num is None:
            raise ValueError(f"{metric!r} is not top1_agreement or mean_kl")
        weights, level = _weights(len(self.tokens), None, None)
        den = weights @ self.tokens
        with np.errstate(divide="ignore", invalid="ignore"):
            return _ends(np.where(den > 0, (weights @ num) / den, np.nan), level)

    def to_dict(self) -> dict:
        """The ``fidelity`` object of ``evaluate --task perplexity --json``."""
        return {"top1_agreement": self.top1_agreement, "mean_kl": self.mean_kl}


def _same_vocabulary(base: LoadedLM, other: LoadedLM) -> None:
    if base.tokenizer is other.tokenizer:
        return
    if base.tokenizer.get_vocab() != other.tokenizer.get_vocab():
        raise LlmoptError(
            f"{base.name!r} and {other.name!r} have different tokenizers, so their next-token "
            "predictions cannot be compared token by token (compare bits per byte instead)"
        )


def compare_lms(
    base: LoadedLM,
    compressed: LoadedLM,
    texts: list[str],
    *,
    protocol: str = "paper",
    seq_len: int | None = None,
    batch_size: int | None = None,
    top_k: int = TOP_K,
    progress=None,
) -> tuple[PerplexityResult, PerplexityResult, FidelityResult]:
    """Score both models on the same windows in one pass: each one's perplexity, and their
    next-token fidelity.

    Args:
        base, compressed: two LMs with one tokenizer (the compressed one made from the base).
        texts, protocol, seq_len, batch_size: as ``perplexity``.
        top_k: how many harder tokens to keep.
        progress: called with (fraction, message).

    Returns:
        (base perplexity, compressed perplexity, fidelity); the perplexities equal what
        ``perplexity`` gives for each model alone.

    Raises:
        LlmoptError: different tokenizers, or what ``perplexity`` raises.
    """
    texts = check_texts(texts)
    _same_vocabulary(base, compressed)
    seq_len = check_seq_len(base, seq_len)
    windows, n_bytes, words = build_windows(base, texts, protocol, seq_len)
    n = len(windows)
    nll = {"base": torch.zeros(n, dtype=torch.float64), "comp": torch.zeros(n, dtype=torch.float64)}
    seconds = {"base": 0.0, "comp": 0.0}
    agree_w = torch.zeros(n, dtype=torch.float64)
    kl_w = torch.zeros(n, dtype=torch.float64)
    rows = []  # per batch: (window, position, delta, base nll, comp nll, tops and their probs)
    vocab = base.model.get_output_embeddings().weight.shape[0]
    done = 0
    for batch in iter_batches(windows, 3 * vocab, batch_size):  # two logits and a KL term
        logp = {}
        for key, lm in (("base", base), ("comp", compressed)):
            start = time.perf_counter()
            logp[key] = torch.log_softmax(logits_of(lm.model, batch), dim=-1).cpu()
            seconds[key] += time.perf_counter() - start
        mask = batch.scored
        target = batch.targets.unsqueeze(-1)
        token_nll = {k: -v.gather(-1, target).squeeze(-1) for k, v in logp.items()}  # (b, t)
        top_p = {k: v.max(-1) for k, v in logp.items()}
        agree = top_p["base"].indices == top_p["comp"].indices
        kl = (logp["base"].exp() * (logp["base"] - logp["comp"])).sum(-1)  # (b, t)
        for k in nll:
            nll[k][batch.index] = (token_nll[k] * mask).double().sum(1)
        agree_w[batch.index] = (agree & mask).double().sum(1)
        kl_w[batch.index] = (kl * mask).double().sum(1)
        w, pos = mask.nonzero(as_tuple=True)
        rows.append(
            np.stack(
                [
                    batch.index[w].numpy(),
                    pos.numpy(),
                    (token_nll["comp"] - token_nll["base"])[w, pos].numpy(),
                    token_nll["base"][w, pos].numpy(),
                    token_nll["comp"][w, pos].numpy(),
                    top_p["base"].indices[w, pos].numpy(),
                    top_p["base"].values[w, pos].exp().numpy(),
                    top_p["comp"].indices[w, pos].numpy(),
                    top_p["comp"].values[w, pos].exp().numpy(),
                ],
                axis=1,
            )
        )
        done += len(batch.index)
        if progress is not None:
            progress(done / n, f"compared {done}/{n} windows")
    tokens = torch.as_tensor(windows.n_scored, dtype=torch.int64)
    results = [
        result_from_scores(
            WindowScores(nll[k], tokens, seconds[k]),
            windows,
            protocol,
            seq_len,
            n_bytes,
            words,
            len(texts),
        )
        for k in ("base", "comp")
    ]
    units = windows.unit
    fidelity = FidelityResult(
        agree=np.bincount(units, weights=agree_w.numpy(), minlength=windows.n_units),
        kl=np.bincount(units, weights=kl_w.numpy(), minlength=windows.n_units),
        tokens=results[0].tokens.copy(),
        harder=_harder(base.tokenizer, windows, np.concatenate(rows), top_k),
    )
    return results[0], results[1], fidelity


def _harder(tokenizer, windows: Windows, rows: np.ndarray, top_k: int) -> list[HarderToken]:
    """The ``top_k`` scored tokens whose loss rose most (ties: earlier first)."""
    rising = rows[rows[:, 2] > 0]
    order = np.lexsort((rising[:, 1], rising[:, 0], -rising[:, 2]))[:top_k]
    out = []
    for r in rising[order]:
        w, pos = int(r[0]), int(r[1])
        seq = windows.tokens[w]  # targets are seq[1:], so target pos is seq[pos + 1]
        context = seq[max(0, pos + 1 - CONTEXT_TOKENS) : pos + 1]
        out.append(
            HarderToken(
                window=w,
                position=pos,
                context=tokenizer.decode(context),
                token=tokenizer.decode([seq[pos + 1]]),
                base_loss=float(r[3]),
                compressed_loss=float(r[4]),
                base_top=tokenizer.decode([int(r[5])]),
                base_top_prob=float(r[6]),
                compressed_top=tokenizer.decode([int(r[7])]),
                compressed_top_prob=float(r[8]),
            )
        )
    return out
