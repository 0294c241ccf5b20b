"""The Sweep page when the sidebar's model is a causal LM: perplexity (or bits per byte) with its
95% interval against one compression knob for every chosen method, the size below it; every
point recorded as an LM run for the Compare page. Widgets here; the numbers come from
``llmopt.sweep.run_lm_sweep``."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import flow, loaders, ui
from dashboard import lm as lm_page
from dashboard.sidebar import Selection
from dashboard.text import plain
from llmopt.errors import LlmoptError

LM_SWEEP = "lm_sweep"  # this session's latest LM sweep: {"key", "frame", "recorded"}
TABLE = [
    "method",
    "value",
    "perplexity",
    "perplexity_low",
    "perplexity_high",
    "bits_per_byte",
    "top1_agreement",
    "mean_kl",
    "size_mb",
    "params_nonzero",
    "seconds",
]


def run(sel: Selection, lm, data, knob: str, values: list, methods: list, protocol: str,
        seq_len: int) -> pd.DataFrame:  # fmt: skip
    """Run the sweep with a progress bar, recording each compressed point as an LM run (a
    store that cannot be written is one warning, never a lost sweep)."""
    from llmopt.lm.load import lm_size
    from llmopt.recording import lm_statistics, record_lm_evaluation
    from llmopt.sweep import run_lm_sweep, sweep_needs_calibration

    calibration = loaders.dataset(sel, "train") if sweep_needs_calibration(knob, methods) else None
    base = lm_page.base_perplexity(sel, lm, data, protocol, seq_len)
    base_size = lm_size(lm)
    recorded: list[int] = []
    failures: list[str] = []

    def record(config, result, report, fidelity, size) -> None:
        try:
            done = record_lm_evaluation(
                loaders.experiment_store(), lm=lm, dataset=data, base=base,
                base_size=base_size, other=result, other_size=size, fidelity=fidelity,
                config=config, report=report, origin="sweep", model_source=sel.model_source,
                dataset_source=flow.dataset_source(sel),
                rows={**flow.rows_spec(sel, data), "protocol": protocol, "seq_len": seq_len},
                computed=lm_statistics(base, result, fidelity),
            )  # fmt: skip
            recorded.append(done.run_id)
        except (LlmoptError, OSError) as exc:
            failures.append(exc.render("app") if isinstance(exc, LlmoptError) else str(exc))

    with ui.progress("each point compresses a copy and scores it on the same windows") as bar:
        frame = run_lm_sweep(
            lm, data, knob, values, methods, protocol=protocol, seq_len=seq_len,
            base_result=base, calibration=calibration, progress=bar, on_point=record,
        )  # fmt: skip
    if failures:
        st.warning(
            f"{len(failures)} points were not recorded for the Compare page: {plain(failures[0])}"
        )
    st.session_state[LM_SWEEP] = {
        "key": _key(sel, data, protocol, seq_len),
        "frame": frame,
        "recorded": recorded,
    }
    return frame


def _key(sel: Selection, data, protocol: str, seq_len: int) -> tuple:
    return (sel.model_source, data.fingerprint, protocol, int(seq_len))


def show_sweep_page(sel: Selection) -> None:
    """The Sweep page for a causal LM (the classifier's sweep is unchanged)."""
    from llmopt.figures import METRIC_TITLES
    from llmopt.figures.sweep import sweep_figure
    from llmopt.lm.perplexity import PROTOCOLS, default_seq_len
    from llmopt.sweep import LM_SWEEP_METRICS, SWEEP_KNOBS, knob_values

    with ui.guard():
        data = loaders.dataset(sel, "test", sel.rows)
        lm = lm_page.base_lm(sel)
    st.caption(
        f"Causal LM **{plain(sel.model_source)}** · dataset **{plain(data.name)}** · "
        f"{len(data)} test texts · perplexity by the paper protocol unless you choose otherwise"
    )
    knob = st.selectbox(
        "Knob", list(SWEEP_KNOBS), format_func=lambda k: SWEEP_KNOBS[k]["label"], key="ls_knob"
    )
    spec = SWEEP_KNOBS[knob]
    st.caption(spec["help"])
    with ui.guard():
        choices, defaults = knob_values(lm, knob)
    left, right = st.columns([3, 2])
    values = left.multiselect("Values", choices, defaults, key=f"ls_values_{knob}")
    methods = right.multiselect(
        "Methods", list(spec["methods"]), list(spec["methods"])[:2], key=f"ls_methods_{knob}"
    )
    left, right = st.columns(2)
    protocol = left.radio("Protocol", list(PROTOCOLS), key="ls_protocol", horizontal=True)
    seq_len = int(
        right.number_input("Window (tokens)", 2, 1_000_000, default_seq_len(lm), key="ls_seq_len")
    )
    st.caption(
        f"{len(values) * len(methods)} points on {len(data)} test texts; each compresses a copy "
        "and scores it against the baseline on the same windows."
    )
    if st.button("Run sweep", type="primary", key="ls_run"):
        with ui.inline_errors():
            run(sel, lm, data, knob, values, methods, protocol, seq_len)
    hit = st.session_state.get(LM_SWEEP)
    if hit is None or hit["key"] != _key(sel, data, protocol, seq_len):
        st.info("Choose values and methods, then press **Run sweep**.")
        return
    frame = hit["frame"]
    metric = st.radio(
        "Quality axis",
        list(LM_SWEEP_METRICS),
        format_func=lambda m: METRIC_TITLES.get(m, m),
        key="ls_metric",
        horizontal=True,
        help="Token perplexity of the chosen protocol, or bits per byte (comparable across "
        "tokenizers). Error bars: 95% bootstrap intervals over windows or documents.",
    )
    st.plotly_chart(sweep_figure(frame, metric))
    st.dataframe(frame[TABLE], hide_index=True)
    if hit["recorded"]:
        st.caption(
            f"Recorded {len(hit['recorded'])} points as runs #{min(hit['recorded'])}–"
            f"#{max(hit['recorded'])} (see the Compare page)."
        )
    st.download_button(
        "Download CSV",
        frame.to_csv(index=False),
        file_name=f"sweep_lm_{frame.attrs['knob']}.csv",
        mime="text/csv",
        icon=":material/download:",
    )
