"""The Compress page's controls: their widgets, help texts and the config they make."""

from __future__ import annotations

import streamlit as st

PATTERNS = ["unstructured", "2:4", "4:8"]
BIT_OPTIONS = ["off", 2, 3, 4, 5, 6, 7, 8]
GROUP_OPTIONS = ["per-channel", 32, 64, 128]
HELP = {
    "c_method": "Which weights to zero. Magnitude: the smallest |w| in each row. Wanda: the "
    "smallest |w|·‖x‖, where ‖x‖ is the input feature's size measured on training texts — "
    "usually better at high sparsity.",
    "c_pattern": "Unstructured: any weights may be zero (best accuracy, needs sparse formats to "
    "save memory). 2:4 / 4:8: keep N of every M neighbouring weights — the pattern GPU sparse "
    "tensor cores accelerate; its sparsity is fixed at 1 − N/M.",
    "c_sparsity": "Fraction of weights set to zero in every transformer linear layer "
    "(embeddings and the classifier head stay). 0 = no pruning.",
    "c_bits": "Bits per weight (off = float32). Each weight is rounded to one of 2^b levels "
    "scaled per row or group; simulated exactly, sized as a packed format would store it.",
    "c_group": "How many weights share one scale. Per-channel: one per output row (cheapest); "
    "smaller groups follow the weights more closely at the cost of more scales.",
    "c_int8": "Run torch's real int8 kernels (dynamic quantization): weights stored in int8, "
    "activations quantized on the fly — the latency is measured, not simulated. Only with "
    "Bit-width off.",
    "c_rank": "Replace each weight W (out×in) by two thin matrices A (out×r)·B (r×in) from its "
    "SVD. Smaller r = fewer numbers; 0 = off. Saves memory only when r < out·in/(out+in).",
}


def control(widget, label: str, key: str, *args, **kwargs):
    """A Compress-page widget with its help text, kept for the whole session (page switches)."""
    return widget(label, *args, key=key, help=HELP[key], persist_state="session", **kwargs)


# Widget key -> first value of the Compress page's controls; kept for the whole session, so the
# Attention page can compress with them too.
CONTROLS = {
    "c_method": "magnitude",
    "c_pattern": "unstructured",
    "c_sparsity": 0.5,
    "c_bits": "off",
    "c_group": "per-channel",
    "c_int8": False,
    "c_rank": 0,
}


def config_from_state():
    """The Compress page's settings (its widgets or their first values) as a CompressionConfig.

    Raises:
        LlmoptError: a combination the engine rejects.
    """
    from llmopt.compression import CompressionConfig

    s = {key: st.session_state.get(key, first) for key, first in CONTROLS.items()}
    bits = None if s["c_bits"] == "off" else int(s["c_bits"])
    group = None if bits is None or s["c_group"] == "per-channel" else int(s["c_group"])
    return CompressionConfig(
        sparsity=float(s["c_sparsity"]) if s["c_pattern"] == "unstructured" else 0.0,
        sparsity_method=s["c_method"],
        sparsity_pattern=s["c_pattern"],
        bits=bits,
        group_size=group,
        rank=int(s["c_rank"]) or None,
        int8_dynamic=bool(s["c_int8"]) and bits is None,
    )
