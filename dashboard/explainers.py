"""How each method works: its formula and a live picture on one of the model's weights.

One expander per kind of compression (from the method registry): the formulas of all its
methods, and the picture of the method the settings use (or the kind's first method when that
kind is off), drawn by that method's own file (``registry.picture``). Pictures of calibrated
methods measure the layer's inputs on a few training texts.
"""

from __future__ import annotations

import streamlit as st

import llmopt
from dashboard.ui import inline_errors
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

    scene = explain.Scene.of(weight, config, texts_stats)
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
        draw = registry.picture(chosen)
        if draw is None:
            continue
        what = spec.title.lower()
        verb = "work" if what.endswith("s") else "works"  # "kernels work", "pruning works"
        _explainer(f"How {what} {verb} — {chosen.label}", text, lambda d=draw: d(scene))
