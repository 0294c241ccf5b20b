"""Attention maps of one text as plain arrays, and how much compression moved them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from llmopt.batching import accepts_token_types
from llmopt.errors import LlmoptError
from llmopt.loaded import LoadedModel, model_lock

if TYPE_CHECKING:
    from llmopt.lm.load import LoadedLM

DEFAULT_WINDOW = 64  # tokens per side of a causal LM's map: larger ones are unreadable
# At most this many tokens of a causal LM's text are run for maps: every layer's and head's
# (seq × seq) weights are kept, so memory grows with its square.
MAX_LM_TOKENS = 512


@dataclass
class AttentionMaps:
    """Every head's attention over one text: ``maps[layer, head, query, key]``."""

    tokens: list[str]  # one display string per position, as the tokenizer split the text
    maps: np.ndarray  # (layers, heads, seq, seq) float32; each row (query) sums to 1
    y_score: np.ndarray | None = None  # (classes,) the model's probabilities for this text
    label_names: list[str] = field(default_factory=list)  # the classes of ``y_score``
    # True where each token attends only to itself and earlier tokens (a decoder): the figures
    # leave the masked upper triangle blank instead of drawing zeros.
    causal: bool = False
    offset: int = 0  # the position of ``tokens[0]`` in the text (a window of a longer map)
    n_text_tokens: int = 0  # the tokens of the whole text before truncation (0: not counted)
    # A causal LM's most likely next tokens after the (truncated) text and their probabilities,
    # from the same forward pass: its counterpart of a classifier's prediction.
    next_tokens: list[tuple[str, float]] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def prediction(self) -> tuple[str, float] | None:
        """(predicted label, its probability) for this text, from the same forward pass."""
        if self.y_score is None or not len(self.y_score):
            return None
        best = int(np.argmax(self.y_score))
        name = self.label_names[best] if best < len(self.label_names) else str(best)
        return name, float(self.y_score[best])

    @property
    def n_layers(self) -> int:
        return int(self.maps.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.maps.shape[1])


@contextmanager
def attention_implementation(model: nn.Module, implementation: str) -> Iterator[str]:
    """Run ``model`` with ``"sdpa"`` (fused, no maps) or ``"eager"`` attention, then restore.

    Transformers reads the choice from the model's config at every forward pass, so it is
    switched on the config for the duration; a lock per model keeps a dashboard session that
    asks for attention maps from running while another evaluates the same shared model with
    fused attention. Models that do not support ``"sdpa"`` stay as they are.

    Yields:
        The implementation in force.
    """
    from transformers import PreTrainedModel

    parts = [m for m in model.modules() if isinstance(m, PreTrainedModel)]
    configs = list({id(m.config): m.config for m in parts}.values())
    if not configs or (implementation == "sdpa" and not all(m._supports_sdpa for m in parts)):
        yield getattr(configs[0], "_attn_implementation", "eager") if configs else "eager"
        return
    with model_lock(model):
        old = [c._attn_implementation for c in configs]
        try:
            for c in configs:
                c._attn_implementation = implementation
            yield implementation
        finally:
            for c, value in zip(configs, old, strict=True):
                c._attn_implementation = value


def _display_token(token: str) -> str:
    """Byte-level BPE marks a leading space with 'Ġ' and a newline with 'Ċ'; show them plainly."""
    return token.replace("Ġ", "␣").replace("Ċ", "⏎")


def _is_lm(loaded: object) -> bool:
    from llmopt.lm.load import LoadedLM

    return isinstance(loaded, LoadedLM)


def _is_causal(maps: torch.Tensor) -> bool:
    """Whether no token attends to a later one: exact zeros above the diagonal (a mask)."""
    return maps.shape[-1] > 1 and bool((torch.triu(maps, diagonal=1) == 0).all())


@torch.inference_mode()
def attention_maps(loaded: LoadedModel | LoadedLM, text: str) -> AttentionMaps:
    """Run one text through the model and collect the attention of every layer and head.

    Args:
        loaded: a classifier (loaded with eager attention, as ``load_model`` does) or a causal
            LM (``LoadedLM``; eager attention is switched on for this pass).
        text: the text; truncated to ``loaded.max_length`` tokens (a causal LM's also to
            ``MAX_LM_TOKENS``; ``n_text_tokens`` says how many the whole text has).

    Returns:
        The tokens, a ``(layers, heads, seq, seq)`` float32 array whose rows sum to 1 (over
        the earlier tokens for a causal model, whose upper triangle is 0 and ``causal`` True),
        and a classifier's class probabilities for the text (the same forward pass).

    Raises:
        LlmoptError: empty text, or a model that returns no attention weights.
    """
    if not str(text).strip():
        raise LlmoptError("the text is empty; type a sentence to see its attention")
    lm = _is_lm(loaded)
    limit = loaded.max_length
    if lm:
        limit = MAX_LM_TOKENS if limit is None else min(limit, MAX_LM_TOKENS)
    n_text = len(loaded.tokenizer(str(text))["input_ids"])
    inputs = loaded.tokenizer(str(text), truncation=True, max_length=limit, return_tensors="pt")
    if not accepts_token_types(loaded.model):
        inputs.pop("token_type_ids", None)
    if lm:
        inputs = {k: v.to(loaded.device) for k, v in inputs.items()}
    with attention_implementation(loaded.model, "eager"):
        out = loaded.model(**inputs, output_attentions=True)
    attentions = getattr(out, "attentions", None)
    if not attentions or any(a is None for a in attentions):
        raise LlmoptError(
            f"model {loaded.name!r} returned no attention weights; reload it with eager "
            "attention (load_model does this; for your own code pass "
            "attn_implementation='eager' to from_pretrained)"
        )
    maps = torch.stack([a[0].float().cpu() for a in attentions])  # (layers, heads, seq, seq)
    ids = inputs["input_ids"][0].tolist()
    tokens = [_display_token(str(t)) for t in loaded.tokenizer.convert_ids_to_tokens(ids)]
    logits = None if lm else getattr(out, "logits", None)
    y_score = (
        None if logits is None else torch.softmax(logits[0].double(), dim=-1).numpy()
    )  # (classes,)
    next_tokens = _next_tokens(loaded.tokenizer, out.logits[0, -1]) if lm else []
    return AttentionMaps(
        tokens=tokens,
        maps=maps.numpy().astype(np.float32),
        y_score=y_score,
        label_names=[] if lm else list(loaded.label_names),
        causal=lm or _is_causal(maps),
        n_text_tokens=n_text,
        next_tokens=next_tokens,
    )


NEXT_TOKENS = 3  # how many of a causal LM's likeliest next tokens the maps keep


def _next_tokens(tokenizer, logits: torch.Tensor, k: int = NEXT_TOKENS) -> list[tuple[str, float]]:
    """The ``k`` likeliest next tokens (as decoded text) and their probabilities."""
    probs = torch.softmax(logits.double().cpu(), dim=-1)  # (vocab,)
    top = torch.topk(probs, min(k, probs.numel()))
    return [
        (visible_text(str(tokenizer.decode([int(i)]))), float(p))
        for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def visible_text(text: str) -> str:
    """A decoded token with its spaces and line breaks visible, as the maps' labels show them
    (a predicted newline was an empty-looking cell): ' I' -> '␣I', '\n' -> '⏎'."""
    return text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") or "∅"


def attention_window(maps: AttentionMaps, start: int, size: int = DEFAULT_WINDOW) -> AttentionMaps:
    """The positions ``start .. start + size - 1`` of ``maps`` as queries and keys.

    A long text's map is read through such a window that the user moves; ``start`` is clamped
    so that the window lies inside the text (a shorter text gives its whole map). A causal
    window's rows sum to less than 1 when the tokens attend to positions before the window.

    Returns:
        ``AttentionMaps`` of ``(layers, heads, size, size)`` with ``offset`` the first position.

    Raises:
        LlmoptError: a size below 1.
    """
    if int(size) < 1:
        raise LlmoptError(f"an attention window has at least 1 token, got {size}")
    n = maps.n_tokens
    size = min(int(size), n)
    start = min(max(int(start), 0), n - size)
    end = start + size
    return replace(
        maps,
        tokens=maps.tokens[start:end],
        maps=maps.maps[:, :, start:end, start:end],
        offset=maps.offset + start,
    )


def masked(maps: AttentionMaps, z: np.ndarray) -> np.ndarray:
    """``z`` (query × key of ``maps``) as float with NaN where a causal model may not look."""
    z = np.array(z, dtype=float)
    if maps.causal:
        z[np.triu_indices(z.shape[-1], k=1)] = np.nan
    return z


def attention_predictions(base: AttentionMaps, other: AttentionMaps | None = None):
    """What each model predicts for the text of its maps: one row per model with its
    predicted label and that label's probability (the compressed model's row if given); for a
    causal LM, its likeliest next tokens after the text, one row each.

    Returns:
        A ``pandas.DataFrame`` with columns model, prediction, probability.
    """
    import pandas as pd

    rows = []
    for name, maps in (("uncompressed", base), ("compressed", other)):
        for token, probability in [] if maps is None else maps.next_tokens:
            rows.append({"model": name, "prediction": token, "probability": probability})
        if maps is not None and maps.prediction is not None:
            label, probability = maps.prediction
            rows.append({"model": name, "prediction": label, "probability": probability})
    return pd.DataFrame(rows, columns=["model", "prediction", "probability"])


def js_divergence(p: np.ndarray, q: np.ndarray, axis: int = -1) -> np.ndarray:
    """Jensen–Shannon divergence in bits between distributions along ``axis``.

    JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m) with m = ½ (p + q); symmetric, 0 for equal
    distributions and at most 1 bit. Inputs are normalised along ``axis`` first.

    Args:
        p, q: non-negative arrays of the same shape.
        axis: the axis along which each distribution lies.

    Returns:
        The divergence, with ``axis`` removed, in [0, 1].

    Raises:
        LlmoptError: arrays of different shapes.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise LlmoptError(f"js_divergence needs arrays of one shape, got {p.shape} and {q.shape}")
    p = p / p.sum(axis=axis, keepdims=True)
    q = q / q.sum(axis=axis, keepdims=True)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> np.ndarray:  # 0 · log 0 = 0; where a > 0, m > 0 too
        safe_m = np.where(a > 0, m, 1.0)
        terms = np.where(a > 0, a * np.log2(np.where(a > 0, a, 1.0) / safe_m), 0.0)
        return terms.sum(axis=axis)

    return np.clip(0.5 * kl(p) + 0.5 * kl(q), 0.0, 1.0)


def attention_drift(
    base: LoadedModel | LoadedLM, other: LoadedModel | LoadedLM, texts: list[str]
) -> np.ndarray:
    """Mean JS divergence (bits) between the two models' attention rows, per layer and head.

    Each query token's attention row of ``other`` is compared with the same row of ``base``
    (a causal model's rows over the tokens it may attend to, the masked ones being 0 in both);
    the divergences are averaged over the query tokens of a text, then over the texts.

    Args:
        base: the uncompressed model.
        other: a compressed copy (same architecture and tokenizer).
        texts: a handful of texts (about 8 is plenty).

    Returns:
        A ``(layers, heads)`` array in [0, 1]; 0 where attention is unchanged.

    Raises:
        LlmoptError: no texts, or models with different layer/head counts or tokenization.
    """
    texts = [t for t in texts if str(t).strip()]
    if not texts:
        raise LlmoptError("attention drift needs at least one non-empty text")
    total = None
    for text in texts:
        a = attention_maps(base, text)
        b = attention_maps(other, text)
        if a.maps.shape != b.maps.shape:
            raise LlmoptError(
                f"the models' attention differs in shape ({a.maps.shape} vs {b.maps.shape}); "
                "drift compares a model with a compressed copy of itself"
            )
        per_row = js_divergence(a.maps, b.maps, axis=-1)  # (layers, heads, seq)
        drift = per_row.mean(axis=-1)  # (layers, heads)
        total = drift if total is None else total + drift
    return total / len(texts)
