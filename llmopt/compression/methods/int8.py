"""Real int8 kernels: torch's dynamic int8 Linear, alone or after SmoothQuant's smoothing.

SmoothQuant (Xiao et al., 2023) divides each input channel ``j`` by
``s_j = max|X_j|^α / max|W_:,j|^(1-α)`` and multiplies the weight's column by it:
``(X diag(s)⁻¹)(diag(s) Wᵀ) = X Wᵀ``, so activation outliers (a few channels up to 100x the
rest, e.g. after GELU) move into the weights, which are quantized per output channel. Where the
layer's input is another Linear's output read by nothing else (BERT's attention output reads
the value projection through the attention mix), ``1/s`` is folded into that Linear; elsewhere
(post-LN BERT's LayerNorm outputs also feed the residual; GELU is not linear) the layer keeps a
per-channel multiply in front of its kernel. Either way the fp32 function is unchanged.
"""

from __future__ import annotations

import functools
import re

import torch
from torch import Tensor, nn

from llmopt.compression.quantize import linear_from, quantize_dynamic_int8
from llmopt.compression.registry import Method, register
from llmopt.compression.targets import get_bias, get_weight, is_conv1d, replace, set_weight

FORMULA = (
    r"**Dynamic int8** $W_q = \mathrm{round}(W/s_W)$ once per output channel, "
    r"$x_q = \mathrm{round}(x/s_x)$ for every batch, $y \approx s_x s_W\,(x_q W_q^\top)$ — "
    r"the matrix product runs on 8-bit integers with 32-bit accumulation, which is why its "
    r"latency is real, not simulated."
)
SMOOTH_FORMULA = (
    r"**SmoothQuant** $s_j = \max|X_j|^{\alpha} / \max|W_{:,j}|^{1-\alpha}$, "
    r"$Y = (X\,\mathrm{diag}(s)^{-1})\,(\mathrm{diag}(s)\,W^\top)$ — the same product, but the "
    r"few huge activation channels are divided down and the weights (quantized per output "
    r"channel, where a large column costs little) carry them instead; $\alpha$ sets how much "
    r"moves. Then int8 kernels as above."
)
# consumer layer -> the Linear producing its input and nothing else (through attention's mix)
FOLDS = {
    re.compile(r"(.*)\.attention\.output\.dense$"): r"\1.attention.self.value",  # BERT
    re.compile(r"(.*)\.attention\.out_lin$"): r"\1.attention.v_lin",  # DistilBERT
}


@functools.cache
def full_range_kernels() -> bool:
    """Whether the CPU multiplies int8 with VNNI (vpdpbusd accumulates in int32 directly).

    Without VNNI, fbgemm's AVX2 path adds pairs of u8·s8 products in int16, which saturates
    for full-range 8-bit activations: that is why torch quantizes them to 7 bits. With VNNI
    nothing saturates, so activations may use all 8 bits (half the rounding error).
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_vnni" in flags or " avx_vnni" in flags or " amx_int8" in flags


class SmoothedLinear(nn.Module):
    """``inner(x · inv_scale)``: a Linear (int8 or float) whose input channels are divided by
    SmoothQuant's ``s`` first (where no preceding layer can absorb the division)."""

    def __init__(self, inv_scale: Tensor, inner: nn.Module):
        super().__init__()
        self.register_buffer("inv_scale", inv_scale.float().clone())  # (in,)
        self.int8 = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.int8(x * self.inv_scale.to(x.dtype))

    @torch.no_grad()
    def effective_weight(self) -> Tensor:
        """The (out, in) weight this layer applies to its real input: W · diag(1/s)."""
        return get_weight(self.int8) * self.inv_scale.unsqueeze(0)

    def effective_bias(self) -> Tensor | None:
        return get_bias(self.int8)


@functools.cache
def _full_range_class() -> type:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    class FullRangeInt8Linear(DynamicLinear):
        """torch's dynamic int8 Linear with activations on all 8 bits (reduce_range=False)."""

        full_range = True

        def forward(self, x: Tensor) -> Tensor:
            packed = self._packed_params._packed_params
            return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False).to(x.dtype)

    return FullRangeInt8Linear


def _full_range(module: nn.Module) -> None:
    """Make a torch dynamic int8 Linear quantize its activations to all 8 bits (same kernel)."""
    module.__class__ = _full_range_class()


def _as_linear(ctx, names: list[str]) -> None:
    for n in names:
        module = ctx.model.get_submodule(n)
        if is_conv1d(module):  # torch has no int8 Conv1D: the same map as a Linear
            replace(ctx.model, n, linear_from(get_weight(module), module.bias))
            ctx.note(n, "Conv1D converted to an equivalent Linear for int8 kernels")


@torch.no_grad()
def _apply_int8(ctx, names: list[str], _stats) -> None:
    _as_linear(ctx, names)
    quantize_dynamic_int8(ctx.model, names)


def smoothing_scales(absmax: Tensor, weight: Tensor, alpha: float) -> Tensor:
    """SmoothQuant's ``s = max|X_j|^α / max|W_:,j|^(1-α)`` per input channel (in,)."""
    act = absmax.float().clamp_min(1e-5)
    wmax = weight.abs().amax(dim=0).float().clamp_min(1e-5)
    return (act**alpha / wmax ** (1.0 - alpha)).clamp(1e-5, 1e5)


def _producer(name: str, names: list[str]) -> str | None:
    for pattern, target in FOLDS.items():
        if pattern.match(name):
            producer = pattern.sub(target, name)
            return producer if producer in names else None
    return None


@torch.no_grad()
def smooth_layers(ctx, names: list[str], stats, alpha: float) -> dict[str, Tensor]:
    """Scale each layer's weight columns by SmoothQuant's ``s`` and divide its input by ``s``:
    folded into the producing Linear where ``FOLDS`` finds one, else returned as ``1/s`` for a
    ``SmoothedLinear`` in front of the layer. The float function is unchanged.

    Returns:
        {layer: (in,) 1/s} of the layers that still need their input divided.
    """
    inverse: dict[str, Tensor] = {}
    for n in names:
        if n not in stats:
            ctx.note(n, "no activations: int8 without smoothing")
            continue
        module = ctx.model.get_submodule(n)
        s = smoothing_scales(stats[n].absmax, module.weight, alpha)
        module.weight.mul_(s.unsqueeze(0))  # diag(s) Wᵀ, i.e. W's columns times s
        producer = _producer(n, names)
        if producer is not None:  # its output channels are this layer's inputs: divide there
            lin = ctx.model.get_submodule(producer)
            set_weight(lin, lin.weight / s.unsqueeze(1))
            if lin.bias is not None:
                lin.bias.div_(s)
            ctx.note(n, f"smoothed (α={alpha:g}); 1/s folded into {producer.rsplit('.', 1)[-1]}")
        else:
            inverse[n] = 1.0 / s
            ctx.note(n, f"smoothed (α={alpha:g}) with a per-channel scale before the kernel")
    return inverse


@torch.no_grad()
def _apply_smooth(ctx, names: list[str], stats) -> None:
    _as_linear(ctx, names)
    inverse = smooth_layers(ctx, names, stats, ctx.config.smooth_alpha)
    quantize_dynamic_int8(ctx.model, names)
    full = full_range_kernels()
    for n in names:
        module = ctx.model.get_submodule(n)
        if full:
            _full_range(module)
            ctx.note(n, "8-bit activations (this CPU has VNNI: no int16 saturation)")
        if n in inverse:
            replace(ctx.model, n, SmoothedLinear(inverse[n], module))
            layer = ctx.layer_of(n)
            ctx.extra_bits[layer] = ctx.extra_bits.get(layer, 0) + 32 * len(inverse[n])


@torch.no_grad()
def weight_grid(weight, *, row: int = 0) -> dict:
    """The 8-bit grid torch's int8 kernel puts one row's weights on (per output channel,
    symmetric: ``q ∈ [−128, 127]``, scale ``max|w| / 127.5``), measured with torch's observer.

    Returns:
        ``{"weights", "dequantized", "grid" (all 256 levels), "step", "mse", "bits": 8}``.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig

    w = torch.as_tensor(weight, dtype=torch.float32)
    observer = per_channel_dynamic_qconfig.weight()
    observer(w)
    scales, zeros = observer.calculate_qparams()
    low, high = observer.quant_min, observer.quant_max
    deq = torch.fake_quantize_per_channel_affine(w, scales.float(), zeros.int(), 0, low, high)
    scale = float(scales[row])
    values, deq_values = w[row].numpy(), deq[row].numpy()
    return {
        "weights": values,
        "dequantized": deq_values,
        "grid": scale * torch.arange(low, high + 1, dtype=torch.float64).numpy(),
        "step": scale,
        "mse": float(((values.astype("float64") - deq_values) ** 2).mean()),
        "bits": 8,
    }


def _draw_int8(scene) -> tuple:
    from llmopt import figures

    q = weight_grid(scene.weight)
    levels = len(q["grid"])
    title = f"Row 0: 8-bit grid of the int8 kernel ({levels} levels), step Δ = {q['step']:.3g}"
    caption = (f"One scale per output row, levels −128…127; mean squared rounding error of "
               f"these weights: {q['mse']:.2e}.")  # fmt: skip
    return figures.quant_hist_figure(q["weights"], q["grid"], title=title), caption


def smoothing_data(weight, absmax, alpha: float) -> dict:
    """SmoothQuant's effect on one layer: each input channel's activation and weight range
    before and after smoothing with strength ``alpha``.

    Returns:
        ``"act_before"``, ``"act_after"`` (max |X_j|), ``"weight_before"``, ``"weight_after"``
        (max |W_:,j|), channels in their order, and ``"ratio_before"``, ``"ratio_after"``: the
        largest activation range over the median (how hard per-tensor int8 rounding is).
    """
    w = torch.as_tensor(weight, dtype=torch.float32)
    act = torch.as_tensor(absmax, dtype=torch.float32)
    s = smoothing_scales(act, w, alpha)
    after = act / s
    w_before, w_after = w.abs().amax(0), (w * s.unsqueeze(0)).abs().amax(0)
    return {
        "act_before": act.numpy(),
        "act_after": after.numpy(),
        "weight_before": w_before.numpy(),
        "weight_after": w_after.numpy(),
        "ratio_before": float(act.max() / act.median().clamp_min(1e-12)),
        "ratio_after": float(after.max() / after.median().clamp_min(1e-12)),
        "alpha": alpha,
    }


def _draw_smooth(scene) -> tuple:
    from llmopt import figures

    config = scene.config
    alpha = config.smooth_alpha if config.smooth_alpha is not None else 0.5
    out = smoothing_data(scene.weight, scene.stats()["absmax"], alpha)
    caption = (
        f"α = {alpha:g}: the largest activation range is {out['ratio_before']:.0f}× "
        f"the median before smoothing, {out['ratio_after']:.1f}× after."
    )
    title = "SmoothQuant moves activation outliers into the weights"
    fig = figures.smoothing_figure(out["act_before"], out["act_after"], out["weight_before"],
                                   out["weight_after"], title=title)  # fmt: skip
    return fig, caption


register(
    Method(
        name="int8",
        position=0,
        kind="kernel",
        label="int8 kernels",
        summary="torch's dynamic int8 Linear: int8 weights, activations quantized per batch",
        help="Run torch's real int8 kernels (dynamic quantization): weights stored in int8, "
        "activations quantized on the fly — the latency is measured, not simulated.",
        formula=FORMULA,
        apply=_apply_int8,
        picture="grid8",
        draw=_draw_int8,
        selects=lambda c: c.int8_dynamic and c.smooth_alpha is None,
    )
)
register(
    Method(
        name="smoothquant",
        position=1,
        kind="kernel",
        label="SmoothQuant int8",
        summary="int8 kernels after moving activation outliers into the weights (α)",
        help="Before the int8 kernels, divide each input channel by s = max|X|^α / max|W|^(1−α) "
        "(measured on training texts) and multiply the weights by it: outliers move into the "
        "weights; the fp32 function is unchanged.",
        formula=SMOOTH_FORMULA,
        apply=_apply_smooth,
        stats=("absmax",),
        picture="smoothing",
        draw=_draw_smooth,
        selects=lambda c: c.int8_dynamic and c.smooth_alpha is not None,
        sweep={"smoothquant": {"int8_dynamic": True}},
        reference="Xiao et al., 2023",
    )
)
