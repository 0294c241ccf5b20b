"""Per-layer sensitivity: compress one unit (a matrix, a block or a matrix type) at a time at a
few levels of one method, and measure how the task's metric moves on validation rows carved from
the training split; with cheap proxies beside it and how well each proxy ranks the units.

Fast by construction: the validation rows are tokenized once, the dense output of every block is
cached once, and each compressed copy runs only the blocks from its unit's first block on (the
blocks before it are replayed from the cache, so their output is bit-for-bit the dense one —
exactly what the full model computes, since nothing before the unit changed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from llmopt.data import TextDataset
from llmopt.errors import LlmoptError
from llmopt.lm.load import LoadedLM
from llmopt.loaded import LoadedModel, Progress, private_copy

GRANULARITIES = ("matrix", "block", "type")
# kind -> (the config field naming the method, the config field its levels set)
KIND_LEVEL = {
    "prune": ("sparsity_method", "sparsity"),
    "quantize": ("quant_method", "bits"),
    "lowrank": ("lowrank_method", "rank"),
}
VALIDATION_ROWS = 256  # enough rows for a ±5-point accuracy interval, cheap on a CPU
FISHER_ROWS = 64  # rows with per-row gradients for the Fisher proxy (a backward pass each)
GRAM_TOKENS = 4096  # validation tokens whose XᵀX gives the output error: ~10x the widest input
BATCH = 32  # rows per forward pass, as evaluation's default
# and at most this many padded tokens per classifier batch: ~10% faster than 32 rows of
# ~80 tokens on a 2-core CPU (smaller activations stay in cache; bench/auto.py measures)
BATCH_TOKENS = 1024
PROXIES = ("output_error", "weight_error", "fisher", "fisher_trace")
# Dense outputs of modules inside one block kept for the inner replay (``Validation.cache_inner``):
# ~240 MB for the bundled model's 256 validation rows; a larger need drops the biggest modules
INNER_CACHE_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Unit:
    """What is compressed alone: one or several target matrices."""

    name: str  # a matrix name, a block name, or a type (a matrix name without its block)
    matrices: tuple[str, ...]
    first_block: int  # the first block it touches (0: the whole network runs)


@dataclass
class LayerSensitivity:
    """One unit at one level."""

    name: str
    level: float
    delta: float  # metric(compressed) − metric(base) on the validation rows
    interval: tuple[float, float]  # paired 95% bootstrap interval of delta
    proxies: dict[str, float]  # cheap predictions of the loss (see PROXIES)
    extra: dict[str, float] = field(default_factory=dict)  # classifier: mean_kl, agreement

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "level": self.level,
            "delta": _num(self.delta),
            "interval": [_num(self.interval[0]), _num(self.interval[1])],
            "proxies": {k: _num(v) for k, v in self.proxies.items()},
            **{k: _num(v) for k, v in self.extra.items()},
        }


@dataclass
class SensitivityResult:
    """Every unit at every level, the baseline it is measured against, and the proxies' ranks."""

    method: str
    kind: str  # prune | quantize | lowrank
    levels: list[float]
    metric: str  # accuracy (classifier) or nll (causal LM, nats per token)
    granularity: str
    seconds: float
    baseline: float  # the metric of the uncompressed model on the validation rows
    n_validation: int  # validation rows (texts)
    layers: list[LayerSensitivity]
    proxy_correlation: dict[str, dict[str, float | None]]

    @property
    def higher_is_better(self) -> bool:
        return self.metric != "nll"

    def loss(self, row: LayerSensitivity) -> float:
        """How much worse the unit makes the model (positive = worse), whatever the metric."""
        return -row.delta if self.higher_is_better else row.delta

    def to_dict(self) -> dict:
        """The JSON contract: method, levels, metric, granularity, seconds, layers (+ extras)."""
        return {
            "method": self.method,
            "levels": list(self.levels),
            "metric": self.metric,
            "granularity": self.granularity,
            "seconds": self.seconds,
            "layers": [r.to_dict() for r in self.layers],
            "kind": self.kind,
            "baseline": _num(self.baseline),
            "validation_rows": self.n_validation,
            "proxy_correlation": self.proxy_correlation,
        }


def result_from_dict(data: dict) -> SensitivityResult:
    """The ``SensitivityResult`` a ``to_dict`` (an ``llmopt sensitivity --json`` file) holds;
    a null number (not finite when written) reads back as NaN.

    Raises:
        LlmoptError: a field of the contract missing or of the wrong kind.
    """
    known = {"name", "level", "delta", "interval", "proxies"}

    def num(x: Any) -> float:
        return math.nan if x is None else float(x)

    try:
        levels = [float(lv) for lv in data["levels"]]
        layers = [
            LayerSensitivity(
                name=str(r["name"]),
                level=float(r["level"]),
                delta=num(r["delta"]),
                interval=(num(r["interval"][0]), num(r["interval"][1])),
                proxies={str(k): num(v) for k, v in r["proxies"].items()},
                extra={str(k): num(v) for k, v in r.items() if k not in known},
            )
            for r in data["layers"]
        ]
        return SensitivityResult(
            method=str(data["method"]),
            kind=str(data.get("kind", "")),
            levels=levels,
            metric=str(data["metric"]),
            granularity=str(data["granularity"]),
            seconds=float(data["seconds"]),
            baseline=num(data.get("baseline")),
            n_validation=int(data.get("validation_rows", 0)),
            layers=layers,
            proxy_correlation=dict(data.get("proxy_correlation", {})),
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise LlmoptError(
            f"not a sensitivity result (as `llmopt sensitivity --json` writes): {exc!r}"
        ) from None


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# ---------------------------------------------------------------- units and levels


def units(model: nn.Module, granularity: str) -> list[Unit]:
    """The units of a granularity over the default targets (the blocks' Linear layers).

    Raises:
        LlmoptError: an unknown granularity, or a model without transformer blocks.
    """
    from llmopt.compression.targets import block_list, select_targets

    if granularity not in GRANULARITIES:
        raise LlmoptError(
            f"granularity {granularity!r} is unknown; allowed: {', '.join(GRANULARITIES)}"
        )
    blocks = block_list(model)
    targets = select_targets(model)
    if blocks is None or not targets:
        raise LlmoptError("found no transformer blocks with Linear layers to analyse")

    def block_of(name: str) -> tuple[int, str]:
        index, _, rest = name.removeprefix(f"{blocks}.").partition(".")
        return int(index), rest

    if granularity == "matrix":
        return [Unit(t, (t,), block_of(t)[0]) for t in targets]
    grouped: dict[str, list[str]] = {}
    for t in targets:
        index, rest = block_of(t)
        grouped.setdefault(f"{blocks}.{index}" if granularity == "block" else rest, []).append(t)
    return [Unit(k, tuple(v), min(block_of(m)[0] for m in v)) for k, v in grouped.items()]


def parse_levels(kind: str, text: str) -> list[float]:
    """Levels from ``"0.3,0.5,0.7"`` (sparsities), ``"8,4,3"`` (bits) or ``"64,16"`` (ranks).

    Raises:
        LlmoptError: an empty list, a non-number, or a level outside the kind's range.
    """
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise LlmoptError("--levels needs at least one level, e.g. 0.3,0.5,0.7")
    out: list[float] = []
    for p in parts:
        try:
            value = float(p) if kind == "prune" else int(p)
        except ValueError:
            what = "a sparsity in [0, 1)" if kind == "prune" else "a whole number"
            raise LlmoptError(f"level {p!r} is not {what}") from None
        out.append(value)
    for value in out:
        level_config(kind, _default_method(kind), value)  # the config's own range checks
    if len(set(out)) != len(out):
        raise LlmoptError(f"levels {text!r} repeat a level; give each once")
    return out


def _default_method(kind: str) -> str:
    from llmopt.compression import registry

    return registry.KINDS[kind].default


def level_config(kind: str, method: str, level: float, calibration_samples: int = 128, **extra):
    """The ``CompressionConfig`` of ``method`` at ``level`` (a sparsity, bits or a rank).

    Raises:
        LlmoptError: an unknown kind or method, or a level the config rejects.
    """
    from llmopt.compression.config import CompressionConfig

    if kind not in KIND_LEVEL:
        raise LlmoptError(f"kind {kind!r} is unknown; allowed: {', '.join(KIND_LEVEL)}")
    method_field, level_field = KIND_LEVEL[kind]
    value = float(level) if kind == "prune" else int(level)
    if kind == "prune" and value <= 0:
        raise LlmoptError(f"sparsity level {level} must be above 0 (and below 1)")
    settings: dict[str, Any] = {method_field: method, level_field: value, **extra}
    return CompressionConfig(calibration_samples=calibration_samples, **settings)


def split_validation(train: TextDataset, rows: int) -> tuple[TextDataset, TextDataset]:
    """(validation rows, the rest): the last ``rows`` rows of the training split, so the
    calibration texts (its first rows) and the test split are never among them.

    Raises:
        LlmoptError: ``rows`` not positive, or not leaving a row of the split for calibration.
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise LlmoptError(f"--validation-rows must be a positive whole number, got {rows!r}")
    if rows >= len(train):
        raise LlmoptError(
            f"--validation-rows {rows} leaves none of the {len(train)} training rows for "
            f"calibration; choose at most {max(1, len(train) // 2)}"
        )
    cut = len(train) - rows
    return _rows(train, np.arange(cut, len(train))), _rows(train, np.arange(cut))


def _rows(data: TextDataset, order: np.ndarray) -> TextDataset:
    return TextDataset(
        texts=[data.texts[i] for i in order],
        labels=data.labels[order],
        label_names=list(data.label_names),
        name=data.name,
        split=data.split,
        source=data.source,
        indices=None if data.indices is None else data.indices[order],
        dropped=list(data.dropped),
    )


# ---------------------------------------------------------------- validation inputs


class Validation:
    """The validation rows batched once, the dense outputs of the blocks, and the scorers.

    A classifier's rows are texts (``evaluation``'s length-sorted batches); a causal LM's are
    the paper protocol's windows of the joined texts (``lm.perplexity``'s batches).
    """

    def __init__(self, loaded: LoadedModel | LoadedLM, data: TextDataset, seq_len: int | None):
        from llmopt.compression.targets import block_list

        self.loaded = loaded
        self.is_lm = isinstance(loaded, LoadedLM)
        self.blocks_name = block_list(loaded.model)
        self.outputs: dict[int, list[Any]] = {}  # block index -> its dense output per batch
        # the embedding modules before the blocks -> their dense output per batch (replayed
        # with the blocks: nothing before the first block changes either)
        self.stem: dict[str, list[Any]] = {}
        self.current: int = 0  # the batch being run (read by the replayed blocks)
        # modules inside one block (``cache_inner``) -> their dense output per batch
        self.inner: dict[str, list[Any]] = {}
        self.n_classes = 0
        if isinstance(loaded, LoadedLM):
            from llmopt.lm.perplexity import build_windows, check_seq_len
            from llmopt.lm.scoring import iter_batches as lm_batches

            self.seq_len = check_seq_len(loaded, seq_len)
            windows, _bytes, _words = build_windows(loaded, data.texts, "paper", self.seq_len)
            vocab = loaded.model.get_output_embeddings().weight.shape[0]
            self.lm_batches = list(lm_batches(windows, vocab, BATCH))
            self.tokens = np.asarray(windows.n_scored, dtype=np.float64)
            self.n = len(windows)
        else:
            from llmopt.batching import accepts_token_types, encode, iter_batches
            from llmopt.evaluation import label_map

            model = loaded.model
            encoded = encode(
                loaded.tokenizer, data.texts, loaded.max_length,
                token_types=accepts_token_types(model),
            )  # fmt: skip
            self.batches = list(iter_batches(encoded, BATCH, max_tokens=BATCH_TOKENS))
            self.y_true = label_map(loaded, data)[data.labels]
            self.n = len(data)
            self.n_classes = len(loaded.label_names)

    def inputs(self) -> Iterator[tuple[int, dict, Tensor]]:
        """(batch number, model keyword inputs, (b, t) attention mask) of every batch."""
        if self.is_lm:
            device = next(self.loaded.model.parameters()).device
            for i, b in enumerate(self.lm_batches):
                kw = {
                    "input_ids": b.inputs.to(device),
                    "attention_mask": b.attention.to(device),
                    "use_cache": False,
                }
                yield i, kw, b.attention
        else:
            for i, (_rows, kw) in enumerate(self.batches):
                yield i, kw, kw["attention_mask"]

    def score(
        self, model: nn.Module, replay_from: int = 0, inner: tuple[str, ...] = ()
    ) -> np.ndarray:
        """Scores of ``model`` on every row: classifier (n, classes) probabilities in float64;
        causal LM (windows,) NLL sums. Blocks before ``replay_from`` are not run: they give
        the cached dense outputs (``cache_outputs``); nor are the ``inner`` modules (names
        from ``cache_inner``'s plan), which give theirs."""
        from llmopt.attention import attention_implementation

        with torch.inference_mode(), self._replay(model, replay_from, inner):
            if self.is_lm:
                from llmopt.lm.scoring import token_nll

                nll = np.zeros(self.n, dtype=np.float64)
                for i, kw, _mask in self.inputs():
                    self.current = i
                    b = self.lm_batches[i]
                    per_token = token_nll(model(**kw).logits.float(), b.targets)
                    sums = (per_token * b.scored.to(per_token.device)).double().sum(1).cpu()
                    nll[b.index.numpy()] = sums.numpy()
                return nll
            probs = np.zeros((self.n, self.n_classes), dtype=np.float64)
            with attention_implementation(model, "sdpa"):
                for i, kw, _mask in self.inputs():
                    self.current = i
                    logits = model(**kw).logits
                    probs[self.batches[i][0]] = torch.softmax(logits.double(), dim=-1).numpy()
            return probs

    def logits(
        self, model: nn.Module, replay_from: int = 0, inner: tuple[str, ...] = ()
    ) -> list[Tensor]:
        """The raw logits of every batch (what the suffix shortcut must reproduce)."""
        from llmopt.attention import attention_implementation

        out = []
        with torch.inference_mode(), self._replay(model, replay_from, inner):
            impl = "sdpa" if not self.is_lm else None
            ctx = attention_implementation(model, impl) if impl else _nothing()
            with ctx:
                for i, kw, _mask in self.inputs():
                    self.current = i
                    out.append(model(**kw).logits.float().clone())
        return out

    @contextmanager
    def _replay(self, model: nn.Module, k: int, inner: tuple[str, ...] = ()):
        """Blocks ``0..k-1`` of ``model`` return block ``k-1``'s cached dense output instead
        of computing (every block in between returns it too: the loop only passes it on), and
        so do the ``inner`` modules (``cache_inner``)."""
        missing = [name for name in inner if name not in self.inner]
        if missing:
            raise RuntimeError(f"{missing[0]}'s outputs were not cached")

        def replay_cached(outputs: list[Any]) -> Callable[..., Any]:
            return lambda *_args, **_kwargs: outputs[self.current]

        replaced = [(model.get_submodule(name), replay_cached(self.inner[name])) for name in inner]
        if k > 0:
            if k - 1 not in self.outputs:
                raise RuntimeError(f"block {k - 1}'s outputs were not cached")
            blocks = list(model.get_submodule(self.blocks_name))[:k]
            replay = replay_cached(self.outputs[k - 1])
            replaced += [(b, replay) for b in blocks] + [
                (model.get_submodule(name), replay_cached(self.stem[name])) for name in self.stem
            ]
        for module, forward in replaced:
            module.forward = forward  # an instance attribute: the class's forward is untouched
        try:
            yield
        finally:
            for module, _forward in replaced:
                del module.forward

    def cache_outputs(
        self, model: nn.Module, needed: set[int], grams: dict[str, Tensor] | None = None
    ) -> np.ndarray:
        """Run the dense ``model`` once: keep the outputs of the ``needed`` blocks and, for each
        name in ``grams``, add the Gram matrix XᵀX of that layer's inputs over real tokens.

        Returns:
            the dense model's scores (as ``score``).
        """
        from llmopt.compression.targets import get_weight

        blocks = list(model.get_submodule(self.blocks_name))
        hooks = []
        mask_now: list[Tensor] = []  # the mask of the batch being run
        grams = {} if grams is None else grams
        stem = stem_modules(model, self.blocks_name) if needed else []
        for name in stem:
            self.stem[name] = []
            hooks.append(
                model.get_submodule(name).register_forward_hook(
                    lambda _m, _a, out, name=name: self.stem[name].append(out)
                )
            )
        for b in needed:
            self.outputs[b] = []
            hooks.append(
                blocks[b].register_forward_hook(
                    lambda _m, _a, out, b=b: self.outputs[b].append(out)
                )
            )
        for name in list(grams):

            def gram(_m, args, _out, name=name):
                x = args[0]  # (b, t, in)
                keep = mask_now[-1].to(x.device).bool()
                rows = x[keep].float()  # (real tokens, in)
                rows = rows[: max(1, GRAM_TOKENS // n_batches)]  # a fixed share of each batch
                grams[name] += (rows.T @ rows).double().cpu()

            layer = model.get_submodule(name)
            hooks.append(layer.register_forward_hook(gram))
            w = get_weight(layer)
            grams[name] = torch.zeros(w.shape[1], w.shape[1], dtype=torch.float64)
        original = self.inputs
        n_batches = max(1, len(self.lm_batches if self.is_lm else self.batches))

        def masked():
            for i, kw, mask in original():
                mask_now[:] = [mask]
                yield i, kw, mask

        try:
            self.inputs = masked  # type: ignore[method-assign]
            return self.score(model)
        finally:
            self.inputs = original  # type: ignore[method-assign]
            for h in hooks:
                h.remove()
            for name in stem:  # replayed by batch number: only a module run once per batch
                if len(self.stem[name]) != n_batches:
                    del self.stem[name]

    def cache_inner(
        self, model: nn.Module, k: int, groups: dict[str, tuple[str, ...]]
    ) -> dict[str, tuple[str, ...]]:
        """Cache what the dense ``model``'s block ``k`` computes before each group's matrices
        run, so a copy compressed in those matrices only runs the rest of the block.

        One batch through the model records the order block ``k``'s modules start and end in;
        a group's replayable modules are the outermost ones with weights that ended before the
        first of its matrices started, called once per batch in a block itself called once
        (their inputs then depend on nothing the group changes; a block run several times per
        forward, as ALBERT's shared layer, replays nothing). Then every batch through block
        ``k`` keeps their outputs (the blocks before it replayed, the rest of the model not
        run), within ``INNER_CACHE_BYTES``: the biggest outputs are dropped first. Replaces
        what an earlier call kept.

        All of this runs on a structure-only copy of ``model`` (new modules, the same weight
        tensors): its swapped forwards and hooks never touch the model other sessions share.

        Args:
            model: the dense model (the same the block outputs were cached from).
            k: the block.
            groups: ``{name: the matrices compressed together}``, every one in block ``k``.

        Returns:
            ``{name: the modules to replay}`` (``score``'s ``inner``), for every group.
        """
        from llmopt.attention import attention_implementation

        self.inner = {}
        model = structure_copy(model)
        block = model.get_submodule(f"{self.blocks_name}.{k}")
        prefix = f"{self.blocks_name}.{k}."
        named = {f"{prefix}{n}": m for n, m in block.named_modules() if n}
        start: dict[str, int] = {}
        end: dict[str, int] = {}
        calls: dict[str, int] = {}
        size: dict[str, int] = {}  # bytes of the first batch's output
        clock = iter(range(1 << 62))

        class Stop(Exception):
            """Raised once block k has run: the rest of the model is not needed."""

        def stop(*_args: Any) -> None:
            raise Stop

        def run(first_only: bool, replay: bool) -> None:
            use_sdpa = attention_implementation(model, "sdpa") if not self.is_lm else _nothing()
            with torch.inference_mode(), self._replay(model, k if replay else 0), use_sdpa:
                for i, kw, _mask in self.inputs():
                    self.current = i
                    try:
                        model(**kw)
                    except Stop:
                        pass
                    if first_only:
                        return

        def nbytes(out: Any) -> int:
            if isinstance(out, Tensor):
                return out.numel() * out.element_size()
            if isinstance(out, (tuple, list)):
                return sum(nbytes(o) for o in out)
            return 0

        def pre(name: str) -> Callable[..., None]:
            def hook(*_args: Any) -> None:
                start.setdefault(name, next(clock))
                calls[name] = calls.get(name, 0) + 1

            return hook

        def post(name: str) -> Callable[..., None]:
            def hook(_m: Any, _a: Any, out: Any) -> None:
                end.setdefault(name, next(clock))
                size.setdefault(name, nbytes(out))

            return hook

        # the probe runs the whole model (no replay, no stop): every call of block k counts
        hooks = [block.register_forward_pre_hook(pre(prefix))]
        for name, module in named.items():
            hooks.append(module.register_forward_pre_hook(pre(name)))
            hooks.append(module.register_forward_hook(post(name)))
        try:
            run(first_only=True, replay=False)
        finally:
            for h in hooks:
                h.remove()
        plan: dict[str, tuple[str, ...]] = {g: () for g in groups}
        if calls.get(prefix) != 1:
            return plan
        weighted = {n for n, m in named.items() if any(True for _ in m.parameters())}
        for group, matrices in groups.items():
            first = min(start.get(m, -1) for m in matrices)
            before = [
                n for n in weighted if calls.get(n) == 1 and end.get(n, first) < first
            ]  # a group not seen run (first == -1) replays nothing
            plan[group] = tuple(
                sorted(n for n in before if not any(n.startswith(f"{o}.") for o in before))
            )
        needed = sorted({n for names in plan.values() for n in names})
        if not needed:
            return plan
        # outputs are (batch, tokens, ...): the first batch's bytes per padded token, times all
        padded = [int(mask.numel()) for _i, _kw, mask in self.inputs()]
        scale = sum(padded) / max(1, padded[0])
        keep = sorted(needed, key=lambda n: size.get(n, 0))
        while keep and sum(size.get(n, 0) for n in keep) * scale > INNER_CACHE_BYTES:
            keep.pop()  # the biggest first
        kept: dict[str, list[Any]] = {n: [] for n in keep}
        hooks = [block.register_forward_hook(stop)]
        for name in keep:
            hooks.append(
                named[name].register_forward_hook(
                    lambda _m, _a, out, name=name: kept[name].append(out)
                )
            )
        try:
            run(first_only=False, replay=True)
        finally:
            for h in hooks:
                h.remove()
        self.inner = {n: outs for n, outs in kept.items() if len(outs) == len(padded)}
        return {g: tuple(n for n in names if n in self.inner) for g, names in plan.items()}


def structure_copy(model: nn.Module) -> nn.Module:
    """New module objects holding the same weight tensors (no weights copied): forwards swapped
    and hooks hung on it never reach the model other sessions may be running. Only for
    read-only use (inference); take the model's lock around it (``model_lock``), so no other
    user's hook is copied along."""
    import copy

    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, memo=shared)


def stem_modules(model: nn.Module, blocks_name: str | None) -> list[str]:
    """The modules that compute the blocks' input from the token ids: the children of the
    blocks' ancestors (not on the way to the blocks) that are or hold an ``nn.Embedding``
    (BERT's ``embeddings``, GPT-2's ``wte`` and ``wpe``, a decoder's ``embed_tokens``).
    Rotary tables, poolers, final norms and heads hold no embedding table and stay live."""
    if not blocks_name:
        return []
    path = blocks_name.split(".")
    out = []
    for depth in range(len(path)):
        parent = ".".join(path[:depth])
        module = model.get_submodule(parent) if parent else model
        for child_name, child in module.named_children():
            if child_name == path[depth]:
                continue
            if any(isinstance(m, nn.Embedding) for m in child.modules()):
                out.append(f"{parent}.{child_name}" if parent else child_name)
    return out


@contextmanager
def _nothing():
    yield


# ---------------------------------------------------------------- the measured change


def classifier_delta(
    y_true: np.ndarray, base: np.ndarray, other: np.ndarray
) -> tuple[float, tuple[float, float], dict[str, float]]:
    """(accuracy change, its paired 95% interval, {mean_kl, agreement}) of ``other`` vs ``base``
    probabilities on the same rows."""
    from llmopt.stats import paired_intervals

    pred_b, pred_o = base.argmax(1), other.argmax(1)
    delta = float((pred_o == y_true).mean() - (pred_b == y_true).mean())
    interval = paired_intervals(y_true, base, other)[2]["accuracy"]
    p = np.clip(base, 1e-12, 1.0)
    q = np.clip(other, 1e-12, 1.0)
    kl = float((p * (np.log(p) - np.log(q))).sum(1).mean())
    return delta, interval, {"mean_kl": kl, "agreement": float((pred_b == pred_o).mean())}


def nll_delta(
    tokens: np.ndarray, base: np.ndarray, other: np.ndarray
) -> tuple[float, tuple[float, float]]:
    """(change of the mean NLL per token, its paired 95% interval over windows)."""
    from llmopt.stats import LEVEL, bootstrap_weights

    total = tokens.sum()
    delta = float(other.sum() / total - base.sum() / total)
    w = bootstrap_weights(len(tokens)).astype(np.float64)  # (B, windows)
    den = np.maximum(w @ tokens, 1e-300)
    reps = (w @ other) / den - (w @ base) / den
    tail = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(reps, [tail, 100 - tail])
    return delta, (float(lo), float(hi))


# ---------------------------------------------------------------- proxies


def fisher_diagonals(
    loaded: LoadedModel | LoadedLM, validation: Validation, names: list[str], rows: int
) -> dict[str, Tensor]:
    """Empirical Fisher diagonal of each named matrix: the mean over rows (windows for a
    causal LM) of the squared per-row gradient of that row's loss (cross-entropy of its label;
    a window's summed NLL), (out, in) in float64. Per-row gradients come from the layer's
    input and output gradient, so one backward pass per batch serves every row."""
    from llmopt.compression.targets import get_weight

    model = private_copy(validation.loaded.model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    fisher = {n: torch.zeros_like(get_weight(model.get_submodule(n)), dtype=torch.float64)
              for n in names}  # fmt: skip
    hooks, seen = [], [0]
    for name in names:
        layer = model.get_submodule(name)
        for p in layer.parameters():
            p.requires_grad_(True)

        def keep(_m, args, out, name=name):
            x = args[0].detach()  # (b, t, in)

            def grad_hook(g, x=x):  # (b, t, out)
                per_row = torch.einsum("bto,bti->boi", g.float(), x.float())
                fisher[name].add_((per_row**2).sum(0).double())

            out.register_hook(grad_hook)

        hooks.append(layer.register_forward_hook(keep))
    try:
        with torch.enable_grad():
            for i, kw, _mask in validation.inputs():
                if seen[0] >= rows:
                    break
                logits = model(**kw).logits
                if validation.is_lm:
                    from llmopt.lm.scoring import token_nll

                    b = validation.lm_batches[i]
                    per_token = token_nll(logits.float(), b.targets)
                    loss = (per_token * b.scored.to(per_token.device)).sum()
                    seen[0] += len(b.index)
                else:
                    rows_i = validation.batches[i][0]
                    target = torch.as_tensor(validation.y_true[rows_i], device=logits.device)
                    loss = nn.functional.cross_entropy(logits.float(), target, reduction="sum")
                    seen[0] += len(rows_i)
                loss.backward()
    finally:
        for h in hooks:
            h.remove()
    return {n: f / max(seen[0], 1) for n, f in fisher.items()}


def unit_proxies(
    base: nn.Module,
    compressed: nn.Module,
    unit: Unit,
    grams: dict[str, Tensor],
    fisher: dict[str, Tensor],
) -> dict[str, float]:
    """The proxies of one compressed unit (sums over its matrices):

    - ``output_error``: ‖(W − Ŵ)X‖_F / ‖WX‖_F on (up to ``GRAM_TOKENS``) validation tokens;
    - ``weight_error``: ‖W − Ŵ‖_F / ‖W‖_F;
    - ``fisher``: ½ Σ F_ij (W − Ŵ)_ij², the second-order estimate of the loss rise;
    - ``fisher_trace``: ½ mean(F) ‖W − Ŵ‖_F², the trace-only form (as HAWQ-v2's).
    """
    from llmopt.compression.targets import get_weight

    out_num = out_den = w_num = w_den = fish = trace = 0.0
    for name in unit.matrices:
        w = get_weight(base.get_submodule(name)).double()
        d = w - get_weight(compressed.get_submodule(name)).double()
        g = grams[name]
        out_num += float(torch.einsum("oi,ij,oj->", d, g, d))
        out_den += float(torch.einsum("oi,ij,oj->", w, g, w))
        w_num += float((d**2).sum())
        w_den += float((w**2).sum())
        f = fisher[name]
        fish += 0.5 * float((f * d**2).sum())
        trace += 0.5 * float(f.mean()) * float((d**2).sum())
    return {
        "output_error": math.sqrt(max(out_num, 0.0) / max(out_den, 1e-300)),
        "weight_error": math.sqrt(w_num / max(w_den, 1e-300)),
        "fisher": fish,
        "fisher_trace": trace,
    }


def proxy_correlation(result: SensitivityResult) -> dict[str, dict[str, float | None]]:
    """Spearman's rank correlation of each proxy with the measured loss: over every (unit,
    level), and per level (ranking the units at one level, what an allocator needs)."""
    from scipy.stats import spearmanr

    def rho(xs: list[float], ys: list[float]) -> float | None:
        if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
            return None  # undefined: a constant side has no ranks
        value = float(spearmanr(xs, ys).statistic)
        return None if math.isnan(value) else value

    out: dict[str, dict[str, float | None]] = {}
    for proxy in PROXIES:
        entry: dict[str, float | None] = {}
        groups = [("all", result.layers)] + [
            (f"{lv:g}", [r for r in result.layers if r.level == lv]) for lv in result.levels
        ]
        for key, rows in groups:
            entry[key] = rho([r.proxies[proxy] for r in rows], [result.loss(r) for r in rows])
        out[proxy] = entry
    return out


# ---------------------------------------------------------------- the analysis


def _dtype(model) -> torch.dtype:
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def sensitivity(
    loaded: LoadedModel | LoadedLM,
    train: TextDataset,
    *,
    kind: str,
    method: str,
    levels: list[float],
    granularity: str = "matrix",
    validation_rows: int = VALIDATION_ROWS,
    calibration_samples: int = 128,
    seq_len: int | None = None,
    fisher_rows: int = FISHER_ROWS,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> SensitivityResult:
    """Compress each unit alone at each level and measure the metric change.

    Args:
        loaded: a classifier (metric: accuracy, with KL and agreement) or a causal LM (metric:
            NLL per token on the paper protocol's windows of the validation texts).
        train: the training split; its last ``validation_rows`` rows are the validation rows,
            the others calibrate the methods that measure activations (never the test rows).
        kind: ``prune``, ``quantize`` or ``lowrank``.
        method: a registered method of that kind.
        levels: sparsities, bit-widths or ranks.
        granularity: ``matrix`` (each Linear), ``block`` (each transformer block), ``type``
            (each matrix type across blocks, e.g. every ``query``).
        validation_rows: how many rows (texts) to measure on.
        calibration_samples: texts (windows for a causal LM) the calibrated methods read.
        seq_len: a causal LM's window length (default: min(its limit, 1024)).
        fisher_rows: rows with per-row gradients for the Fisher proxies.
        progress: called with (fraction, message).
        cancel: polled between units; when it returns True, an ``LlmoptError`` stops the run.

    Returns:
        A ``SensitivityResult`` (one row per unit and level, in unit order then level order).

    Raises:
        LlmoptError: a bad kind, method, level or granularity, too few rows, a level some
            layer cannot take (a rank above its size), a calibrated method without texts.
    """
    from llmopt.compression import registry
    from llmopt.compression.calibrate import StatsCache
    from llmopt.compression.engine import check_config, compress
    from llmopt.loaded import model_lock

    started = time.perf_counter()
    report = progress or (lambda _f, _m: None)
    if kind not in KIND_LEVEL:
        raise LlmoptError(f"kind {kind!r} is unknown; allowed: {', '.join(KIND_LEVEL)}")
    registry.get(kind, method)
    if not levels:
        raise LlmoptError("give at least one level")
    levels = [float(lv) if kind == "prune" else int(lv) for lv in levels]
    # matrix and block units sit after dense blocks only, so one-pass statistics equal the
    # sequential ones and the dense ones are measured once (StatsCache); a type spans blocks
    calibration_mode = "sequential" if granularity == "type" else "one-pass"
    configs = [
        level_config(kind, method, lv, calibration_samples, calibration=calibration_mode)
        for lv in levels
    ]
    for config in configs:
        check_config(loaded, config)
    the_units = units(loaded.model, granularity)
    validation_data, calibration = split_validation(train, validation_rows)
    report(0.0, "sensitivity: caching the dense model's block outputs")
    validation = Validation(loaded, validation_data, seq_len)
    targets = sorted({m for u in the_units for m in u.matrices})
    grams: dict[str, Tensor] = {n: torch.zeros(0) for n in targets}
    needed = {u.first_block - 1 for u in the_units if u.first_block > 0}
    with model_lock(loaded.model):
        probe = structure_copy(loaded.model)  # the caching hooks never see others' forwards
    base_scores = validation.cache_outputs(probe, needed, grams)
    del probe
    report(0.02, "sensitivity: per-row gradients for the Fisher proxy")
    fisher = fisher_diagonals(loaded, validation, targets, fisher_rows)
    if validation.is_lm:
        baseline = float(base_scores.sum() / validation.tokens.sum())
    else:
        baseline = float((base_scores.argmax(1) == validation.y_true).mean())
    cache = StatsCache()
    rows: list[LayerSensitivity] = []
    steps = len(the_units) * len(configs)
    # matrix units also replay what their own block computes before them (cache_inner),
    # planned when a block's first copy shows the copies keep the base's float type
    inner_plan: dict[str, tuple[str, ...]] = {}
    inner_block = -1
    try:
        for ui, unit in enumerate(the_units):
            chosen = set(unit.matrices)
            for li, (level, config) in enumerate(zip(levels, configs, strict=True)):
                if cancel is not None and cancel():
                    raise LlmoptError("sensitivity analysis cancelled")
                step = ui * len(configs) + li
                report(
                    0.05 + 0.95 * step / steps,
                    f"sensitivity: {unit.name} at {level:g} ({step + 1}/{steps})",
                )
                compressed, _report = compress(
                    loaded,
                    config,
                    calibration=calibration,
                    filter_fn=_only(chosen),
                    cache=cache,
                    seq_len=validation.seq_len if validation.is_lm else None,
                )
                # A quantized bf16 LM comes back in fp32 (the engine keeps quantized weights
                # in fp32): the dense prefix's cached outputs are bf16, so the whole model runs.
                if _dtype(compressed.model) == _dtype(loaded.model):
                    if granularity == "matrix" and unit.first_block != inner_block:
                        inner_block = unit.first_block
                        same_block = {
                            u.name: u.matrices for u in the_units if u.first_block == inner_block
                        }
                        with model_lock(loaded.model):
                            inner_plan = validation.cache_inner(
                                loaded.model, inner_block, same_block
                            )
                    inner = inner_plan.get(unit.name, ()) if granularity == "matrix" else ()
                    scores = validation.score(compressed.model, unit.first_block, inner)
                else:
                    scores = validation.score(compressed.model, 0)
                extra: dict[str, float] = {}
                if validation.is_lm:
                    delta, interval = nll_delta(validation.tokens, base_scores, scores)
                else:
                    delta, interval, extra = classifier_delta(
                        validation.y_true, base_scores, scores
                    )
                proxies = unit_proxies(loaded.model, compressed.model, unit, grams, fisher)
                rows.append(LayerSensitivity(unit.name, level, delta, interval, proxies, extra))
                del compressed
    finally:  # a cancelled run's traceback may outlive it: let the cached outputs go now
        validation.inner, validation.outputs, validation.stem = {}, {}, {}
    result = SensitivityResult(
        method=method,
        kind=kind,
        levels=list(levels),
        metric="nll" if validation.is_lm else "accuracy",
        granularity=granularity,
        seconds=0.0,
        baseline=baseline,
        n_validation=len(validation_data),
        layers=rows,
        proxy_correlation={},
    )
    result.proxy_correlation = proxy_correlation(result)
    result.seconds = time.perf_counter() - started
    report(1.0, "sensitivity: done")
    return result


def _only(chosen: set[str]) -> Callable[[nn.Module, str], bool]:
    """A compress() filter choosing the layers named in ``chosen``."""

    def keep(_module: nn.Module, name: str) -> bool:
        return name in chosen

    return keep


def format_table(result: SensitivityResult) -> str:
    """A plain-text table: one line per unit, one column per level (delta and interval)."""
    names = list(dict.fromkeys(r.name for r in result.layers))
    by = {(r.name, r.level): r for r in result.layers}
    width = max([len(n) for n in names] + [4])
    unit_word = "points" if result.metric == "accuracy" else "nats/token"
    lines = [
        f"{result.method} ({result.kind}), {result.granularity} units, {result.metric} on "
        f"{result.n_validation} validation rows (baseline {result.baseline:.4f}); delta in "
        f"{unit_word} [95% interval]"
    ]
    lines.append(f"{'unit':<{width}}  " + "  ".join(f"{lv:>26g}" for lv in result.levels))
    scale = 100.0 if result.metric == "accuracy" else 1.0
    for n in names:
        cells = []
        for lv in result.levels:
            r = by.get((n, lv))
            if r is None:
                cells.append(f"{'':>26}")
                continue
            lo, hi = r.interval
            cells.append(f"{scale * r.delta:+8.3f} [{scale * lo:+7.3f},{scale * hi:+7.3f}]")
        lines.append(f"{n:<{width}}  " + "  ".join(cells))
    lines.append("proxy rank correlation with the measured loss (Spearman; all levels):")
    for proxy, entry in result.proxy_correlation.items():
        value = entry.get("all")
        lines.append(f"  {proxy:<14} {'n/a' if value is None else f'{value:+.3f}'}")
    lines.append(f"{len(result.layers)} measurements in {result.seconds:.1f} s")
    return "\n".join(lines)


def result_frame(result: SensitivityResult):
    """One pandas row per unit and level: delta, interval, extras and proxies."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "unit": r.name,
                "level": r.level,
                "delta": r.delta,
                "low": r.interval[0],
                "high": r.interval[1],
                **r.extra,
                **r.proxies,
            }
            for r in result.layers
        ]
    )


def correlation_frame(result: SensitivityResult):
    """One pandas row per proxy: its Spearman correlation with the loss, overall and per level
    (None where undefined: a constant side has no ranks)."""
    import pandas as pd

    return pd.DataFrame([{"proxy": p, **entry} for p, entry in result.proxy_correlation.items()])
