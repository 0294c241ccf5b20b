"""compress(): copy a model, run the registered methods (low-rank -> prune -> quantize ->
kernels) layer group by layer group, measure the result."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from llmopt.compression import registry
from llmopt.compression.calibrate import (
    Feeder,
    StatsCache,
    texts_key,
    window_batches,
    window_ids,
)
from llmopt.compression.config import CompressionConfig
from llmopt.compression.lowrank import LowRankLinear, break_even_rank
from llmopt.compression.quantize import dynamic_int8_weight, is_dynamic_int8, scale_bits
from llmopt.compression.report import CompressionReport, packed_storage, summarize
from llmopt.compression.storage import FLOAT_BITS, STORAGE_ASSUMPTIONS, other_tensor_bytes
from llmopt.compression.targets import (
    Filter,
    get_bias,
    get_weight,
    group_by_block,
    select_targets,
    set_weight,
    stored_matrices,
)
from llmopt.data import TextDataset
from llmopt.errors import Fix, LlmoptError
from llmopt.lm.device import DTYPES, dtype_name
from llmopt.lm.load import LoadedLM
from llmopt.loaded import LoadedModel, Progress, dense_size_bytes, private_copy

# Validation rows the sensitivity bits allocation measures each matrix on: the mean KL from
# the dense predictions is continuous, so a few dozen rows rank the matrices (each of ~36 x 4
# widths is one forward pass over them: at 64 rows, 3.4 s each on 2 loaded cores)
ALLOCATION_ROWS = 32


@dataclass
class Context:
    """What the methods share: the model copy being compressed and what they learned."""

    model: nn.Module  # the copy; methods change it in place
    config: CompressionConfig
    base: LoadedModel | LoadedLM
    targets: list[str]  # qualified names of the layers being compressed
    calibration: TextDataset | None
    progress: Callable[[float, str], None]
    scales: dict[str, Tensor] = field(default_factory=dict)  # stored matrix -> grid scales
    zeros: dict[str, Tensor] = field(default_factory=dict)  # stored matrix -> zero points
    masks: dict[str, Tensor] = field(default_factory=dict)  # stored matrix -> kept weights
    notes: dict[str, list[str]] = field(default_factory=dict)  # layer -> remarks for its row
    extra_bits: dict[str, int] = field(default_factory=dict)  # layer -> bits stored besides
    applied: int = 0  # method applications so far (0: the model is still the uncompressed one)
    seq_len: int | None = None  # a causal LM's calibration window length (None: a classifier)
    float_bits: int | None = None  # bits of an unquantized float as stored (None: from config)
    # target layer -> the uniform config it is compressed with (per-layer rules resolved);
    # a layer missing here takes ``config``
    layer_configs: dict[str, CompressionConfig] = field(default_factory=dict)

    def matrices(self) -> list[str]:
        """Every stored weight matrix of the targets (a low-rank layer has two)."""
        return [m for t in self.targets for m in stored_matrices(self.model, t)]

    def layer_of(self, matrix: str) -> str:
        """The target layer a stored matrix belongs to."""
        return next((t for t in self.targets if matrix == t or matrix.startswith(t + ".")), matrix)

    def config_of(self, matrix: str) -> CompressionConfig:
        """The uniform config a stored matrix (or target layer) is compressed with."""
        return self.layer_configs.get(self.layer_of(matrix), self.config)

    def set_on_grid(self, matrix: str, weight: Tensor, scales: Tensor, zeros) -> None:
        """Store a quantized weight and the grid it lies on (scales, zero points or None)."""
        set_weight(self.model.get_submodule(matrix), weight)
        self.scales[matrix] = scales
        if zeros is not None:
            self.zeros[matrix] = zeros

    def note(self, layer: str, text: str) -> None:
        notes = self.notes.setdefault(self.layer_of(layer), [])
        if text not in notes:
            notes.append(text)


def compress(
    loaded: LoadedModel | LoadedLM,
    config: CompressionConfig,
    *,
    calibration: TextDataset | None = None,
    progress: Progress | None = None,
    filter_fn: Filter | None = None,
    cache: StatsCache | None = None,
    seq_len: int | None = None,
) -> tuple[LoadedModel | LoadedLM, CompressionReport]:
    """Compress a copy of ``loaded``: low-rank -> prune -> quantize -> kernels -> precision.

    The input model is never modified (it may be shared); the copy shares its tokenizer.
    A classifier (``LoadedModel``) and a causal LM (``LoadedLM``) go through the same steps;
    the targets are the Linear/Conv1D layers of the transformer (decoder) blocks either way.

    Args:
        loaded: the base model: a classifier or a causal LM.
        config: what to do (see ``CompressionConfig``).
        calibration: texts whose activations calibrated methods measure (the training split).
            A classifier reads its first ``config.calibration_samples`` texts, one per row; a
            causal LM reads ``config.calibration_samples`` windows of ``seq_len`` tokens of
            the texts joined with a blank line (as the GPTQ/SparseGPT reference code does).
            Needed only by methods that declare statistics (``registry.needs_calibration``).
        progress: called with (fraction, message).
        filter_fn: ``(module, qualified_name) -> bool`` choosing the layers; default: the
            Linear/Conv1D layers inside the transformer blocks (every one with ``include_head``;
            a causal LM's ``lm_head`` then gets its own copy of a tied embedding matrix, so the
            embeddings stay as they were).
        cache: statistics shared between compressions of the same model on the same texts
            (a sweep passes one), so what does not change is measured once.
        seq_len: a causal LM's calibration window (default: min(its position limit, 1024));
            ignored for a classifier.

    Returns:
        (the compressed model — of the same type as ``loaded`` — with ``size_bytes`` =
        packed-format bytes, the per-layer report).

    Raises:
        LlmoptError: no layer to compress, a rank above a layer's limit, a group size that
            does not divide a layer's input size, a calibrated method without texts, int8
            kernels for a causal LM on a GPU.
    """
    if not isinstance(loaded, (LoadedModel, LoadedLM)):
        raise LlmoptError(
            f"compress needs a LoadedModel or a LoadedLM, got {type(loaded).__name__}"
        )
    is_lm = isinstance(loaded, LoadedLM)
    if is_lm:
        from llmopt.lm.perplexity import check_seq_len

        seq_len = check_seq_len(loaded, seq_len)
        if config.int8_dynamic and not str(loaded.device).startswith("cpu"):
            raise LlmoptError(
                f"int8_dynamic runs torch's int8 kernels, which exist on the CPU only, and "
                f"{loaded.name!r} is on {loaded.device}",
                fix=Fix(cli="load the model with --device cpu", app="load the model on the CPU"),
            )
    if not isinstance(config, CompressionConfig):
        raise LlmoptError(f"config must be a CompressionConfig, got {type(config).__name__}")
    report_progress = progress or (lambda _f, _m: None)
    base = loaded.model
    targets, layer_configs = plan_layers(base, config, filter_fn, loaded.name)
    if not targets and not config.is_identity:
        raise LlmoptError(
            f"found no Linear layers to compress in {loaded.name!r} "
            "(inside its transformer blocks, and not skipped); try include_head=True"
        )
    check_plan(base, targets, config, layer_configs)
    methods = [] if config.is_identity else registry.active(config)
    calibrated = [m for m in methods if m.needs_calibration]
    allocated = _allocation(config) if methods else None
    measured = bool(methods) and config.bits_allocation != "uniform" and config.uses("quantize")
    if (calibrated or allocated or measured) and not calibration:
        labels = {m.label for m in calibrated} | ({allocated.label} if allocated else set())
        labels |= {"sensitivity bits allocation"} if measured else set()
        names = " and ".join(sorted(labels))
        plain = ", ".join(
            m.label
            for k in registry.ORDER
            for m in registry.methods(k).values()
            if not m.needs_calibration
        )
        raise LlmoptError(
            f"{names} measures activations on training texts, and none were given",
            fix=Fix(
                cli="pass calibration= the dataset's training split, or choose methods "
                f"that need no data ({plain})",
                app=f"choose methods that need no training texts ({plain})",
            ),
        )
    model = private_copy(base).eval()
    ctx = Context(
        model, config, loaded, [] if config.is_identity else targets, calibration, report_progress
    )
    ctx.layer_configs = layer_configs if ctx.targets else {}
    lm_notes: list[str] = []
    final_dtype = None
    if is_lm:
        ctx.seq_len = seq_len
        final_dtype, lm_notes = _prepare_lm(ctx)
    if allocated is not None and ctx.targets:
        _allocate(ctx, allocated, cache)
    if config.rank_allocation != "uniform" and ctx.targets and config.uses("lowrank"):
        _allocate_ranks(ctx)
    if measured and ctx.targets:
        _allocate_bits(ctx)
    _run(ctx, methods, calibrated, cache)
    if is_lm and (config.precision != "fp32" or final_dtype is not None):
        _cast_lm(model, DTYPES[config.precision] if config.precision != "fp32" else final_dtype)
    elif config.precision != "fp32":
        model.to(DTYPES[config.precision])
    report_progress(1.0, "compressing: measuring the result")
    report = _report(ctx)
    if is_lm:
        dtype = dtype_name(_float_dtype(model))
        compressed_lm = LoadedLM(
            model=model,
            tokenizer=loaded.tokenizer,
            name=f"{loaded.name} (compressed)",
            source=loaded.source,
            dtype=dtype,
            device=loaded.device,
            max_length=loaded.max_length,
            notes=list(loaded.notes) + _notes(config) + lm_notes,
            size_bytes=int(report.totals["model_bytes_after"]),
            compression=compression_state(ctx),
        )
        return compressed_lm, report
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


def _allocation(config: CompressionConfig) -> registry.Allocation | None:
    """The non-uniform sparsity allocation ``config`` prunes with, or None."""
    if config.sparsity_allocation == "uniform" or not config.uses("prune"):
        return None
    return registry.allocations()[config.sparsity_allocation]


@torch.no_grad()
def _allocate(ctx: Context, allocation: registry.Allocation, cache: StatsCache | None) -> None:
    """Give each transformer block its own sparsity (``allocation``, from the Wanda scores
    ``|W|·‖X‖`` of the uncompressed model on the calibration texts, measured in one pass):
    every target of a block is then pruned at its block's sparsity. Layers outside the blocks
    (a head) are one more unit."""
    from llmopt.compression.prune import wanda_scores

    pruned = [t for t in ctx.targets if ctx.config_of(t).prunes]
    _, groups = group_by_block(ctx.model, pruned)
    units = [g for g in groups if g]
    if len(units) < 2:
        for t in pruned:
            ctx.note(t, f"{allocation.label}: one block, so its sparsity is the target")
        return
    ctx.progress(0.0, f"calibrating: {allocation.label} outlier ratios")
    stats = _feeder(ctx, [], cache).stats(0, pruned, ("norms",), dense=True)
    scores = []
    for unit in units:
        unit_scores = []
        for t in unit:
            weight = get_weight(ctx.model.get_submodule(t))
            unit_scores.append(wanda_scores(weight, stats[t].norms) if t in stats else weight.abs())
        scores.append(unit_scores)
    sparsities, figures = allocation.allocate(scores, ctx.config)
    for unit, sparsity, figure in zip(units, sparsities, figures, strict=True):
        for t in unit:
            ctx.layer_configs[t] = dataclasses.replace(ctx.config_of(t), sparsity=sparsity)
            ctx.note(
                t, f"{allocation.label}: block outlier ratio {figure:.2%}, sparsity {sparsity:.3f}"
            )


@torch.no_grad()
def _allocate_ranks(ctx: Context) -> None:
    """Give each factorised matrix its rank from its singular-value spectrum
    (``allocation.allocate_ranks``: the same retained energy fraction everywhere, as many
    factor weights as the uniform rank)."""
    from llmopt.allocation import allocate_ranks

    ranked = [t for t in ctx.targets if ctx.config_of(t).rank is not None]
    if not ranked:
        return
    ctx.progress(0.0, "allocating ranks: singular values")
    spectra, shapes = {}, {}
    for t in ranked:
        weight = get_weight(ctx.model.get_submodule(t)).detach().float()
        spectra[t] = torch.linalg.svdvals(weight).cpu().double().numpy()
        shapes[t] = (int(weight.shape[0]), int(weight.shape[1]))
    ranks, tau = allocate_ranks(spectra, shapes, int(ctx.config.rank))
    for t in ranked:
        ctx.layer_configs[t] = dataclasses.replace(ctx.config_of(t), rank=ranks[t])
        ctx.note(t, f"energy allocation: rank {ranks[t]} keeps {tau:.1%} of the spectrum energy")


def _allocate_bits(ctx: Context) -> None:
    """Give each quantized matrix its bits: its sensitivity (``llmopt.sensitivity``: each
    matrix quantized alone at each candidate width, measured on ``ALLOCATION_ROWS`` validation
    rows carved from the end of the calibration split — never the test rows), then the exact
    knapsack (``allocation.allocate_bits``) for the least predicted loss within the average
    ``config.bits`` per weight. A classifier's loss is the mean KL from the dense predictions,
    a causal LM's the NLL change."""
    from llmopt.allocation import (
        allocate_bits,
        bit_candidates,
        losses_from_sensitivity,
        matrix_sizes,
    )
    from llmopt.sensitivity import sensitivity

    cfg = ctx.config
    quantized = [t for t in ctx.targets if ctx.config_of(t).bits is not None]
    if not quantized:
        return
    levels = bit_candidates(float(cfg.bits))
    if len(ctx.calibration) < 2:  # one validation row and one calibration row at least
        raise LlmoptError(
            "the sensitivity bits allocation measures each matrix on validation rows carved "
            f"from the training split, and its {len(ctx.calibration)} row leaves none to "
            "calibrate on",
            fix=Fix(
                cli="use a dataset with 2 training rows or more, or --bits-allocation uniform",
                app="use a dataset with 2 training rows or more, or Bits allocation uniform",
            ),
        )
    rows = min(ALLOCATION_ROWS, max(1, len(ctx.calibration) // 2))

    def progress(fraction: float, message: str) -> None:
        ctx.progress(0.0, f"allocating bits: {message} ({fraction:.0%})")

    result = sensitivity(
        ctx.base,
        ctx.calibration,
        kind="quantize",
        method=cfg.quant_method,
        levels=levels,
        granularity="matrix",
        validation_rows=rows,
        calibration_samples=cfg.calibration_samples,
        seq_len=ctx.seq_len,
        fisher_rows=1,
        progress=progress,
    )
    losses = losses_from_sensitivity(result, "kl")
    missing = [t for t in quantized if t not in losses]
    if missing:
        raise LlmoptError(
            f"the sensitivity bits allocation measured no layer {missing[0]!r}: it allocates "
            "the transformer blocks' matrices only"
        )
    losses = {t: losses[t] for t in quantized}
    allocation = allocate_bits(losses, matrix_sizes(ctx.model, quantized), float(cfg.bits))
    for t in quantized:
        b = allocation.bits[t]
        ctx.layer_configs[t] = dataclasses.replace(ctx.config_of(t), bits=b)
        ctx.note(
            t,
            f"sensitivity allocation: {b} bits (average {allocation.average_bits:.3f} of "
            f"{cfg.bits:g}; loss at {b} bits {losses[t][b]:.2e})",
        )


def _float_dtype(model: nn.Module) -> torch.dtype:
    """The float type most of ``model``'s parameters are stored in."""
    counts: dict[torch.dtype, int] = {}
    for p in model.parameters():
        if p.is_floating_point():
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    return max(counts, key=counts.get) if counts else torch.float32


def _cast_lm(model: nn.Module, dtype: torch.dtype) -> None:
    """Store a causal LM's weights in ``dtype`` as loading it in ``dtype`` does: buffers that
    are not saved (rotary ``inv_freq``) keep their float type, so a saved and reloaded model
    computes the same."""
    kept = [
        (module, name, buf)
        for module in model.modules()
        for name, buf in module.named_buffers(recurse=False)
        if name in module._non_persistent_buffers_set
    ]
    model.to(dtype)
    for module, name, buf in kept:
        setattr(module, name, buf)


def _prepare_lm(ctx: Context) -> tuple[torch.dtype | None, list[str]]:
    """Ready a causal LM's copy: its own head matrix where a targeted ``lm_head`` shares the
    embedding's, and fp32 weights while the methods work on them.

    Returns:
        (the float type to store the result in afterwards — None: as it is —, notes).
    """
    model, notes = ctx.model, []
    head = getattr(model, "get_output_embeddings", lambda: None)()
    embed = getattr(model, "get_input_embeddings", lambda: None)()
    if head is not None and embed is not None and head.weight is embed.weight:
        name = next((n for n, m in model.named_modules() if m is head), None)
        if name in ctx.targets:  # compressing the head must not change the embeddings
            head.weight = nn.Parameter(head.weight.detach().clone())
            for cfg in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
                cfg.tie_word_embeddings = False
            notes.append("lm_head compressed on its own copy of the tied embedding matrix")
            # the base stored that matrix once: the embeddings now keep it besides the head
            bits = 16 if ctx.config.precision != "fp32" else embed.weight.element_size() * 8
            ctx.extra_bits[name] = embed.weight.numel() * bits
            ctx.note(name, "untied from the embeddings, which keep the dense matrix (counted here)")
    stored = _float_dtype(model)
    if stored == torch.float32 or not ctx.targets:
        return None, notes
    model.float()  # the methods' arithmetic (Hessians, grids, SVDs) in fp32
    bits = 16 if stored in (torch.bfloat16, torch.float16) else FLOAT_BITS
    ctx.float_bits = bits
    if ctx.config.bits is not None or ctx.config.int8_dynamic:
        ctx.float_bits = FLOAT_BITS
        notes.append(
            f"weights computed and kept in fp32: {str(stored).removeprefix('torch.')} would "
            "round the quantization grid"
        )
        return None, notes
    notes.append(f"weights computed in fp32, stored in {str(stored).removeprefix('torch.')}")
    return stored, notes


def identity_report(loaded: LoadedModel | LoadedLM, config: CompressionConfig) -> CompressionReport:
    """The report of a config that changes nothing (no rows), without copying the model.

    Raises:
        LlmoptError: ``config`` would change the model.
    """
    if not config.is_identity:
        raise LlmoptError(f"{config.describe()} changes the model: compress it")
    ctx = Context(loaded.model, config, loaded, [], None, lambda _f, _m: None)
    return _report(ctx)


def _run(ctx: Context, methods: list, calibrated: list, cache: StatsCache | None) -> None:
    """Apply ``methods`` group by group: one transformer block at a time when calibration is
    sequential (each block measured on the outputs of the blocks already compressed)."""
    cfg = ctx.config
    one_group = not calibrated or cfg.calibration == "one-pass" or cfg.sparsity_scope == "global"
    if one_group:
        blocks, groups = [], [list(ctx.targets)]
        if calibrated and cfg.calibration == "sequential" and cfg.sparsity_scope == "global":
            for t in ctx.targets:
                ctx.note(t, "global sparsity ranks all layers at once: calibrated in one pass")
    else:
        blocks, groups = group_by_block(ctx.model, ctx.targets)
    feeder = _feeder(ctx, blocks, cache) if calibrated else None
    steps = max(1, len(groups) * len(methods))
    for gi, group in enumerate(groups):
        for mi, method in enumerate(methods):
            ctx.progress(
                (gi * len(methods) + mi) / steps,
                f"compressing: {method.label}"
                + (f", block {gi + 1} of {len(blocks)}" if gi < len(blocks) else ""),
            )
            names = [m for t in group for m in stored_matrices(ctx.model, t)]
            if method.kind == "quantize":  # SparseGPT's joint pass put these on a grid already
                names = [n for n in names if n not in ctx.scales]
            # per-layer rules: each matrix where its own config runs this method, in groups
            # of matrices sharing a config (each group applied with that config)
            parts: dict[CompressionConfig, list[str]] = {}
            for n in names:
                own = ctx.config_of(n)
                if registry.selected(own, method.kind) is method:
                    parts.setdefault(own, []).append(n)
            names = [n for part in parts.values() for n in part]
            if not names:
                continue
            stats = None
            if method.needs_calibration:
                ctx.progress((gi * len(methods) + mi) / steps, f"calibrating: {method.label}")
                stats = feeder.stats(gi, names, method.stats, dense=ctx.applied == 0)
                for n in names:
                    if n not in stats:
                        ctx.note(n, f"{method.label}: no activations reached this layer")
            for own, part in parts.items():
                view = ctx if own is ctx.config else dataclasses.replace(ctx, config=own)
                method.apply(view, part, stats)
            ctx.applied += 1
        if feeder is not None:
            feeder.advance(gi)


def _feeder(ctx: Context, blocks: list, cache: StatsCache | None) -> Feeder:
    """The calibration feeder of ``ctx``'s texts: one block at a time (``blocks``), or the
    whole model in one pass (no blocks)."""
    cfg = ctx.config
    batches = key = None
    if ctx.seq_len is not None:  # a causal LM: windows of seq_len tokens
        texts = list(ctx.calibration.texts)
        key = f"{texts_key(texts)}:{cfg.calibration_samples}x{ctx.seq_len}"
        if cache is None or key not in cache.batches:
            try:
                ids = window_ids(ctx.base.tokenizer, texts, cfg.calibration_samples, ctx.seq_len)
            except ValueError as exc:
                raise LlmoptError(f"cannot calibrate: {exc}") from None
            device = next(ctx.model.parameters()).device
            batches = window_batches(ids, device)
            if len(ids) < cfg.calibration_samples:
                for t in ctx.targets:
                    ctx.note(t, f"calibrated on {len(ids)} windows: the texts hold no more")
    else:
        texts = list(ctx.calibration.texts[: cfg.calibration_samples])
    return Feeder(
        ctx.model,
        ctx.base.tokenizer,
        texts,
        max_length=ctx.base.max_length,
        blocks=blocks or None,
        base_id=id(ctx.base.model),
        cache=cache,
        batches=batches,
        key=key,
    )


@torch.no_grad()
def compression_state(ctx: Context) -> dict:
    """What a compressed model must keep if it is trained further, per stored weight matrix.

    Returns:
        ``{"config": the config as a dict, "masks": {matrix: bool (out, in) tensor of the
        weights pruning kept}, "scales": {matrix: (out, groups) quantization scales},
        "zeros": {matrix: (out, groups) zero points}, "bits", "matrix_bits": {matrix: its
        own bit width (per-layer rules)}, "group_size", "asymmetric"}``;
        masks only when pruning ran, scales only when weights were quantized to ``bits``.
        Symmetric grids: ``weight == k * scale`` for integer ``|k| <= 2^(bits-1)-1`` (no
        zeros); asymmetric: ``weight == (k - zero) * scale`` for integer ``k`` in
        ``[0, 2^bits - 1]``, with the scale and zero point of the weight's row and group.
    """
    matrix_bits = {m: ctx.config_of(m).bits for m in ctx.scales}
    return {
        "config": ctx.config.to_dict(),
        "masks": dict(ctx.masks),
        "scales": {m: s.clone() for m, s in ctx.scales.items()},
        "zeros": {m: z.clone() for m, z in ctx.zeros.items()},
        "bits": ctx.config.bits
        if isinstance(ctx.config.bits, int) and ctx.config.bits_allocation == "uniform"
        else _first(matrix_bits),
        "matrix_bits": matrix_bits,
        "group_size": ctx.config.group_size,
        "asymmetric": bool(ctx.config.asymmetric and ctx.config.bits is not None),
    }


def _first(bits: dict) -> int | None:
    return next(iter(bits.values()), None)


def check_config(loaded: LoadedModel | LoadedLM, config: CompressionConfig) -> None:
    """Fail fast, before any evaluation, on a config this model's layers cannot take.

    Raises:
        LlmoptError: as ``compress`` would for a rank or group size some layer cannot take.
    """
    targets, layer_configs = plan_layers(loaded.model, config, name=loaded.name)
    check_plan(loaded.model, targets, config, layer_configs)


def plan_layers(
    model: nn.Module,
    config: CompressionConfig,
    filter_fn: Filter | None = None,
    name: str = "the model",
) -> tuple[list[str], dict[str, CompressionConfig]]:
    """The layers ``config`` compresses and the uniform config of each (per-layer rules and
    skip patterns resolved: ``CompressionConfig.layer_config``).

    Returns:
        (target layer names in model order — skipped layers left out —, {layer: its config}).

    Raises:
        LayerRuleError: a rule or skip pattern that matches none of the candidate layers.
    """
    candidates = select_targets(model, config.include_head, filter_fn)
    if not (config.layers or config.skip):
        return candidates, dict.fromkeys(candidates, config)
    config.check_layer_names(candidates, repr(name))
    own = {t: config.layer_config(t) for t in candidates}
    return [t for t in candidates if own[t] is not None], {
        t: c for t, c in own.items() if c is not None
    }


def check_plan(
    model: nn.Module,
    targets: list[str],
    config: CompressionConfig,
    layer_configs: dict[str, CompressionConfig] | None = None,
) -> None:
    """Fail before any slow work on a rank or group size some layer cannot take.

    Raises:
        LlmoptError: naming the first layer whose shape cannot take its config.
    """
    layer_configs = layer_configs or {}
    groups: dict[CompressionConfig, list[str]] = {}
    for t in targets:
        groups.setdefault(layer_configs.get(t, config), []).append(t)
    for own, names in groups.items():
        _check_shapes(model, names, own)


def _check_shapes(model: nn.Module, targets: list[str], config: CompressionConfig) -> None:
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
    requested = weights = 0.0
    for name in ctx.targets:
        own = ctx.config_of(name)
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
            bits_after += bias.numel() * _float_bits(own, ctx)
        bits_after += ctx.extra_bits.get(name, 0)
        before = sum(
            t.numel() * t.element_size() for t in (get_weight(original), bias) if t is not None
        )
        rows.append(
            {
                "name": name,
                "shape": list(w.shape),
                "sparsity": float((w_hat == 0).double().mean()),
                "bits": 8
                if own.int8_dynamic
                else own.bits
                if own.bits is not None
                else (16 if own.precision != "fp32" else None),
                "group_size": own.group_size if own.bits is not None else None,
                "rank": own.rank,
                "rel_error": float(torch.linalg.norm(w - w_hat) / norm),
                "bytes_before": int(before),
                "bytes_after": math.ceil(bits_after / 8),
                "format": "; ".join(formats),
                "dense_reconstruction": own.rank is not None
                and not isinstance(layer, LowRankLinear),
                "note": "; ".join(ctx.notes.get(name, [])),
            }
        )
        requested += own.effective_sparsity * w.numel()
        weights += w.numel()
    base_bytes = dense_size_bytes(ctx.base.model)
    if cfg.layers or cfg.skip:  # per-layer rules: the weighted mean over the compressed layers
        requested = requested / weights if weights else 0.0
    else:
        requested = cfg.effective_sparsity
    extra = {**params, "effective_sparsity_requested": requested}
    extra["methods"] = [m.name for m in registry.active(cfg)] if rows else []
    assumptions = list(STORAGE_ASSUMPTIONS)
    if cfg.nm and cfg.sparsity:
        assumptions.append(
            f"sparsity_pattern {cfg.sparsity_pattern} fixes the sparsity at "
            f"{cfg.effective_sparsity:.3f}; the sparsity setting {cfg.sparsity} was ignored"
        )
    if cfg.group_size is not None and cfg.bits is None:
        assumptions.append(f"group_size {cfg.group_size} was ignored: it applies with bits only")
    totals = summarize(rows, base_bytes, extra)
    if cfg.precision != "fp32":  # every float outside the targets is stored at 16 bits too
        rest = other_tensor_bytes(ctx.base.model, ctx.targets, cfg.precision)
        totals["model_bytes_after"] = rest + totals["bytes_after"]
        totals["model_compression_ratio"] = base_bytes / totals["model_bytes_after"]
        assumptions.append(f"precision {cfg.precision}: every float is stored at 16 bits")
    return CompressionReport(rows, totals, assumptions, cfg.to_dict())


def _float_bits(cfg: CompressionConfig, ctx: Context | None = None) -> int:
    if ctx is not None and ctx.float_bits is not None and cfg.precision == "fp32":
        return ctx.float_bits  # a 16-bit causal LM whose floats stay 16-bit
    return FLOAT_BITS if cfg.precision == "fp32" else 16


def _matrix_bits(ctx: Context, name: str, formats: list[str]) -> int:
    module = ctx.model.get_submodule(name)
    module = getattr(module, "int8", module)  # a smoothed int8 layer: its int8 matrix
    own = ctx.config_of(name)
    nm = own.nm if own.prunes else None
    if is_dynamic_int8(module):
        weight, scales = dynamic_int8_weight(module)
        storage = packed_storage(weight, 8, n_scales=scales.numel(), scale_bits=32, nm=nm)
    elif name in ctx.scales:
        scales = ctx.scales[name]
        zeros = ctx.zeros.get(name)
        storage = packed_storage(
            get_weight(module),
            own.bits,
            n_scales=scales.numel(),
            scale_bits=scale_bits(scales),
            zero_point_bits=own.bits if zeros is not None else 0,
            nm=nm,
        )
    else:
        storage = packed_storage(get_weight(module), _float_bits(own, ctx), nm=nm)
    formats.append(storage.format)
    return storage.bits


def _notes(config: CompressionConfig) -> list[str]:
    notes = ["size: packed-format accounting of the compressed layers (see the report)"]
    if config.layers or config.skip:
        notes.append(f"per-layer settings: {config._describe_layers()}")
        bits = sorted({v.bits for v in config.variants() if v.bits is not None})
        if config.uses("prune"):
            notes.append(
                "pruning is simulated: zeros in dense tensors, so latency is that of the dense "
                "model"
            )
        if bits:
            notes.append(
                f"{'/'.join(map(str, bits))}-bit weights are simulated (quantize -> dequantize "
                "to fp32): accuracy is exact, latency is that of fp32 kernels"
            )
        if config.uses("lowrank"):
            notes.append("low-rank layers run as two smaller Linears: their latency is measured")
        config = dataclasses.replace(config.uniform, sparsity=0.0, bits=None, rank=None)
        config = dataclasses.replace(config, sparsity_pattern="unstructured")
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
        notes.append("int8_dynamic runs int8 kernels: its latency is measured")
    if config.precision != "fp32":
        notes.append(f"{config.precision} runs 16-bit kernels: its latency is measured")
    return notes
