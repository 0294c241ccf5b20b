"""Perplexity of a causal LM on texts, by the two protocols users compare against: the paper
protocol (GPTQ/SparseGPT/Wanda reference code) and the per-document protocol
(lm-evaluation-harness ``loglikelihood_rolling``), with per-window or per-document sums kept
for bootstrap intervals."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from llmopt.errors import Fix, LlmoptError
from llmopt.lm.load import LoadedLM
from llmopt.lm.scoring import WindowScores, score_windows
from llmopt.lm.windows import Windows, document_windows, paper_windows

PROTOCOLS = ("paper", "document")
MAX_DEFAULT_SEQ_LEN = 1024  # the paper protocol's usual window (and most models' limit or less)
WORDS = re.compile(r"\s+")  # the harness's word boundary: count_words = len(re.split(...))


@dataclass
class PerplexityResult:
    """One model's scores on some texts, kept per bootstrap unit (window or document)."""

    protocol: str  # paper | document
    seq_len: int
    nll: np.ndarray  # (units,) float64 sum of -log p (nats) over each unit's scored tokens
    tokens: np.ndarray  # (units,) scored tokens per unit
    bytes: np.ndarray  # (units,) UTF-8 bytes of the text each unit scores
    words: np.ndarray | None  # (units,) words per document (document protocol only)
    documents: int  # texts given
    seconds: float  # model time of the scoring passes
    windows: Windows | None = None  # what was scored (for fidelity and the harder tokens)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.sum())

    @property
    def perplexity(self) -> float:
        """Token perplexity exp(total NLL / scored tokens) of this protocol."""
        return _exp_ratio(self.nll.sum(), self.tokens.sum())

    @property
    def bits_per_byte(self) -> float:
        """Total NLL in bits per UTF-8 byte: comparable across tokenizers."""
        total = self.bytes.sum()
        return float(self.nll.sum() / total / math.log(2)) if total > 0 else math.nan

    @property
    def byte_perplexity(self) -> float:
        return _exp_ratio(self.nll.sum(), self.bytes.sum())

    @property
    def word_perplexity(self) -> float | None:
        return None if self.words is None else _exp_ratio(self.nll.sum(), self.words.sum())

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else math.nan

    def metric(self, name: str) -> float:
        """``perplexity``, ``bits_per_byte``, ``byte_perplexity`` or ``word_perplexity``."""
        value = getattr(self, name) if name in METRICS else None
        if value is None:
            raise ValueError(f"{name!r} is not a metric of the {self.protocol} protocol")
        return value

    def to_dict(self, interval: tuple[float, float] | None = None) -> dict:
        """The ``LM`` object of ``evaluate --task perplexity --json`` (minus size fields)."""
        out = {
            "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte,
            "tokens": self.n_tokens,
            "documents": self.documents,
            "tokens_per_second": self.tokens_per_second,
            "interval": list(interval) if interval is not None else None,
        }
        if self.protocol == "document":
            out["word_perplexity"] = self.word_perplexity
            out["byte_perplexity"] = self.byte_perplexity
        return out


METRICS = ("perplexity", "bits_per_byte", "byte_perplexity", "word_perplexity")


def _exp_ratio(num: float, den: float) -> float:
    return float(math.exp(num / den)) if den > 0 else math.nan


def default_seq_len(lm: LoadedLM) -> int:
    """min(the model's position limit, 1024)."""
    return min(lm.max_length or MAX_DEFAULT_SEQ_LEN, MAX_DEFAULT_SEQ_LEN)


def check_seq_len(lm: LoadedLM, seq_len: int | None) -> int:
    """The window length to use, checked against the model's limit.

    Raises:
        LlmoptError: not a whole number ≥ 2, or above the model's position limit.
    """
    if seq_len is None:
        return default_seq_len(lm)
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 2:
        raise LlmoptError(f"seq_len must be a whole number of at least 2, got {seq_len!r}")
    if lm.max_length is not None and seq_len > lm.max_length:
        raise LlmoptError(
            f"seq_len {seq_len} is longer than {lm.name!r} allows ({lm.max_length} positions)",
            fix=Fix(cli=f"pass --seq-len {lm.max_length} or less", app="lower the window length"),
        )
    return seq_len


def check_texts(texts) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise LlmoptError("texts must be a list of strings")
    texts = list(texts)
    if not texts:
        raise LlmoptError("no texts to score; give at least one text")
    return texts


def build_windows(lm: LoadedLM, texts: list[str], protocol: str, seq_len: int) -> tuple:
    """(windows, bytes per unit, words per unit or None) for a protocol.

    Raises:
        LlmoptError: an unknown protocol, or texts too short for one paper window.
    """
    if protocol not in PROTOCOLS:
        raise LlmoptError(f"protocol {protocol!r} is not one of: {', '.join(PROTOCOLS)}")
    if protocol == "document":
        windows = document_windows(lm.tokenizer, texts, seq_len)
        n_bytes = np.array([len(t.encode("utf-8")) for t in texts], dtype=np.int64)
        words = np.array([len(WORDS.split(t)) for t in texts], dtype=np.int64)
        if len(windows) == 0:
            raise LlmoptError("the texts are empty (no tokens to score); give texts with words")
        return windows, n_bytes, words
    windows, ids, ends = paper_windows(lm.tokenizer, texts, seq_len)
    if len(windows) == 0:
        raise LlmoptError(
            f"the texts make {len(ids)} tokens, fewer than one window of {seq_len}",
            fix=Fix(
                cli="add texts (--limit), lower --seq-len, or use --protocol document",
                app="add rows, lower the window length, or choose the per-document protocol",
            ),
        )
    if ends is not None:  # bytes from the end of each window's first token to its last's
        first = np.arange(len(windows)) * seq_len
        return windows, ends[first + seq_len - 1] - ends[first], None
    return windows, window_bytes(lm.tokenizer, windows), None


def window_bytes(tokenizer, windows: Windows) -> np.ndarray:
    """UTF-8 bytes of the text each paper window scores (its tokens 1..), for a tokenizer
    without offsets: decoded with one token of left context, so a tokenizer that drops a
    leading space counts it (a character split between windows is counted approximately)."""
    out = np.zeros(len(windows), dtype=np.int64)
    for i, tokens in enumerate(windows.tokens):
        with_scored = tokenizer.decode(tokens, skip_special_tokens=True)
        context = tokenizer.decode(tokens[:1], skip_special_tokens=True)
        out[i] = len(with_scored.encode("utf-8")) - len(context.encode("utf-8"))
    return out


def result_from_scores(
    scores: WindowScores,
    windows: Windows,
    protocol: str,
    seq_len: int,
    n_bytes: np.ndarray,
    words: np.ndarray | None,
    documents: int,
) -> PerplexityResult:
    """Sum window scores into their units (windows or documents)."""
    nll = np.bincount(windows.unit, weights=scores.nll.numpy(), minlength=windows.n_units)
    tokens = np.bincount(windows.unit, weights=scores.tokens.numpy(), minlength=windows.n_units)
    return PerplexityResult(
        protocol=protocol,
        seq_len=seq_len,
        nll=nll.astype(np.float64),
        tokens=tokens.astype(np.int64),
        bytes=n_bytes,
        words=words,
        documents=documents,
        seconds=scores.seconds,
        windows=windows,
    )


def perplexity(
    lm: LoadedLM,
    texts: list[str],
    *,
    protocol: str = "paper",
    seq_len: int | None = None,
    batch_size: int | None = None,
    progress=None,
) -> PerplexityResult:
    """Score a causal LM on texts.

    Args:
        lm: from ``load_causal_lm``.
        texts: the documents (e.g. a dataset's test split).
        protocol: ``paper``: texts joined with "\\n\\n", tokenized once with the tokenizer's
            defaults, cut into non-overlapping windows of ``seq_len`` tokens (remainder
            dropped), each scored as ``model(window, labels=window).loss`` does; units are
            windows. ``document``: each text alone in the harness's rolling windows after a
            BOS/end-of-text token, with word and byte perplexity; units are documents.
        seq_len: window length (default: min(model limit, 1024)).
        batch_size: windows per forward pass (default: as many as fit a logits budget).
        progress: called with (fraction, message).

    Returns:
        A ``PerplexityResult``; ``perplexity_interval`` gives its bootstrap interval.

    Raises:
        LlmoptError: no texts, an unknown protocol, a bad ``seq_len``, or too few tokens.
    """
    texts = check_texts(texts)
    seq_len = check_seq_len(lm, seq_len)
    windows, n_bytes, words = build_windows(lm, texts, protocol, seq_len)
    scores = score_windows(lm.model, windows, batch_size=batch_size, progress=progress)
    return result_from_scores(scores, windows, protocol, seq_len, n_bytes, words, len(texts))
