"""The Auto page's controls and state: which method and levels to analyse, the run with its
progress, and the last result of this session (per model and dataset)."""

from __future__ import annotations

import streamlit as st

from dashboard import loaders, ui
from dashboard.sidebar import Selection
from llmopt.compression import registry

KINDS = {"quantize": "Quantization (bits)", "prune": "Pruning (sparsity)", "lowrank": "Low rank"}
DEFAULT_LEVELS = {"quantize": "8,4,3", "prune": "0.3,0.5,0.7", "lowrank": "64,16,4"}
STATE = "auto_sensitivity"  # session key: {(model key, data key): SensitivityResult}


def controls(n_train: int) -> dict:
    """The widgets: kind, method, levels, granularity, validation rows."""
    left, mid, right = st.columns(3)
    kind = left.selectbox(
        "Compression", list(KINDS), format_func=KINDS.get, key="a_kind", persist_state="session"
    )
    method = mid.selectbox(
        "Method",
        registry.names(kind),
        format_func=lambda m: registry.get(kind, m).label,
        key=f"a_method_{kind}",
        persist_state="session",
    )
    levels = right.text_input(
        "Levels",
        DEFAULT_LEVELS[kind],
        key=f"a_levels_{kind}",
        help="Comma-separated: sparsities in (0, 1), bit-widths 2..8, or ranks.",
        persist_state="session",
    )
    left, right = st.columns(2)
    granularity = left.radio(
        "Compress alone each",
        ["matrix", "block", "type"],
        horizontal=True,
        key="a_granularity",
        help="matrix: every Linear layer; block: every transformer block; type: every matrix "
        "type across blocks (all query matrices together, …).",
        persist_state="session",
    )
    most = max(1, n_train - 1)
    rows = right.number_input(
        "Validation rows (from the training split)",
        min_value=1,
        max_value=most,
        value=min(256, most),
        step=32,
        key="a_rows",
        help="The last rows of the training split; the test rows are never used here.",
    )
    return {"kind": kind, "method": method, "levels": levels, "granularity": granularity,
            "validation_rows": int(rows)}  # fmt: skip


def run(sel: Selection, loaded, settings: dict) -> None:
    """Run the analysis with a progress bar and keep its result for this model and dataset."""
    from llmopt.sensitivity import parse_levels, sensitivity

    train = loaders.dataset(sel, "train")
    levels = parse_levels(settings["kind"], settings["levels"])
    with ui.progress("compressing each unit alone") as report:
        result = sensitivity(
            loaded, train, kind=settings["kind"], method=settings["method"], levels=levels,
            granularity=settings["granularity"], validation_rows=settings["validation_rows"],
            progress=report,
        )  # fmt: skip
    st.session_state.setdefault(STATE, {})[(sel.model_key, sel.data_key)] = result


def last(sel: Selection):
    """This session's last result for the selected model and dataset, or None."""
    return st.session_state.get(STATE, {}).get((sel.model_key, sel.data_key))
