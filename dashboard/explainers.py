"""How each method works: its formula and a live picture on one of the model's weights.

One expander per kind of compression (from the method registry): the formulas of all its
methods, and the picture of the method the settings use (or the kind's first method when that
kind is off). Pictures of calibrated methods measure the layer's inputs on a few training texts.
"""

from __future__ import annotations

import streamlit as st

import llmopt
from dashboard.state import inline_errors
from llmopt.compression import registry

PICTURE_TEXTS = 16  # training texts the pictures of calibrated methods measure: a second or two


def _explainer(title: str, text: str, draw) -> None:
    """An expander: the formula and a caption on the left, ``draw()``'s picture on the right."""
    with st.expander(title), inline_errors():
        left, right = st.columns([2, 3], gap="large")
        left.markdown(text)
        fig, caption = draw()
        right.plotly_chart(fig, key=f"explain {title}")  # 8-bit pictures may be identical
        left.caption(caption)


def _pictures(weight, config, texts_stats):
    """Picture key -> draw(); ``texts_stats()`` measures the layer's inputs when first asked."""
    from llmopt import explain, figures

    full_rank = min(weight.shape)
    bits, group = (config.bits, config.group_size) if config.bits else (4, None)
    sparsity = config.effective_sparsity or 0.5
    rank = min(config.rank or max(1, full_rank // 4), full_rank)
    off_prune = "" if config.effective_sparsity else " Pruning is off: drawn at 50 %."
    off_bits = "" if config.bits else " Bit-width is off: drawn at 4 bits."
    off_rank = "" if config.rank else " Rank is off: drawn at a quarter of the full rank."

    def mask():
        nm = config.nm
        block = explain.mask_block(weight, sparsity, config.sparsity_pattern)
        title = f"{config.sparsity_pattern.capitalize()} magnitude mask, top-left block"
        caption = f"Sparsity {sparsity:.0%}; Wanda also weighs each column by its input.{off_prune}"
        return figures.mask_figure(block, title=title, m=nm[1] if nm else None), caption

    def obs():
        out = explain.sparsegpt_block(
            weight, texts_stats()["xtx"], sparsity, config.sparsity_pattern
        )
        nm = config.nm
        caption = (
            f"Output error on training texts at {sparsity:.0%}: SparseGPT "
            f"{out['output_error_sparsegpt']:.3f}, magnitude "
            f"{out['output_error_magnitude']:.3f}.{off_prune}"
        )
        fig = figures.mask_figure(
            out["mask"], title="SparseGPT mask, top-left block", m=nm[1] if nm else None
        )
        return fig, caption

    def grid(b=bits, g=group):
        q = explain.quant_grid(weight, b, g)
        what = "its first group" if g else "one scale per row"
        title = f"Row 0: {b}-bit grid ({what}), step Δ = {q['step']:.3g}"
        caption = f"Mean squared rounding error of these weights: {q['mse']:.2e}.{off_bits}"
        return figures.quant_hist_figure(q["weights"], q["grid"], title=title), caption

    def gptq():
        out = explain.gptq_columns(weight, texts_stats()["xtx"], bits, group)
        caption = (
            f"Relative output error on training texts at {bits} bits: round to nearest "
            f"{out['output_error_rtn']:.3f}, GPTQ {out['output_error_gptq']:.3f}."
            f"{off_bits}"
        )
        title = "Output error per column: GPTQ moves it to later columns"
        return figures.gptq_figure(out["rtn"], out["gptq"], title=title), caption

    def spectrum():
        spec = explain.spectrum(weight, rank)
        caption = (
            f"Rank {rank} of {full_rank} keeps {spec['energy_kept']:.1%} of the energy; "
            f"relative error {spec['rel_error']:.3f} (the Eckart–Young optimum).{off_rank}"
        )
        return figures.spectrum_figure(
            spec["singular_values"], rank, energy=spec["energy"]
        ), caption

    def scaled_spectrum():
        out = explain.scaled_spectrum(weight, texts_stats()["xtx"], rank)
        caption = (
            f"Output error on training texts at rank {rank}: plain SVD "
            f"{out['output_error_svd']:.3f}, activation-aware "
            f"{out['output_error_aware']:.3f}.{off_rank}"
        )
        title = "Energy of W and of W·L: whitening concentrates what the outputs use"
        return figures.scaled_spectrum_figure(
            out["energy_plain"], out["energy_scaled"], rank, title=title
        ), caption

    def smoothing():
        alpha = config.smooth_alpha if config.smooth_alpha is not None else 0.5
        out = explain.smoothing(weight, texts_stats()["absmax"], alpha)
        caption = (
            f"α = {alpha:g}: the largest activation range is {out['ratio_before']:.0f}× "
            f"the median before smoothing, {out['ratio_after']:.1f}× after."
        )
        title = "SmoothQuant moves activation outliers into the weights"
        return figures.smoothing_figure(
            out["act_before"],
            out["act_after"],
            out["weight_before"],
            out["weight_after"],
            title=title,
        ), caption

    return {
        "mask": mask,
        "obs": obs,
        "grid": grid,
        "gptq": gptq,
        "spectrum": spectrum,
        "scaled_spectrum": scaled_spectrum,
        "smoothing": smoothing,
        "grid8": lambda: grid(8, None),
    }


def show_explainers(loaded: llmopt.LoadedModel, config, calibration=None) -> None:
    """One expander per kind of compression: its methods' formulas and a live picture.

    Args:
        loaded: the uncompressed model.
        config: the page's settings (the picture follows its method and values).
        calibration: a callable returning training texts, for pictures of calibrated methods.
    """
    from llmopt import explain

    st.header("How it works")
    names = explain.weight_matrices(loaded)
    if not names:
        st.caption("This model has no linear layers in its transformer blocks to illustrate.")
        return
    name = st.selectbox(
        "Weight matrix shown in the pictures",
        names,
        index=names.index(explain.get_weight(loaded)[0]),
        key="x_weight",
        persist_state="session",
        help="Any compressible layer of the loaded (uncompressed) model.",
    )
    name, weight = explain.get_weight(loaded, name)
    measured: dict = {}

    def texts_stats() -> dict:
        if "stats" not in measured:
            if calibration is None:
                raise llmopt.LlmoptError("this picture needs training texts to measure inputs")
            texts = list(calibration()[:PICTURE_TEXTS])
            measured["stats"] = explain.layer_statistics(loaded, name, texts)
        return measured["stats"]

    pictures = _pictures(weight, config, texts_stats)
    for kind in registry.ORDER:
        spec = registry.KINDS[kind]
        found = registry.methods(kind)
        if not found:
            continue
        chosen = registry.selected(config, kind) or next(iter(found.values()))
        text = "\n\n".join(m.formula for m in found.values())
        if kind == "prune":
            text += "\n\n" + explain.FORMULAS["nm"]
        if kind == "lowrank":
            text += "\n\n" + explain.FORMULAS["eckart_young"]
        picture = chosen.picture if chosen.picture in pictures else None
        if picture is None:  # a method without a picture of its own: the kind's first one's
            picture = next((m.picture for m in found.values() if m.picture in pictures), None)
        if picture is None:
            continue
        what = spec.title.lower()
        verb = "work" if what.endswith("s") else "works"  # "kernels work", "pruning works"
        _explainer(f"How {what} {verb} — {chosen.label}", text, pictures[picture])
