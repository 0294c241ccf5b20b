"""The Compress page's controls: their widgets, help texts and the config they make.

The method selectors and their help come from the method registry, so a registered method
shows up here by itself; so does a knob a method declares (``registry.Knob``): its control
(``knob_key``), help, first value and place in the config are read from the declaration and
the config field's default.
"""

from __future__ import annotations

import dataclasses
import math

import streamlit as st

from llmopt.compression import registry
from llmopt.compression.config import (
    BITS_ALLOCATIONS,
    CALIBRATIONS,
    PRECISIONS,
    RANK_ALLOCATIONS,
    CompressionConfig,
)
from llmopt.errors import LlmoptError

PATTERNS = ["unstructured", "2:4", "4:8"]
BIT_OPTIONS = ["off", 2, 3, 4, 5, 6, 7, 8]
# With a bits allocation, Bit-width is an average bits per weight: 2..8 in quarter steps (3.5 =
# as many weights at 3 bits as at 4, or any mix of 2..8 the sensitivity picks). It is a control
# of its own (c_bits_average): a widget whose choices change between runs refuses a value set
# from outside (a recipe, a link) that its previous choices lacked. Whole numbers stay ints.
BITS_STEP = 0.25
AVERAGE_OPTIONS = ["off", *(2 + BITS_STEP * i for i in range(round(6 / BITS_STEP) + 1))]
AVERAGE_OPTIONS = [b if b == "off" else int(b) if b.is_integer() else b for b in AVERAGE_OPTIONS]
BIT_KEYS = {"uniform": "c_bits", "sensitivity": "c_bits_average"}  # allocation -> its control
GROUP_OPTIONS = ["per-channel", 32, 64, 128]
FIELD_KEYS = {"prune": "c_method", "quantize": "c_quant", "lowrank": "c_lowrank"}
# The per-layer table: its rows (a list of dicts with LAYER_COLUMNS) live in the session under
# LAYER_ROWS, so they survive page switches and a recipe can set them; the editor's key changes
# when they are set from outside (a loaded recipe), so it shows the new rows.
LAYER_ROWS = "c_layers"
LAYER_COLUMNS = ("pattern", "sparsity", "bits", "group_size", "rank", "skip")
_LAYER_SEEN = "c_layers_seen"  # the rows object the editor last showed or produced
_LAYER_VERSION = "c_layers_version"
# A number column's value that means "off" (as the Rank slider's 0): float weights, one scale
# per output channel, no factorisation. An empty cell keeps the uniform setting.
LAYER_OFF = {"bits": 0, "group_size": 0, "rank": 0}


def _methods_help(kind: str, intro: str) -> str:
    lines = [f"**{m.label}**: {m.help}" for m in registry.methods(kind).values()]
    return intro + "\n\n" + "\n\n".join(lines)


def help_texts() -> dict[str, str]:
    """Widget key -> help text (method help read from the registry when asked)."""
    knobs = {knob_key(k.field): f"{m.label} only: {k.help}" for m, k in registry.knobs()}
    return knobs | {
        "c_method": _methods_help("prune", "Which weights to zero."),
        "c_pattern": "Unstructured: any weights may be zero (best accuracy, needs sparse "
        "formats to save memory). 2:4 / 4:8: keep N of every M neighbouring weights — the "
        "pattern GPU sparse tensor cores accelerate; its sparsity is fixed at 1 − N/M.",
        "c_sparsity": "Fraction of weights set to zero in every transformer linear layer "
        "(embeddings and the classifier head stay). 0 = no pruning.",
        "c_allocation": "How the sparsity is spread over the transformer blocks. Uniform: "
        "every layer at the slider's sparsity. "
        + " ".join(f"{a.label}: {a.summary}." for a in registry.allocations().values())
        + " The average is the slider's sparsity either way; reads training texts.",
        "c_owl_lambda": "OWL: the block sparsities span at most twice this around the target "
        "(the paper uses 0.08).",
        "c_owl_m": "OWL: a weight whose |w|·‖x‖ is above M times its block's mean is an "
        "outlier (the paper uses 5).",
        "c_bits": "Bits per weight (off = float32). Each weight is rounded to a grid of "
        "2^b − 1 levels (symmetric: ±(2^(b−1) − 1) steps around 0) or 2^b levels (asymmetric, "
        "with a zero point), scaled per row or group; simulated exactly, sized as a packed "
        "format would store it.",
        "c_bits_average": "Average bits per weight over the quantized matrices (off = "
        "float32): each matrix gets 2..8 bits from its measured sensitivity, and the model's "
        "weights take this many bits on average or fewer.",
        "c_bits_allocation": "How the bits are spread over the matrices. Uniform: every "
        "matrix at the Bit-width. Sensitivity: the Bit-width is an average bits per weight "
        "(2 to 8 in steps of 0.25) and each matrix gets 2..8 bits from its measured "
        "sensitivity (each matrix quantized alone, measured on validation rows carved from "
        "the training split; the test rows are never read): the size stays at or below the "
        "average. Not with Rank or per-layer Bits/Rank rules.",
        "c_quant": _methods_help("quantize", "How weights are rounded to the grid."),
        "c_group": "How many weights share one scale. Per-channel: one per output row "
        "(cheapest); smaller groups follow the weights more closely at the cost of more scales.",
        "c_asym": "A zero point per scale, so the grid spans [min, max] of the weights with all "
        "2^b levels instead of a symmetric ±max with 2^b − 1.",
        "c_act_order": "GPTQ only: quantize the columns whose inputs are largest (largest "
        "Hessian diagonal) first, so more columns are left to absorb their error.",
        "c_int8": "Run real int8 kernels (dynamic quantization): weights stored in int8, "
        "activations quantized on the fly — the latency is measured, not simulated. Only with "
        "Bit-width off.",
        "c_smooth": "SmoothQuant: before the int8 kernels, move activation outliers into the "
        "weights (measured on training texts); the float function is unchanged.",
        "c_alpha": "How much of each activation channel's range moves into the weights: 0 = "
        "none, 1 = all; 0.5 is the paper's choice.",
        "c_lowrank": _methods_help("lowrank", "How each weight is factorised."),
        "c_rank": "Replace each weight W (out×in) by two thin matrices A (out×r)·B (r×in). "
        "Smaller r = fewer numbers; 0 = off. Saves memory only when r < out·in/(out+in).",
        "c_rank_allocation": "How the rank is spread over the matrices. Uniform: every matrix "
        "at the Rank. Energy: each matrix keeps the same share of its singular-value energy, "
        "with as many factor weights in all as the Rank everywhere (needs no data). Not with a "
        "Group size (per-channel scales only) or per-layer Rank rules.",
        "c_precision": "Float precision the compressed model runs in: bf16/fp16 store every "
        "float in 16 bits and use 16-bit kernels (fast only on CPUs with bf16/fp16 "
        "arithmetic). Only without Bit-width and int8 kernels.",
        "c_calibration": "Methods that measure activations (Wanda, SparseGPT, GPTQ, "
        "activation-aware SVD, SmoothQuant) read training texts. Sequential: each block is "
        "measured on the outputs of the blocks already compressed, as the reference code does. "
        "One-pass: every layer on the uncompressed model.",
        "c_samples": "Training texts the calibrated methods read: more is steadier, slower.",
    }


def control(widget, label: str, key: str, *args, **kwargs):
    """A Compress-page widget with its help text, kept for the whole session (page switches)."""
    return widget(label, *args, key=key, help=help_texts()[key], persist_state="session", **kwargs)


# Widget key -> first value of the Compress page's controls; kept for the whole session, so the
# Attention page can compress with them too.
CONTROLS = {
    "c_method": "magnitude",
    "c_pattern": "unstructured",
    "c_sparsity": 0.5,
    "c_allocation": "uniform",
    "c_owl_lambda": CompressionConfig.owl_lambda,
    "c_owl_m": CompressionConfig.owl_m,
    "c_bits": "off",
    "c_bits_average": "off",
    "c_bits_allocation": CompressionConfig.bits_allocation,
    "c_quant": "rtn",
    "c_group": "per-channel",
    "c_asym": False,
    "c_act_order": False,
    "c_int8": False,
    "c_smooth": False,
    "c_alpha": 0.5,
    "c_lowrank": "svd",
    "c_rank": 0,
    "c_rank_allocation": CompressionConfig.rank_allocation,
    "c_precision": "fp32",
    "c_calibration": CompressionConfig.calibration,
    "c_samples": CompressionConfig.calibration_samples,
}


_KNOB_KEYS: set[str] = set()  # the CONTROLS entries that are declared knobs


def knob_key(field: str) -> str:
    """The widget key of a method's knob (``registry.Knob``) on the Compress page."""
    return f"c_{field}"


def _defaults() -> dict:
    return {f.name: f.default for f in dataclasses.fields(CompressionConfig)}


def _declared() -> list[tuple[registry.Method, registry.Knob]]:
    """The registered knobs whose field the config has."""
    default = _defaults()
    return [(m, k) for m, k in registry.knobs() if k.field in default]


def sync_knobs() -> dict:
    """Bring ``CONTROLS`` up to date with the knobs methods declare (their first value is the
    config field's default); returns it."""
    default = _defaults()
    firsts = {knob_key(k.field): default[k.field] for _, k in _declared()}
    for key in _KNOB_KEYS - set(firsts):  # a method unregistered since
        CONTROLS.pop(key, None)
    _KNOB_KEYS.clear()
    _KNOB_KEYS.update(firsts)
    CONTROLS.update(firsts)
    return CONTROLS


def _picked(kind: str) -> str | None:
    """The method of ``kind`` the controls set so far select (None: that kind is off)."""
    try:
        method = registry.selected(config_from_state(), kind)
    except LlmoptError:
        return None
    return None if method is None else method.name


def knob_controls(kind: str) -> None:
    """A control for each knob the methods of ``kind`` declare, enabled while its method runs:
    a checkbox for a bool field, a whole-number input for an int, else a slider over the
    declared range (a number input when it is open-ended)."""
    sync_knobs()
    default = _defaults()
    declared = [(m, k) for m, k in _declared() if m.kind == kind]
    picked = _picked(kind) if declared else None
    for method, knob in declared:
        first, key, off = default[knob.field], knob_key(knob.field), method.name != picked
        if isinstance(first, bool):
            control(st.checkbox, knob.label, key, disabled=off)
        elif isinstance(first, int):
            low = None if knob.low is None else int(knob.low)
            high = None if knob.high is None else int(knob.high)
            step = int(knob.step or 1)
            control(st.number_input, knob.label, key, low, high, first, step=step, disabled=off)
        elif knob.low is not None and knob.high is not None:
            low, high = float(knob.low), float(knob.high)
            step = float(knob.step or (high - low) / 20)
            control(st.slider, knob.label, key, low, high, float(first), step, disabled=off)
        else:
            low = None if knob.low is None else float(knob.low)
            high = None if knob.high is None else float(knob.high)
            step = float(knob.step or 0.1)
            control(st.number_input, knob.label, key, low, high, float(first), step, disabled=off)


def method_select(kind: str, label: str = "Method", **kwargs) -> str:
    """A selectbox of the registered methods of ``kind`` (labels from the registry)."""
    found = registry.methods(kind)
    return control(
        st.selectbox,
        label,
        FIELD_KEYS[kind],
        list(found),
        format_func=lambda n: found[n].label if n in found else n,
        **kwargs,
    )


def show(hidden: int) -> None:
    """Every compression control, in four columns: pruning, quantization, low rank, kernels."""
    first = sync_knobs()
    prune, quant, lowrank, kernels = st.columns(4, gap="medium")
    with prune:
        st.subheader(registry.KINDS["prune"].title)
        method_select("prune")
        pattern = control(st.selectbox, "Pattern", "c_pattern", PATTERNS)
        nm = pattern != "unstructured"
        control(
            st.slider, "Sparsity", "c_sparsity", 0.0, 0.95, first["c_sparsity"], 0.05, disabled=nm
        )
        if nm:
            n, m = map(int, pattern.split(":"))
            st.caption(
                f"{pattern} keeps {n} of every {m} weights, so the pattern fixes the "
                f"sparsity at {1 - n / m:.0%}: the slider is not used."
            )
        allocation = control(
            st.selectbox,
            "Allocation",
            "c_allocation",
            allocation_choices()["c_allocation"],
            format_func=lambda n: registry.allocations()[n].label if n != "uniform" else n,
            disabled=nm,
        )
        owl = allocation == "owl" and not nm
        control(
            st.number_input, "OWL λ", "c_owl_lambda", 0.0, 0.5, first["c_owl_lambda"], 0.01,
            disabled=not owl,
        )  # fmt: skip
        control(
            st.number_input, "OWL M", "c_owl_m", 1.0, 1000.0, first["c_owl_m"], 1.0,
            disabled=not owl,
        )  # fmt: skip
        knob_controls("prune")
    with quant:
        st.subheader(registry.KINDS["quantize"].title)
        allocation = st.session_state.get("c_bits_allocation", first["c_bits_allocation"])
        key = bits_key(allocation)
        label = "Bit-width" if key == "c_bits" else "Average bit-width"
        options = bit_options(allocation)
        bits = control(st.select_slider, label, key, options, first[key], format_func=_bits_label)
        off = bits == "off"
        control(  # never disabled: it picks the control above (whole bits or an average)
            st.selectbox, "Bits allocation", "c_bits_allocation",
            allocation_choices()["c_bits_allocation"],
            on_change=_carry_bits,
        )  # fmt: skip
        if allocation != "uniform" and not off:
            st.caption(
                f"{float(bits):g} bits per weight on average: each matrix gets 2–8 bits from "
                "its measured sensitivity (the per-layer table of the results shows them)."
            )
        method = method_select("quantize", disabled=off)
        control(st.selectbox, "Group size", "c_group", GROUP_OPTIONS, disabled=off)
        control(st.checkbox, "Asymmetric (zero point)", "c_asym", disabled=off)
        control(st.checkbox, "Act-order", "c_act_order", disabled=off or method != "gptq")
        knob_controls("quantize")
    with lowrank:
        st.subheader(registry.KINDS["lowrank"].title)
        method_select("lowrank")
        rank = control(st.slider, "Rank", "c_rank", 0, hidden, first["c_rank"])
        st.caption(
            f"0 = off. A {hidden}×{hidden} layer saves memory only below rank {hidden // 2}."
        )
        control(
            st.selectbox, "Rank allocation", "c_rank_allocation",
            allocation_choices()["c_rank_allocation"],
            disabled=not rank,
        )  # fmt: skip
        knob_controls("lowrank")
    with kernels:
        st.subheader(registry.KINDS["kernel"].title)
        int8 = control(st.checkbox, "Real int8 kernels", "c_int8", disabled=not off)
        smooth = control(
            st.checkbox, "SmoothQuant smoothing", "c_smooth", disabled=not (int8 and off)
        )
        control(
            st.slider,
            "Smoothing α",
            "c_alpha",
            0.0,
            1.0,
            first["c_alpha"],
            0.05,
            disabled=not (int8 and off and smooth),
        )
        control(
            st.selectbox, "Precision", "c_precision", list(PRECISIONS), disabled=not off or int8
        )
        control(st.selectbox, "Calibration", "c_calibration", list(CALIBRATIONS))
        control(
            st.number_input, "Calibration texts", "c_samples", 8, 1024, first["c_samples"], step=8
        )
        knob_controls("kernel")
    layer_table()


def allocation_choices() -> dict[str, list[str]]:
    """Each allocation control's choices: the page's select boxes, and what a link may set."""
    return {
        "c_allocation": ["uniform", *registry.allocations()],
        "c_bits_allocation": list(BITS_ALLOCATIONS),
        "c_rank_allocation": list(RANK_ALLOCATIONS),
    }


def bits_key(allocation: str) -> str:
    """The Bit-width control of a bits allocation: ``c_bits`` (whole bits per matrix) for
    uniform, ``c_bits_average`` (an average in quarter steps) for the others."""
    return BIT_KEYS.get(allocation, "c_bits_average")


def bit_options(allocation: str) -> list:
    """The choices of ``bits_key(allocation)``: off and 2..8 bits per matrix; with a bits
    allocation, off and the averages 2..8 in steps of ``BITS_STEP``."""
    return BIT_OPTIONS if bits_key(allocation) == "c_bits" else AVERAGE_OPTIONS


def _whole(bits: float) -> int | float:
    """A bits value as an int when it is whole (4.0 -> 4), so both modes share that choice."""
    return int(bits) if float(bits).is_integer() else float(bits)


def _bits_label(value) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def _snap_bits(value, allocation: str):
    """The choice of ``bit_options(allocation)`` for a number of bits: the whole bits at or
    below it per matrix, else the quarter step at or below it (either way the size stays
    within the average asked for); the value itself when it is no number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return value
    value = min(max(float(value), 2.0), 8.0)
    if allocation == "uniform":
        return int(math.floor(value))
    return _whole(math.floor(value / BITS_STEP + 1e-9) * BITS_STEP)


def _carry_bits() -> None:
    """Bits allocation changed: the Bit-width shown so far carries over to the control now
    shown (4 stays 4; an average of 3.5 becomes 3 whole bits, within the same size)."""
    allocation = st.session_state.get("c_bits_allocation", "uniform")
    key = bits_key(allocation)
    other = next(k for k in BIT_KEYS.values() if k != key)
    value = _snap_bits(st.session_state.get(other, "off"), allocation)
    if value in bit_options(allocation):
        st.session_state[key] = value


def layer_rows_from_config(config: dict) -> list[dict]:
    """The per-layer table's rows that make a config's ``layers`` and ``skip`` (the inverse of
    ``layer_rules``): a rule per row, then a row per skip pattern."""
    rows = []
    rules = config.get("layers") or {}
    for pattern, rule in rules.items() if isinstance(rules, dict) else ():
        row: dict = dict.fromkeys(LAYER_COLUMNS)
        row.update(pattern=pattern, skip=bool(rule.get("skip", False)))
        for key in ("sparsity", "bits", "group_size", "rank"):
            if key in rule:
                value = rule[key]
                row[key] = LAYER_OFF[key] if value is None else value
        rows.append(row)
    for pattern in config.get("skip") or ():
        rows.append({**dict.fromkeys(LAYER_COLUMNS), "pattern": pattern, "skip": True})
    return rows


def layer_rules(rows: list[dict]) -> dict:
    """The per-layer table's rows as config fields ``{"layers": …, "skip": …}``: a row without
    a pattern is ignored, an empty cell keeps the uniform setting, 0 in Bits, Group size or
    Rank turns that off for the layers, and a ticked Skip leaves them alone: alone in its row,
    the pattern goes to ``skip`` (always wins); with settings, it is a rule saying
    ``skip: true`` (a more specific rule may still compress some of its layers).

    Raises:
        LlmoptError: a pattern given twice, or a row that sets nothing.
    """
    layers: dict[str, dict] = {}
    skip: list[str] = []
    for row in rows:
        pattern = str(row.get("pattern") or "").strip()
        if not pattern:
            continue
        if pattern in layers or pattern in skip:
            raise LlmoptError(f"the per-layer table lists pattern {pattern!r} twice")
        rule: dict = {}
        for key in ("sparsity", "bits", "group_size", "rank"):
            value = _cell(row.get(key))
            if value is None:
                continue
            if key == "sparsity":
                rule[key] = float(value)
            else:
                number = int(value) if float(value).is_integer() else value
                rule[key] = None if number == LAYER_OFF[key] else number
        if _cell(row.get("skip")):
            if not rule:
                skip.append(pattern)
                continue
            rule["skip"] = True
        if not rule:
            raise LlmoptError(
                f"per-layer pattern {pattern!r} sets nothing: fill in a setting, tick Skip, or "
                "clear the pattern"
            )
        layers[pattern] = rule
    return {"layers": layers, "skip": tuple(skip)}


def _cell(value):
    """A table cell's value, None when empty (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def layer_table() -> None:
    """The per-layer table (in an expander): a rule per row over the uniform controls."""
    rows = st.session_state.get(LAYER_ROWS) or []
    if st.session_state.get(_LAYER_SEEN) is not rows:  # set from outside: show the new rows
        st.session_state[_LAYER_VERSION] = st.session_state.get(_LAYER_VERSION, 0) + 1
    label = (
        f"Per-layer settings ({len(rows)} rule{'s' * (len(rows) != 1)})"
        if rows
        else ("Per-layer settings")
    )
    with st.expander(label, expanded=bool(rows)):
        st.caption(
            "One rule per row, over the settings above. Pattern: layer names with * and ? "
            "(e.g. `*.attention.*`, `*.layer.0.*`); a layer takes the most specific matching "
            "rule (most characters that are not wildcards; ties: the upper row). An empty cell "
            "keeps the setting above; 0 in Bits, Group size or Rank turns it off there."
        )
        import pandas as pd

        frame = pd.DataFrame(rows, columns=list(LAYER_COLUMNS))
        frame = frame.astype({"pattern": "string", "skip": "boolean"})
        for key in ("sparsity", "bits", "group_size", "rank"):
            frame[key] = pd.to_numeric(frame[key], errors="coerce").astype("float64")
        column = st.column_config
        edited = st.data_editor(
            frame,
            key=f"c_layers_editor_{st.session_state.get(_LAYER_VERSION, 0)}",
            num_rows="dynamic",
            hide_index=True,
            width="stretch",
            column_config={
                "pattern": column.TextColumn("Pattern", help="fnmatch pattern over layer names"),
                "sparsity": column.NumberColumn(
                    "Sparsity", min_value=0.0, max_value=0.99, step=0.05, format="%.2f"
                ),
                "bits": column.NumberColumn(
                    "Bits", min_value=0, max_value=8, step=1, help="2..8; 0 = float weights"
                ),
                "group_size": column.NumberColumn(
                    "Group size", min_value=0, step=1, help="weights per scale; 0 = per channel"
                ),
                "rank": column.NumberColumn("Rank", min_value=0, step=1, help="0 = full rank"),
                "skip": column.CheckboxColumn("Skip", help="leave these layers as they are"),
            },
        )
        new = [
            {k: (None if pd.isna(v) else v) for k, v in r.items()}
            for r in edited.to_dict("records")
        ]
        if new != rows:
            rows = new
            st.session_state[LAYER_ROWS] = rows
        st.session_state[_LAYER_SEEN] = rows


def values_from_config(config: dict) -> dict:
    """The control values that make ``config`` (a config dict; controls it has only): the
    inverse of ``config_from_state``, so the two directions live side by side."""
    bits, group = config.get("bits"), config.get("group_size")
    bits_allocation = config.get("bits_allocation", CompressionConfig.bits_allocation)
    default = CompressionConfig()
    values = {
        "c_method": config.get("sparsity_method", "magnitude"),
        "c_pattern": config.get("sparsity_pattern", "unstructured"),
        "c_sparsity": float(config.get("sparsity") or 0.0),
        "c_allocation": config.get("sparsity_allocation", "uniform"),
        "c_owl_lambda": float(config.get("owl_lambda", CompressionConfig.owl_lambda)),
        "c_owl_m": float(config.get("owl_m", CompressionConfig.owl_m)),
        bits_key(bits_allocation): "off" if bits is None else _snap_bits(bits, bits_allocation),
        "c_bits_allocation": bits_allocation,
        "c_group": "per-channel" if group is None else int(group),
        "c_int8": bool(config.get("int8_dynamic")),
        "c_rank": int(config.get("rank") or 0),
        "c_rank_allocation": config.get("rank_allocation", CompressionConfig.rank_allocation),
        "c_quant": config.get("quant_method", "rtn"),
        "c_asym": bool(config.get("asymmetric")),
        "c_act_order": bool(config.get("act_order")),
        "c_smooth": config.get("smooth_alpha") is not None,
        "c_alpha": float(config.get("smooth_alpha") or 0.5),
        "c_lowrank": config.get("lowrank_method", "svd"),
        "c_precision": config.get("precision", "fp32"),
        "c_calibration": config.get("calibration", default.calibration),
        "c_samples": int(
            config.get("calibration_samples") or CompressionConfig.calibration_samples
        ),
    }
    default = _defaults()
    for _, knob in _declared():
        values[knob_key(knob.field)] = config.get(knob.field, default[knob.field])
    values = {k: v for k, v in values.items() if k in sync_knobs()}
    values[LAYER_ROWS] = layer_rows_from_config(config)
    return values


def config_from_state() -> CompressionConfig:
    """The Compress page's settings (its widgets or their first values) as a CompressionConfig.

    Raises:
        LlmoptError: a combination the engine rejects.
    """
    s = {key: st.session_state.get(key, first) for key, first in sync_knobs().items()}
    shown = s[bits_key(s["c_bits_allocation"])]  # the Bit-width control on the page
    bits = None if shown == "off" else _whole(float(shown))
    group = None if bits is None or s["c_group"] == "per-channel" else int(s["c_group"])
    quant = s["c_quant"] if s["c_quant"] in registry.names("quantize") else "rtn"
    int8 = bool(s["c_int8"]) and bits is None
    unstructured = s["c_pattern"] == "unstructured"
    allocation = s["c_allocation"] if unstructured and float(s["c_sparsity"]) > 0 else "uniform"
    config = CompressionConfig(
        sparsity=float(s["c_sparsity"]) if s["c_pattern"] == "unstructured" else 0.0,
        sparsity_method=s["c_method"],
        sparsity_pattern=s["c_pattern"],
        sparsity_allocation=allocation,
        owl_lambda=float(s["c_owl_lambda"])
        if allocation == "owl"
        else CompressionConfig.owl_lambda,
        owl_m=float(s["c_owl_m"]) if allocation == "owl" else CompressionConfig.owl_m,
        bits=bits,
        bits_allocation=s["c_bits_allocation"] if bits is not None else "uniform",
        group_size=group,
        quant_method=quant,
        act_order=bool(s["c_act_order"]) and bits is not None and quant == "gptq",
        asymmetric=bool(s["c_asym"]) and bits is not None,
        rank=int(s["c_rank"]) or None,
        rank_allocation=s["c_rank_allocation"] if int(s["c_rank"]) else "uniform",
        lowrank_method=s["c_lowrank"],
        int8_dynamic=int8,
        smooth_alpha=float(s["c_alpha"]) if int8 and s["c_smooth"] else None,
        calibration=s["c_calibration"],
        calibration_samples=int(s["c_samples"]),
        precision=s["c_precision"] if bits is None and not int8 else "fp32",
        **layer_rules(st.session_state.get(LAYER_ROWS) or []),
    )
    knobs = {  # a method's knobs are set while it runs (else they keep their defaults)
        k.field: s[knob_key(k.field)] for m, k in _declared() if registry.acting_knob(config, m)
    }
    return dataclasses.replace(config, **knobs) if knobs else config


sync_knobs()  # the knobs of the method files, before the address mirror reads CONTROLS
