"""Token windows to score: the paper protocol's non-overlapping windows of one joined text, and
lm-evaluation-harness's rolling windows of each document alone (``loglikelihood_rolling``).

A window is a token sequence ``tokens``; the model reads ``tokens[:-1]`` and is scored on
predicting the last ``n_scored`` of ``tokens[1:]``. Both protocols, zero-shot label scoring and
fidelity feed the same batched scorer with such windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAPER_JOIN = "\n\n"  # how the GPTQ/SparseGPT/Wanda reference code joins the test texts


@dataclass
class Windows:
    """Token windows and what each belongs to."""

    tokens: list[list[int]]  # each window's tokens (input = tokens[:-1], targets = tokens[1:])
    n_scored: np.ndarray  # (windows,) scored targets, at the end of each window
    unit: np.ndarray  # (windows,) the bootstrap unit (window or document) each belongs to
    n_units: int

    def __len__(self) -> int:
        return len(self.tokens)


def tok_encode(tokenizer, text: str) -> list[int]:
    """Tokens of ``text`` as the harness's HFLM.tok_encode makes them: the tokenizer's defaults
    (special tokens included), but none added when the text already starts with the prefix
    token's text."""
    prefix = tokenizer.decode([prefix_token_id(tokenizer)])
    if prefix and text.startswith(prefix):
        return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer.encode(text))


def prefix_token_id(tokenizer) -> int:
    """The token the harness puts before a document (BOS, else end-of-text)."""
    if tokenizer.bos_token_id is not None:
        return tokenizer.bos_token_id
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to start documents")
    return tokenizer.eos_token_id


def paper_windows(
    tokenizer, texts: list[str], seq_len: int
) -> tuple[Windows, list[int], np.ndarray | None]:
    """The texts joined with a blank line, tokenized once with the tokenizer's defaults, cut
    into ``len // seq_len`` non-overlapping windows of ``seq_len`` tokens (remainder dropped).
    Each window predicts its tokens 1..seq_len-1, as ``model(window, labels=window)`` does.

    Returns:
        (windows, all tokens of the joined text, each token's end as a UTF-8 byte offset into
        the joined text, from a fast tokenizer's offsets; None for a slow tokenizer).
    """
    text = PAPER_JOIN.join(texts)
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(text, return_offsets_mapping=fast)
    ids = list(enc["input_ids"])
    ends = None
    if fast:
        char_ends = np.array([end for _start, end in enc["offset_mapping"]], dtype=np.int64)
        ends = utf8_prefix_bytes(text)[char_ends]
    tokens = cut(ids, seq_len)
    n = len(tokens)
    return Windows(tokens, np.full(n, seq_len - 1), np.arange(n), n), ids, ends


def cut(ids: list[int], seq_len: int, limit: int | None = None) -> list[list[int]]:
    """The first ``limit`` (default: all) non-overlapping windows of ``seq_len`` tokens of
    ``ids``, the remainder dropped: the paper protocol's windows."""
    n = len(ids) // seq_len if limit is None else min(limit, len(ids) // seq_len)
    return [ids[i * seq_len : (i + 1) * seq_len] for i in range(n)]


def utf8_prefix_bytes(text: str) -> np.ndarray:
    """(len(text) + 1,) UTF-8 bytes of ``text[:k]`` for every k, without a loop over chars."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    sizes = 1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000)
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])


def rolling_windows(tokens: list[int], prefix: int, max_len: int) -> list[tuple[list[int], int]]:
    """The harness's disjoint rolling windows of one document (``get_rolling_token_windows``
    with context 1, then ``make_disjoint_window``, then the model input cut to ``max_len``).

    The first window reads ``[prefix] + tokens[:max_len-1]`` and predicts ``tokens[:max_len]``;
    each later one predicts the next ``max_len`` tokens (the last: what remains) reading the
    ``max_len`` tokens before each, so the last window sees more context than it scores.

    Returns:
        [(window tokens, scored)] where the window's last ``scored`` targets are scored.
    """
    out: list[tuple[list[int], int]] = []
    if not tokens:
        return out
    first = min(max_len, len(tokens))
    out.append(([prefix, *tokens[:first]], first))
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_len)
        end = done + n
        context = tokens[max(end - max_len - 1, 0) : end - 1]
        context = context[: len(context) - (n - 1)]  # make_disjoint_window
        whole = (context + tokens[end - n : end])[-(max_len + 1) :]
        out.append((whole, n))
        done = end
    return out


def document_windows(tokenizer, texts: list[str], max_len: int) -> Windows:
    """Every text scored alone in rolling windows of at most ``max_len`` inputs after the
    prefix token, as ``lm-evaluation-harness``'s ``loglikelihood_rolling``."""
    prefix = prefix_token_id(tokenizer)
    tokens, scored, unit = [], [], []
    for i, text in enumerate(texts):
        for window, n in rolling_windows(tok_encode(tokenizer, text), prefix, max_len):
            tokens.append(window)
            scored.append(n)
            unit.append(i)
    return Windows(tokens, np.array(scored, dtype=np.int64), np.array(unit), len(texts))
