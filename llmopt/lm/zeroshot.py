"""Zero-shot classification by label scoring: each label's score is the log-likelihood of its
verbalizer after a prompt, as lm-evaluation-harness scores multiple-choice tasks (``acc`` and
``acc_norm``); probabilities are the softmax over labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmopt.errors import Fix, LlmoptError
from llmopt.lm.load import LoadedLM
from llmopt.lm.scoring import score_windows
from llmopt.lm.windows import Windows, prefix_token_id, tok_encode

TEXT_SLOT = "{text}"
HARNESS_MAX_LENGTH = 2048  # the harness's default context when a model states no limit
# The bundled reviews' labels: 'great' (5 stars) and 'other'. Reviews often end in a verdict,
# so the prompt asks for one word of it.
DEFAULT_PROMPT = "{text}\nOverall, this product is"
DEFAULT_VERBALIZERS = {"great": "great", "other": "okay"}


@dataclass(frozen=True)
class ZeroShotConfig:
    """A prompt template with ``{text}`` and one verbalizer (words) per label."""

    prompt: str = DEFAULT_PROMPT
    verbalizers: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_VERBALIZERS))
    delimiter: str = " "  # put between prompt and verbalizer (the harness's target_delimiter)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or TEXT_SLOT not in self.prompt:
            raise LlmoptError(
                "the prompt template must contain {text} where the row's text goes",
                fix=Fix(
                    cli="pass e.g. --prompt '{text}\\nOverall, this product is'",
                    app="put {text} into the prompt template",
                ),
            )
        if not isinstance(self.verbalizers, dict) or len(self.verbalizers) < 2:
            raise LlmoptError(
                "zero-shot scoring needs a verbalizer for each of at least two labels",
                fix=Fix(
                    cli="pass --verbalizer LABEL=WORDS for each label",
                    app="fill in one verbalizer per label",
                ),
            )
        for label, words in self.verbalizers.items():
            if not isinstance(words, str) or not words.strip():
                raise LlmoptError(
                    f"the verbalizer of label {label!r} is empty",
                    fix=Fix(cli=f"pass --verbalizer {label}=WORDS", app="fill in its words"),
                )
        seen: dict[str, str] = {}
        for label, words in self.verbalizers.items():
            other = seen.setdefault(words.strip(), label)
            if other != label:
                raise LlmoptError(
                    f"labels {other!r} and {label!r} have the same verbalizer {words.strip()!r}, "
                    "so their scores would always tie",
                    fix=Fix(cli="give each label its own --verbalizer words", app="change one"),
                )

    def context(self, text: str) -> str:
        """The prompt with the text put in (plain replacement: braces in texts are text)."""
        return self.prompt.replace(TEXT_SLOT, text)


@dataclass
class ZeroShotResult:
    """Label scores of every row, and the classifier-shaped arrays made from them."""

    loglik: np.ndarray  # (n, labels) log p(delimiter + verbalizer | prompt), nats
    label_names: list[str]
    verbalizers: list[str]  # in label order
    prompt: str
    y_true: np.ndarray | None  # (n,) when the rows have labels
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def y_score(self) -> np.ndarray:
        """(n, labels) softmax of the log-likelihoods over the labels."""
        z = self.loglik - self.loglik.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    @property
    def y_pred(self) -> np.ndarray:
        """``acc``'s prediction: the label of highest log-likelihood."""
        return self.loglik.argmax(1)

    @property
    def y_pred_norm(self) -> np.ndarray:
        """``acc_norm``'s prediction: highest log-likelihood per character of the verbalizer
        (the harness divides by ``len(choice)``, the choice without the delimiter)."""
        return (self.loglik / acc_norm_lengths(self.verbalizers)).argmax(1)


def acc_norm_lengths(choices: list[str]) -> np.ndarray:
    """The harness's ``completion_len``: ``float(len(choice))`` (characters; bytes for ASCII)."""
    return np.array([float(len(c)) for c in choices])


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation tokens as the harness makes them for a causal LM: trailing
    spaces of the context move to the continuation, the whole is tokenized and split after the
    context's tokens; an empty context becomes the prefix (BOS/end-of-text) token."""
    if context == "":
        cont = list(tokenizer.encode(continuation, add_special_tokens=False))
        prefix = prefix_token_id(tokenizer)
        return ([prefix], cont) if cont[:1] != [prefix] else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok_encode(tokenizer, context + continuation)
    ctx = tok_encode(tokenizer, context)
    return ctx, whole[len(ctx) :]


def _label_order(config: ZeroShotConfig, label_names: list[str]) -> list[str]:
    missing = [n for n in label_names if n not in config.verbalizers]
    if missing:
        raise LlmoptError(
            f"no verbalizer for label(s) {', '.join(map(repr, missing[:5]))}",
            fix=Fix(
                cli=" ".join(f"--verbalizer {n}=WORDS" for n in missing[:3]),
                app="fill in a verbalizer for every label",
            ),
        )
    return [config.verbalizers[n] for n in label_names]


def zero_shot(
    lm: LoadedLM,
    texts: list[str],
    label_names: list[str],
    *,
    y_true: np.ndarray | None = None,
    config: ZeroShotConfig | None = None,
    batch_size: int | None = None,
    progress=None,
) -> ZeroShotResult:
    """Score every label of every row with the LM.

    Args:
        lm: from ``load_causal_lm``.
        texts: the rows' texts; label_names: the dataset's labels (in label-number order).
        y_true: (n,) label numbers, for ``metrics``.
        config: prompt and verbalizers (default: the bundled reviews' great/other).
        batch_size: windows per forward pass (default: a logits budget).
        progress: called with (fraction, message).

    Returns:
        A ``ZeroShotResult``; with ``y_true``, ``metrics`` has accuracy, macro precision /
        recall / F1 and ROC-AUC (as for classifiers, from ``y_score``), ``acc`` and
        ``acc_norm``.

    Raises:
        LlmoptError: a label without a verbalizer, or a prompt whose verbalizer part is longer
            than the model's context.
    """
    config = config or ZeroShotConfig()
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
        raise LlmoptError("zero-shot scoring needs a non-empty list of texts")
    if y_true is not None and len(y_true) != len(texts):
        raise LlmoptError(f"{len(texts)} texts but {len(y_true)} labels")
    choices = _label_order(config, list(label_names))
    max_len = lm.max_length or HARNESS_MAX_LENGTH
    tokens, scored = [], []
    for text in texts:
        context = config.context(text)
        for choice in choices:
            ctx, cont = encode_pair(lm.tokenizer, context, config.delimiter + choice)
            if not cont or len(cont) > max_len:
                raise LlmoptError(f"the verbalizer {choice!r} makes {len(cont)} tokens here")
            tokens.append((ctx + cont)[-(max_len + 1) :])
            scored.append(len(cont))
    k = len(choices)
    windows = Windows(tokens, np.array(scored), np.arange(len(tokens)), len(tokens))
    scores = score_windows(lm.model, windows, batch_size=batch_size, progress=progress)
    result = ZeroShotResult(
        loglik=-scores.nll.numpy().reshape(len(texts), k),
        label_names=list(label_names),
        verbalizers=choices,
        prompt=config.prompt,
        y_true=None if y_true is None else np.asarray(y_true, dtype=np.int64),
        seconds=scores.seconds,
    )
    if result.y_true is not None:
        from llmopt.evaluation import compute_metrics

        result.metrics = compute_metrics(result.y_true, result.y_score, result.y_pred)
        result.metrics["acc"] = float((result.y_pred == result.y_true).mean())
        result.metrics["acc_norm"] = float((result.y_pred_norm == result.y_true).mean())
    return result


def zero_shot_eval(lm, dataset, config, size: dict, progress=None):
    """Zero-shot label scoring of ``dataset`` as an ``EvalResult`` (the classifier's shape, so
    the JSON, predictions CSV, statistics and store are the classifier's), and the raw result.
    """
    from llmopt.evaluation import EvalResult, roc_curves

    names = list(dataset.label_names)
    res = zero_shot(lm, dataset.texts, names, y_true=dataset.labels, config=config,
                    progress=progress)  # fmt: skip
    k = len(names)
    y_true = np.asarray(dataset.labels)  # the rows' labels, as zero_shot was given them
    confusion = np.bincount(y_true * k + res.y_pred, minlength=k * k).reshape(k, k)
    result = EvalResult(
        y_true=y_true,
        y_score=res.y_score,
        y_pred=res.y_pred,
        label_names=names,
        metrics=dict(res.metrics),
        confusion=confusion,
        roc=roc_curves(y_true, res.y_score, names),
        latency_ms_per_sample=1000 * res.seconds / max(len(dataset), 1),
        name=lm.name,
        **size,
    )
    return result, res
