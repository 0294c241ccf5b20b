"""Generation side by side: the base and the compressed LM continue one prompt (greedy or
seeded sampling, with the KV cache), each token's probability under both models, and the
first token where the two continuations differ."""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass

import torch

from llmopt.errors import LlmoptError
from llmopt.lm.device import model_device
from llmopt.lm.load import LoadedLM
from llmopt.lm.windows import prefix_token_id

MAX_NEW_TOKENS = 4096  # a typo guard; models' own limits apply first


@dataclass
class GenerationSide:
    """One model's continuation of the prompt."""

    token_ids: list[int]
    tokens: list[str]  # each new token as text
    text: str  # the continuation decoded as a whole
    probs: list[float]  # each token's probability under the model that generated it
    probs_other: list[float] | None  # ... and under the other model (None: no other model)
    seconds: float  # the generation loop, prompt included

    @property
    def tokens_per_second(self) -> float:
        return len(self.token_ids) / self.seconds if self.seconds > 0 else math.nan

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "tokens": self.tokens,
            "token_ids": self.token_ids,
            "probs": self.probs,
            "probs_other": self.probs_other,
            "tokens_per_second": self.tokens_per_second,
        }


@dataclass
class Generation:
    """Both continuations and where they part."""

    prompt: str
    baseline: GenerationSide
    compressed: GenerationSide | None
    first_divergence: int | None  # first index where the tokens differ; None if they do not

    def to_dict(self) -> dict:
        """The object ``generate --json`` writes."""
        return {
            "prompt": self.prompt,
            "baseline": self.baseline.to_dict(),
            "compressed": None if self.compressed is None else self.compressed.to_dict(),
            "first_divergence": self.first_divergence,
        }


def prompt_ids(lm: LoadedLM, prompt: str) -> list[int]:
    """The prompt's tokens with the tokenizer's defaults; an empty prompt is the prefix token."""
    ids = list(lm.tokenizer(prompt)["input_ids"]) if prompt else []
    return ids or [prefix_token_id(lm.tokenizer)]


def cache_argument(model) -> str:
    """The forward argument that takes the key/value cache: ``cache`` in transformers 5.x
    (``past_key_values`` before it, still accepted with a deprecation warning)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def last_logits_argument(model) -> dict:
    """``{"logits_to_keep": 1}`` where the forward takes it: the output head then runs on the
    last position only (the one a step reads), not on every position of the input."""
    params = inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


def _buffered_layer_class():
    """A ``DynamicLayer`` that writes each step's keys and values into buffers sized for the
    whole generation instead of concatenating: the concatenation copied the cache at every
    step of every layer (about 2 ms of a 25 ms step of a 12 × 768 model). What the layer
    returns is a view of the filled part: the same keys and values as concatenation."""
    from transformers.cache_utils import DynamicLayer

    class BufferedLayer(DynamicLayer):
        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = capacity
            self.key_buffer: torch.Tensor | None = None
            self.value_buffer: torch.Tensor | None = None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = self.get_seq_length()
            end = n + key_states.shape[-2]
            keys, values = self.key_buffer, self.value_buffer
            if keys is None or values is None or end > keys.shape[-2]:
                size = max(end, self.capacity)
                keys = key_states.new_empty((*key_states.shape[:-2], size, key_states.shape[-1]))
                values = value_states.new_empty(
                    (*value_states.shape[:-2], size, value_states.shape[-1])
                )
                if n:
                    keys[..., :n, :] = self.keys
                    values[..., :n, :] = self.values
                self.key_buffer, self.value_buffer = keys, values
            keys[..., n:end, :] = key_states
            values[..., n:end, :] = value_states
            self.keys, self.values = keys[..., :end, :], values[..., :end, :]
            return self.keys, self.values

    return BufferedLayer


def buffered_cache(model, capacity: int):
    """A key/value cache for ``capacity`` positions whose layers fill preallocated buffers;
    ``None`` (the model's own cache then) where the model's cache has layers of another kind
    (sliding windows, static or quantized caches) or transformers builds it differently."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer

        cache = DynamicCache(config=model.config)
        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer for layer in layers):
            return None
        layer_class = _buffered_layer_class()
        cache.layers = [layer_class(capacity) for _ in layers]
        return cache
    except Exception:  # noqa: BLE001 - any other cache API: the model's own cache is right
        return None


def _returned_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


PROBE_EVERY = 32  # steps between two trials of the thread counts


class StepThreads:
    """The thread count for a loop of alike steps on the CPU, chosen by timing the steps.

    A decoding step is small (one token's matrix-vector products), so splitting it over
    threads gains little, and on a CPU that other processes share each step then waits for
    a thread the scheduler has parked: measured here under a load of 8 on 2 cores, a 12 x 768
    model decoded 2.2 tokens/s with 2 threads and 10 with one, while a quiet machine may favour
    the threads. So the steps try both, torch's count and one thread, alternately (steps 1-4
    after the prompt, again every ``PROBE_EVERY`` steps), and the rest run with the faster.
    The prompt step runs with torch's count. Off the CPU, or with one thread, it does nothing.
    """

    def __init__(self, device: torch.device):
        self.full = torch.get_num_threads()
        self.active = device.type == "cpu" and self.full > 1
        self.best = self.full
        self.trial: dict[int, float] = {}
        self.step = 0

    def __enter__(self) -> StepThreads:
        return self

    def __exit__(self, *_exc) -> None:
        if self.active and torch.get_num_threads() != self.full:
            torch.set_num_threads(self.full)

    def run(self, fn, **kwargs):
        """``fn(**kwargs)`` with the thread count this step gets; returns what ``fn`` returns."""
        if not self.active:
            return fn(**kwargs)
        phase = (self.step - 1) % PROBE_EVERY if self.step else None
        probing = phase is not None and phase < 4
        if probing:
            threads = (self.full, 1)[phase % 2]
        else:
            threads = self.full if self.step == 0 else self.best
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        start = time.perf_counter()
        result = fn(**kwargs)
        if probing:
            seconds = time.perf_counter() - start
            self.trial[threads] = min(self.trial.get(threads, math.inf), seconds)
            if phase == 3:
                self.best = min(self.trial, key=self.trial.__getitem__)
                self.trial = {}
        self.step += 1
        return result


@torch.inference_mode()
def continue_prompt(
    model,
    ids: list[int],
    *,
    max_new_tokens: int,
    sample: bool = False,
    seed: int = 0,
    temperature: float = 1.0,
    eos_token_id: int | None = None,
    use_cache: bool = True,
) -> tuple[list[int], list[float], float]:
    """Generate up to ``max_new_tokens`` after ``ids``.

    With ``use_cache`` each step feeds only the new token and the model's key/value cache;
    without, each step re-reads the whole sequence (the same tokens, slower). Either way a
    step computes the output head on the last position only, and runs with the thread count
    ``StepThreads`` finds faster.

    Returns:
        (new token ids, each one's probability, seconds).
    """
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    seq = torch.tensor([ids], device=device)
    step_input = seq
    past = buffered_cache(model, len(ids) + max_new_tokens) if use_cache else None
    new, probs = [], []
    cache_kw = cache_argument(model)
    extra = last_logits_argument(model)
    start = time.perf_counter()
    with StepThreads(device) as threads:
        for _ in range(max_new_tokens):
            out = threads.run(
                model, input_ids=step_input, use_cache=use_cache, **{cache_kw: past}, **extra
            )
            logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1).cpu()  # (vocab,)
            if sample:
                weights = torch.softmax(logp / temperature, dim=-1)
                token = int(torch.multinomial(weights, 1, generator=generator))
            else:
                token = int(logp.argmax())
            new.append(token)
            probs.append(float(logp[token].exp()))
            if token == eos_token_id:
                break
            nxt = torch.tensor([[token]], device=device)
            if use_cache:
                past, step_input = _returned_cache(out), nxt
            else:
                seq = torch.cat([seq, nxt], dim=1)
                step_input = seq
    return new, probs, time.perf_counter() - start


@torch.inference_mode()
def token_probs(model, ids: list[int], continuation: list[int]) -> list[float]:
    """Probability of each continuation token after ``ids`` (one teacher-forced pass)."""
    if not continuation:
        return []
    device = model_device(model)
    seq = torch.tensor([ids + continuation[:-1]], device=device)
    logp = torch.log_softmax(model(input_ids=seq, use_cache=False).logits[0].float(), dim=-1)
    target = torch.tensor(continuation, device=device)
    picked = logp[len(ids) - 1 :].gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return picked.exp().cpu().tolist()


def _side(lm, ids, other, kwargs) -> GenerationSide:
    new, probs, seconds = continue_prompt(lm.model, ids, **kwargs)
    tok = lm.tokenizer
    return GenerationSide(
        token_ids=new,
        tokens=[tok.decode([t]) for t in new],
        text=tok.decode(new),
        probs=probs,
        probs_other=None if other is None else token_probs(other.model, ids, new),
        seconds=seconds,
    )


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """First index where two token lists differ (a shorter list differs where it ends)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def generate_side_by_side(
    base: LoadedLM,
    compressed: LoadedLM | None,
    prompt: str,
    *,
    max_new_tokens: int = 32,
    sample: bool = False,
    seed: int = 0,
    temperature: float = 1.0,
    stop_at_eos: bool = True,
    use_cache: bool = True,
) -> Generation:
    """Continue ``prompt`` with the base model and (if given) the compressed one.

    Sampling draws from one seeded generator per model with the same seed, so two identical
    models give identical continuations and a difference comes from the models.

    Args:
        base, compressed: LMs with one tokenizer; ``compressed`` may be None.
        prompt: the text to continue (tokenized with the tokenizer's defaults).
        max_new_tokens: at most this many new tokens (fewer if end-of-text comes first).
        sample: sample from softmax(logits / temperature) instead of greedy argmax.
        seed: of the sampling.
        temperature: > 0, sampling only.
        stop_at_eos: stop after the end-of-text token.
        use_cache: use the key/value cache (off only to check or to time the difference).

    Raises:
        LlmoptError: a bad ``max_new_tokens`` or ``temperature``, or a prompt too long.
    """
    if not isinstance(prompt, str):
        raise LlmoptError("the prompt must be text")
    if (
        not isinstance(max_new_tokens, int)
        or isinstance(max_new_tokens, bool)
        or not 1 <= max_new_tokens <= MAX_NEW_TOKENS
    ):
        raise LlmoptError(f"max_new_tokens must be 1..{MAX_NEW_TOKENS}, got {max_new_tokens!r}")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise LlmoptError(f"temperature must be a number above 0, got {temperature!r}")
    ids = prompt_ids(base, prompt)
    limit = base.max_length
    if limit is not None and len(ids) + max_new_tokens > limit:
        raise LlmoptError(
            f"the prompt has {len(ids)} tokens; with {max_new_tokens} new ones it exceeds the "
            f"model's {limit} positions — shorten the prompt or lower --max-new-tokens"
        )
    kwargs = {
        "max_new_tokens": max_new_tokens,
        "sample": sample,
        "seed": seed,
        "temperature": float(temperature),
        "eos_token_id": base.tokenizer.eos_token_id if stop_at_eos else None,
        "use_cache": use_cache,
    }
    baseline = _side(base, ids, compressed, kwargs)
    if compressed is None:
        return Generation(prompt, baseline, None, None)
    other = _side(compressed, ids, base, kwargs)
    return Generation(
        prompt, baseline, other, first_divergence(baseline.token_ids, other.token_ids)
    )
