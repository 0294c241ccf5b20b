"""compress(): copy a model, run the registered steps (low-rank -> prune -> quantize), report."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from llmopt.compression import prune as P
from llmopt.compression.calibrate import input_norms
from llmopt.compression.config import CompressionConfig
from llmopt.compression.lowrank import LowRankLinear, break_even_rank, svd_factors
from llmopt.compression.quantize import (
    dynamic_int8_weight,
    fake_quantize,
    is_dynamic_int8,
    linear_from,
    quantize_dynamic_int8,
    scale_bits,
)
from llmopt.compression.report import (
    FLOAT_BITS,
    STORAGE_ASSUMPTIONS,
    CompressionReport,
    packed_storage,
    summarize,
)
from llmopt.compression.targets import (
    Filter,
    find_targets,
    get_bias,
    get_weight,
    in_blocks,
    is_conv1d,
    is_linear,
    replace,
    set_weight,
    stored_matrices,
)
from llmopt.data import TextDataset
from llmopt.errors import LlmoptError
from llmopt.loaded import LoadedModel, Progress, dense_size_bytes


@dataclass
class Context:
    """What the steps share: the model copy being compressed and what they learned."""

    model: nn.Module  # the copy; steps change it in place
    config: CompressionConfig
    base: LoadedModel
    targets: list[str]  # qualified names of the layers being compressed
    calibration: TextDataset | None
    progress: Callable[[float, str], None]
    scales: dict[str, Tensor] = field(default_factory=dict)  # stored matrix -> RTN scales
    masks: dict[str, Tensor] = field(default_factory=dict)  # stored matrix -> kept weights
    notes: dict[str, list[str]] = field(default_factory=dict)  # layer -> remarks for its row

    def matrices(self) -> list[str]:
        """Every stored weight matrix of the targets (a low-rank layer has two)."""
        return [m for t in self.targets for m in stored_matrices(self.model, t)]

    def note(self, layer: str, text: str) -> None:
        self.notes.setdefault(layer, []).append(text)


@dataclass(frozen=True)
class Step:
    """One registered compression step: when it runs, and what it does to the context."""

    active: Callable[[CompressionConfig], bool]
    apply: Callable[[Context], None]


STEPS: dict[str, Step] = {}  # step name -> handler; run in ORDER
ORDER = ("lowrank", "prune", "quantize", "int8_dynamic")


def register(name: str, active: Callable[[CompressionConfig], bool]):
    """Decorator: register ``fn(ctx)`` as step ``name``, run when ``active(config)``."""

    def wrap(fn: Callable[[Context], None]):
        STEPS[name] = Step(active, fn)
        return fn

    return wrap


@register("lowrank", active=lambda c: c.rank is not None)
@torch.no_grad()
def _lowrank(ctx: Context) -> None:
    r = ctx.config.rank
    for name in ctx.targets:
        module = ctx.model.get_submodule(name)
        weight, bias = get_weight(module), get_bias(module)
        a, b, _ = svd_factors(weight, r)  # (out, r), (r, in)
        even = break_even_rank(*weight.shape)
        if r < even:
            replace(ctx.model, name, LowRankLinear(a, b, bias, conv1d=is_conv1d(module)))
            ctx.note(name, f"factorised: {weight.shape[1]} -> {r} -> {weight.shape[0]}")
        else:
            set_weight(module, a @ b)
            ctx.note(
                name,
                f"dense rank-{r} reconstruction: no size or speed gain (break-even rank "
                f"{even:.1f})",
            )


def _magnitude_scores(ctx: Context, names: list[str]) -> dict[str, Tensor]:
    return {n: get_weight(ctx.model.get_submodule(n)).abs() for n in names}


def _wanda_scores(ctx: Context, names: list[str]) -> dict[str, Tensor]:
    texts = ctx.calibration.texts[: ctx.config.calibration_samples]
    norms = input_norms(
        ctx.model,
        ctx.base.tokenizer,
        texts,
        names,
        max_length=ctx.base.max_length,
        progress=ctx.progress,
    )
    scores = {}
    for n in names:
        weight = get_weight(ctx.model.get_submodule(n))
        if n not in norms:  # never called in a forward pass: nothing to weigh it by
            norms[n] = torch.ones(weight.shape[1])
            ctx.note(n.removesuffix(".down").removesuffix(".up"), "no activations: magnitude")
        scores[n] = P.wanda_scores(weight, norms[n])
    return scores


SCORERS = {"magnitude": _magnitude_scores, "wanda": _wanda_scores}  # method -> (ctx, names)


@register("prune", active=lambda c: c.prunes)
@torch.no_grad()
def _prune(ctx: Context) -> None:
    cfg = ctx.config
    names = ctx.matrices()
    scores = SCORERS[cfg.sparsity_method](ctx, names)
    if cfg.nm:
        masks = {n: P.nm_mask(scores[n], *cfg.nm) for n in names}
    elif cfg.sparsity_scope == "global":
        masks = dict(
            zip(names, P.global_masks([scores[n] for n in names], cfg.sparsity), strict=True)
        )
    else:
        masks = {n: P.row_mask(scores[n], cfg.sparsity) for n in names}
    for n in names:
        module = ctx.model.get_submodule(n)
        set_weight(module, get_weight(module) * masks[n])
        ctx.masks[n] = masks[n].bool()


@register("quantize", active=lambda c: c.bits is not None)
@torch.no_grad()
def _quantize(ctx: Context) -> None:
    for n in ctx.matrices():
        module = ctx.model.get_submodule(n)
        deq, scales = fake_quantize(get_weight(module), ctx.config.bits, ctx.config.group_size)
        set_weight(module, deq)
        ctx.scales[n] = scales


@register("int8_dynamic", active=lambda c: c.int8_dynamic)
@torch.no_grad()
def _int8_dynamic(ctx: Context) -> None:
    names = ctx.matrices()
    for n in names:
        module = ctx.model.get_submodule(n)
        if is_conv1d(module):  # torch has no int8 Conv1D: the same map as a Linear
            replace(ctx.model, n, linear_from(get_weight(module), module.bias))
            ctx.note(n, "Conv1D converted to an equivalent Linear for int8 kernels")
    quantize_dynamic_int8(ctx.model, names)


def compress(
    loaded: LoadedModel,
    config: CompressionConfig,
    *,
    calibration: TextDataset | None = None,
    progress: Progress | None = None,
    filter_fn: Filter | None = None,
) -> tuple[LoadedModel, CompressionReport]:
    """Compress a copy of ``loaded``: low-rank -> prune -> quantize -> int8 kernels.

    The input model is never modified (it may be shared); the copy shares its tokenizer.

    Args:
        loaded: the base model.
        config: what to do (see ``CompressionConfig``).
        calibration: texts for Wanda's activation norms (the training split; its first
            ``config.calibration_samples`` texts are used). Needed only by Wanda.
        progress: called with (fraction, message).
        filter_fn: ``(module, qualified_name) -> bool`` choosing the layers; default: the
            Linear/Conv1D layers inside the transformer blocks (every one with ``include_head``).

    Returns:
        (the compressed model with ``size_bytes`` = packed-format bytes, the per-layer report).

    Raises:
        LlmoptError: no layer to compress, a rank above a layer's limit, a group size that
            does not divide a layer's input size, Wanda without calibration texts.
    """
    if not isinstance(loaded, LoadedModel):
        raise LlmoptError(f"compress needs a LoadedModel, got {type(loaded).__name__}")
    if not isinstance(config, CompressionConfig):
        raise LlmoptError(f"config must be a CompressionConfig, got {type(config).__name__}")
    report_progress = progress or (lambda _f, _m: None)
    base = loaded.model
    if filter_fn is None:
        filter_fn = is_linear if config.include_head else in_blocks(base)
    targets = find_targets(base, filter_fn)
    if not targets and not config.is_identity:
        raise LlmoptError(
            f"found no Linear layers to compress in {loaded.name!r} "
            "(inside its transformer blocks); try include_head=True"
        )
    check_plan(base, targets, config)
    if config.prunes and config.sparsity_method == "wanda" and not calibration:
        raise LlmoptError(
            "Wanda needs calibration texts: pass calibration= the dataset's training split "
            "(or use sparsity_method='magnitude', which needs no data)"
        )
    model = copy.deepcopy(base).eval()
    ctx = Context(model, config, loaded, [] if config.is_identity else targets, calibration,
                  report_progress)  # fmt: skip
    active = [s for s in ORDER if STEPS[s].active(config)]
    for i, step in enumerate(active):
        report_progress(i / len(active), f"compressing: {step}")
        STEPS[step].apply(ctx)
    report_progress(1.0, "compressing: measuring the result")
    report = _report(ctx)
    compressed = LoadedModel(
        model=model,
        tokenizer=loaded.tokenizer,
        name=f"{loaded.name} (compressed)",
        label_names=list(loaded.label_names),
        source=loaded.source,
        max_length=loaded.max_length,
        size_bytes=int(report.totals["model_bytes_after"]),
        notes=list(loaded.notes) + _notes(config),
        compression=compression_state(ctx),
    )
    return compressed, report


@torch.no_grad()
def compression_state(ctx: Context) -> dict:
    """What a compressed model must keep if it is trained further, per stored weight matrix.

    Returns:
        ``{"config": the config as a dict, "masks": {matrix: bool (out, in) tensor of the
        weights pruning kept}, "scales": {matrix: (out, groups) quantization scales},
        "bits", "group_size"}``; masks only when pruning ran, scales only when weights were
        quantized to ``bits`` (symmetric grid: ``scale * k`` for integer ``|k| <= 2^(bits-1)-1``).
    """
    return {
        "config": ctx.config.to_dict(),
        "masks": dict(ctx.masks),
        "scales": {m: s.clone() for m, s in ctx.scales.items()},
        "bits": ctx.config.bits,
        "group_size": ctx.config.group_size,
    }


def check_config(loaded: LoadedModel, config: CompressionConfig) -> None:
    """Fail fast, before any evaluation, on a config this model's layers cannot take.

    Raises:
        LlmoptError: as ``compress`` would for a rank or group size some layer cannot take.
    """
    filter_fn = is_linear if config.include_head else in_blocks(loaded.model)
    check_plan(loaded.model, find_targets(loaded.model, filter_fn), config)


def check_plan(model: nn.Module, targets: list[str], config: CompressionConfig) -> None:
    """Fail before any slow work on a rank or group size some layer cannot take.

    Raises:
        LlmoptError: naming the first layer whose shape cannot take ``config``.
    """
    shapes = {n: tuple(get_weight(model.get_submodule(n)).shape) for n in targets}
    if config.rank is not None:
        bad = {n: min(s) for n, s in shapes.items() if config.rank > min(s)}
        if bad:
            name, limit = min(bad.items(), key=lambda kv: kv[1])
            raise LlmoptError(
                f"rank {config.rank} is larger than layer {name!r} allows: its weight is "
                f"{shapes[name][0]}x{shapes[name][1]}, so its rank is at most {limit}; "
                f"choose a rank between 1 and {min(min(s) for s in shapes.values())}"
            )
    g = config.group_size
    if config.bits is None or g is None:
        return
    for n, (out_f, in_f) in shapes.items():
        sizes = [in_f]
        if config.rank is not None and config.rank < break_even_rank(out_f, in_f):
            sizes.append(config.rank)  # the second factor's input is the rank
        for size in sizes:
            if size % g:
                what = "input size" if size == in_f else f"low-rank factor input size (rank {size})"
                raise LlmoptError(
                    f"group_size {g} does not divide the {what} {size} of layer {n!r}; choose a "
                    f"group size that divides {size} (e.g. {_divisors(size)}) or none for one "
                    "scale per output channel"
                )


def _divisors(n: int) -> str:
    return ", ".join([str(d) for d in range(min(n, 256), 0, -1) if n % d == 0][:4])


@torch.no_grad()
def _report(ctx: Context) -> CompressionReport:
    cfg, rows = ctx.config, []
    params = {"params_before": 0, "params_after": 0, "params_nonzero_after": 0}
    for name in ctx.targets:
        original = ctx.base.model.get_submodule(name)
        w = get_weight(original).double()
        bias = get_bias(original)
        layer = ctx.model.get_submodule(name)
        w_hat = get_weight(layer).double()
        norm = torch.linalg.norm(w).clamp_min(1e-30)
        bits_after, formats = 0, []
        for m in stored_matrices(ctx.model, name):
            bits_after += _matrix_bits(ctx, m, formats)
            stored = get_weight(ctx.model.get_submodule(m))
            params["params_after"] += stored.numel()
            params["params_nonzero_after"] += int(torch.count_nonzero(stored))
        for t in (w, bias):
            params["params_before"] += 0 if t is None else t.numel()
        if bias is not None:
            params["params_after"] += bias.numel()
            params["params_nonzero_after"] += int(torch.count_nonzero(bias))
        if bias is not None:
            bits_after += bias.numel() * FLOAT_BITS
        before = sum(
            t.numel() * t.element_size() for t in (get_weight(original), bias) if t is not None
        )
        rows.append({
            "name": name,
            "shape": list(w.shape),
            "sparsity": float((w_hat == 0).double().mean()),
            "bits": 8 if cfg.int8_dynamic else cfg.bits,
            "group_size": cfg.group_size if cfg.bits is not None else None,
            "rank": cfg.rank,
            "rel_error": float(torch.linalg.norm(w - w_hat) / norm),
            "bytes_before": int(before),
            "bytes_after": math.ceil(bits_after / 8),
            "format": "; ".join(formats),
            "dense_reconstruction": cfg.rank is not None and not isinstance(layer, LowRankLinear),
            "note": "; ".join(ctx.notes.get(name, [])),
        })  # fmt: skip
    base_bytes = dense_size_bytes(ctx.base.model)
    extra = {**params, "effective_sparsity_requested": cfg.effective_sparsity}
    assumptions = list(STORAGE_ASSUMPTIONS)
    if cfg.nm and cfg.sparsity:
        assumptions.append(
            f"sparsity_pattern {cfg.sparsity_pattern} fixes the sparsity at "
            f"{cfg.effective_sparsity:.3f}; the sparsity setting {cfg.sparsity} was ignored"
        )
    if cfg.group_size is not None and cfg.bits is None:
        assumptions.append(f"group_size {cfg.group_size} was ignored: it applies with bits only")
    return CompressionReport(rows, summarize(rows, base_bytes, extra), assumptions, cfg.to_dict())


def _matrix_bits(ctx: Context, name: str, formats: list[str]) -> int:
    module = ctx.model.get_submodule(name)
    nm = ctx.config.nm if ctx.config.prunes else None
    if is_dynamic_int8(module):
        weight, scales = dynamic_int8_weight(module)
        storage = packed_storage(weight, 8, n_scales=scales.numel(), scale_bits=32, nm=nm)
    elif name in ctx.scales:
        scales = ctx.scales[name]
        storage = packed_storage(
            get_weight(module),
            ctx.config.bits,
            n_scales=scales.numel(),
            scale_bits=scale_bits(scales),
            nm=nm,
        )
    else:
        storage = packed_storage(get_weight(module), FLOAT_BITS, nm=nm)
    formats.append(storage.format)
    return storage.bits


def _notes(config: CompressionConfig) -> list[str]:
    notes = ["size: packed-format accounting of the compressed layers (see the report)"]
    if config.prunes:
        notes.append(
            "pruning is simulated: zeros in dense tensors, so latency is that of the dense model"
        )
    if config.bits is not None:
        notes.append(
            f"{config.bits}-bit weights are simulated (quantize -> dequantize to fp32): accuracy "
            "is exact, latency is that of fp32 kernels"
        )
    if config.rank is not None:
        notes.append("low-rank layers run as two smaller Linears: their latency is measured")
    if config.int8_dynamic:
        notes.append("int8_dynamic runs torch's int8 kernels: its latency is measured")
    return notes
