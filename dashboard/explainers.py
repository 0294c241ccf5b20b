"""How each method works: its formula and a live picture on one of the model's weights."""

from __future__ import annotations

import streamlit as st

import llmopt
from dashboard.state import inline_errors


def _explainer(title: str, text: str, draw) -> None:
    """An expander: the formula and a caption on the left, ``draw()``'s picture on the right."""
    with st.expander(title), inline_errors():
        left, right = st.columns([2, 3], gap="large")
        left.markdown(text)
        fig, caption = draw()
        right.plotly_chart(fig, key=f"explain {title}")  # 8-bit pictures may be identical
        left.caption(caption)


def show_explainers(loaded: llmopt.LoadedModel, config) -> None:
    """One expander per method: its formula and a live picture on a real weight matrix."""
    from llmopt import explain, figures

    formulas = explain.FORMULAS
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
    full_rank = min(weight.shape)

    def pruning():
        sparsity, nm = config.effective_sparsity or 0.5, config.nm
        block = explain.mask_block(weight, sparsity, config.sparsity_pattern)
        title = f"{config.sparsity_pattern.capitalize()} magnitude mask, top-left block"
        off = "" if config.effective_sparsity else " Pruning is off: drawn at 50 %."
        caption = f"Sparsity {sparsity:.0%}; Wanda also weighs each column by its input.{off}"
        return figures.mask_figure(block, title=title, m=nm[1] if nm else None), caption

    def quantization(bits=None, group=None):
        grid = explain.quant_grid(weight, bits, group)
        what = "its first group" if group else "one scale per row"
        title = f"Row 0: {bits}-bit grid ({what}), step Δ = {grid['step']:.3g}"
        caption = f"Mean squared rounding error of these weights: {grid['mse']:.2e}."
        return figures.quant_hist_figure(grid["weights"], grid["grid"], title=title), caption

    def lowrank():
        rank = min(config.rank or max(1, full_rank // 4), full_rank)
        spec = explain.spectrum(weight, rank)
        off = "" if config.rank else " Rank is off: drawn at a quarter of the full rank."
        caption = (
            f"Rank {rank} of {full_rank} keeps {spec['energy_kept']:.1%} of the energy; relative "
            f"error {spec['rel_error']:.3f} (the Eckart–Young optimum).{off}"
        )
        return figures.spectrum_figure(
            spec["singular_values"], rank, energy=spec["energy"]
        ), caption

    bits, group = (config.bits, config.group_size) if config.bits else (4, None)
    prune_text = "\n\n".join(formulas[k] for k in ("magnitude", "wanda", "nm"))
    _explainer("How pruning works", prune_text, pruning)
    quant_text = formulas["quantization"] + (
        "" if config.bits else "\n\nBit-width is off: drawn at 4 bits."
    )
    _explainer("How quantization works", quant_text, lambda: quantization(bits, group))
    _explainer("How low-rank works", formulas["svd"] + "\n\n" + formulas["eckart_young"], lowrank)
    int8_text = formulas["int8_dynamic"]
    _explainer("How int8 kernels work", int8_text, lambda: quantization(8))
