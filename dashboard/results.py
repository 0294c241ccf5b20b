"""Result views: the instant estimate, an evaluation's metrics, figures and flipped rows."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import llmopt
from dashboard.text import plain
from llmopt.data import display_text

FLIPPED_CHARS = 160  # of a text in the flipped-examples table (select a row for all of it)


def metric(col, label: str, value: str, delta: float, fmt: str, unit="", *, inverse=False, **kw):
    """``st.metric`` with a signed delta; no arrow or colour when it rounds to zero."""
    shown = format(delta, fmt) + unit
    flat = float(format(delta, fmt)) == 0
    colour = "off" if flat else "inverse" if inverse else "normal"
    col.metric(
        label,
        value,
        ("±" + shown.lstrip("+-")) if flat else shown,
        delta_color=colour,
        delta_arrow="off" if flat else "auto",
        **kw,
    )


def score_metric(
    col,
    label: str,
    value: float,
    delta: float,
    interval,
    test=None,
    *,
    names: tuple[str, str] = ("uncompressed model", "compressed model"),
) -> None:
    """A score with its change from the baseline, coloured only when the change is outside the
    noise of these rows — for accuracy, the exact McNemar test ``test`` is significant; for the
    other scores, the 95% paired bootstrap interval excludes 0 — otherwise grey, marked 'noise'."""
    from llmopt.stats import ALPHA, excludes_zero

    real = excludes_zero(interval) if test is None else test["p_value"] < ALPHA
    text = f"{delta:+.3f}" + ("" if real else " · noise")
    why = "no interval" if interval is None else f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"
    help_text = (
        f"Change from the {names[0]} on these rows; 95% paired bootstrap interval of "
        f"the change {why}."
    )
    if test is not None:
        help_text += (
            f" Exact McNemar test: p = {test['p_value']:.3g} ({test['only_a']} rows only the "
            f"{names[0]} gets right, {test['only_b']} only the {names[1]})."
        )
    help_text += f" {'Outside' if real else 'Inside'} the noise."
    col.metric(
        label,
        f"{value:.3f}",
        text,
        delta_color="normal" if real else "off",
        delta_arrow="auto" if real else "off",
        help=help_text,
    )


def timed_apart(base_ms, other_ms) -> bool:
    """Whether two models' timed passes differ for real: their ranges do not overlap."""
    return bool(base_ms and other_ms) and (
        max(other_ms) < min(base_ms) or min(other_ms) > max(base_ms)
    )


def latency_metric(col, ev: dict) -> None:
    """Latency: the paired measurement of both models (interleaved, repeated), or, for
    methods that keep the baseline's kernels, the baseline's with no change claimed."""
    base = ev["base"]
    if ev.get("simulated", False) or not ev.get("latency"):
        col.metric(
            "Latency",
            f"{base.latency_ms_per_sample:.3g} ms",
            "same kernels",
            delta_color="off",
            delta_arrow="off",
            help="These methods change weight values only (zeros, rounded values) and run the "
            "baseline's kernels on tensors of the same shapes: the latency is the baseline's, "
            "and no speed-up is claimed.",
        )
        return
    b, c = ev["latency"]["baseline"], ev["latency"]["compressed"]
    apart = timed_apart(b.samples_ms, c.samples_ms)
    delta = c.median_ms - b.median_ms
    col.metric(
        "Latency",
        f"{c.median_ms:.3g} ms",
        f"{delta:+.2f} ms ({c.median_ms / b.median_ms:.2f}×)" + ("" if apart else " · noise"),
        delta_color="inverse" if apart else "off",
        delta_arrow="auto" if apart else "off",
        help=f"Both models timed together, interleaved batch by batch, {len(c.samples_ms)} "
        f"passes over {c.texts} texts: medians per text, baseline {b.median_ms:.3g} ms. A "
        "change counts as real only when the passes' ranges do not overlap.",
    )


def shown_latency(ev: dict) -> tuple:
    """(baseline, compressed) results with the latency the page shows: the paired medians,
    or the baseline's for both when the kernels are the same."""
    import dataclasses

    base, other = ev["base"], ev["other"]
    if ev.get("latency"):
        b, c = ev["latency"]["baseline"], ev["latency"]["compressed"]
        return (
            dataclasses.replace(base, latency_ms_per_sample=b.median_ms),
            dataclasses.replace(other, latency_ms_per_sample=c.median_ms),
        )
    if ev.get("simulated", False):
        return base, dataclasses.replace(other, latency_ms_per_sample=base.latency_ms_per_sample)
    return base, other


def show_estimate(loaded: llmopt.LoadedModel, config) -> None:
    """Instant size and parameter estimate of ``config`` (no compression is run)."""
    from llmopt.estimate import estimate_size

    est = estimate_size(loaded, config)
    mb_before, mb_after = est["size_bytes_before"] / 1e6, est["size_bytes"] / 1e6
    cols = st.columns(4)
    metric(
        cols[0],
        "Size (estimate)",
        f"{mb_after:.2f} MB",
        mb_after - mb_before,
        "+.2f",
        " MB",
        inverse=True,
        help="From layer shapes and settings only, with the same packed-storage rules as the "
        "measured result; rounding to few bits zeroes extra weights, so the measured size can "
        "be a little smaller.",
    )
    cols[1].metric("Compression (estimate)", f"{est['ratio']:.2f}×")
    cols[2].metric("Parameters (estimate)", f"{est['params_total'] / 1e6:.3f} M")
    cols[3].metric("Non-zero parameters (estimate)", f"{est['params_nonzero'] / 1e6:.3f} M")
    st.caption(
        f"Estimate for **{config.describe()}** on {est['layers']} layers, before anything runs."
    )


def half_width(fig):
    """A two-panel confusion figure made to fit half the page: cells carry the counts, so the
    count colour bar goes, and the second panel shares the first one's row labels."""
    fig.update_traces(showscale=False, selector={"xaxis": "x"})
    return shared_rows(fig)


def shared_rows(fig):
    """Two confusion panels side by side name the true labels once, left of the first panel
    (stacked panels, for many classes, keep both)."""
    if fig.layout.yaxis2.domain == fig.layout.yaxis.domain:
        fig.update_yaxes(title_text=None, row=1, col=2)
    return fig


def spread_panels(fig):
    """Two side-by-side panels with room between them for the right panel's axis title."""
    fig.update_layout(xaxis={"domain": [0, 0.4]}, xaxis2={"domain": [0.6, 1]})
    for note, x in zip(fig.layout.annotations, (0.2, 0.8), strict=False):
        note.x = x
    return fig


def attention_compare(base, other, layer: int, head: int):
    """``attention_compare_figure`` sized so three token × token maps stay readable."""
    from llmopt import figures

    fig = figures.attention_compare_figure(base, other, layer, head)
    n = len(base.tokens)
    fig.update_yaxes(showticklabels=False, row=1, col=2)
    fig.update_yaxes(showticklabels=False, row=1, col=3)
    fig.update_layout(
        height=max(480, 12 * n + 220),
        coloraxis_colorbar={"x": 1.0, "len": 0.45, "y": 0.78, "title": "weight"},
        coloraxis2_colorbar={"x": 1.0, "len": 0.45, "y": 0.22},
    )
    return fig


def _delta_frame(base, other, deltas: dict | None = None) -> pd.io.formats.style.Styler:
    from llmopt import figures

    frame = figures.delta_table(base, other)
    deltas = deltas or {}
    frame["delta 95% CI"] = [
        f"{deltas[m][0]:+.3f} … {deltas[m][1]:+.3f}" if m in deltas else "" for m in frame["metric"]
    ]
    frame["metric"] = [figures.METRIC_TITLES.get(m, m) for m in frame["metric"]]
    counts = frame.index[frame["metric"].str.contains("arameters")]
    styler = frame.style.format("{:.4f}", subset=["baseline", "compressed"])
    styler = styler.format("{:+.4f}", subset=["delta"])
    styler = styler.format("{:,.0f}", subset=pd.IndexSlice[counts, ["baseline", "compressed"]])
    return styler.format("{:+,.0f}", subset=pd.IndexSlice[counts, ["delta"]])


def card_metrics() -> list[str]:
    """The scores shown as cards above a result: the headline metrics of ``llmopt.metrics``."""
    from llmopt import metrics

    return list(metrics.headline())


def show_results(ev: dict, current) -> None:
    """Everything one evaluation measured: metrics, curves, confusion, size, fidelity, layers."""
    from llmopt import figures
    from llmopt.explain import FORMULAS

    base, other, fid, report = ev["base"], ev["other"], ev["fidelity"], ev["report"]
    st.header("Results")
    if ev["config"] != current:
        st.warning("The settings changed since this evaluation: press **Evaluate** to update.")
    st.caption(f"Compressed with **{ev['config'].describe()}**, on {len(base.y_true)} rows.")
    if base.n_truncated:
        st.caption(
            f"{base.n_truncated} of {len(base.y_true)} texts are longer than the model's maximum "
            "length and were truncated (both models saw the same truncated texts)."
        )
    computed = ev.get("stats") or {}
    deltas = computed.get("delta_intervals") or {}
    cards = card_metrics()
    cols = st.columns(len(cards) + 3)
    for col, key in zip(cols, cards, strict=False):
        value, delta = other.metrics[key], other.metrics[key] - base.metrics[key]
        test = computed.get("mcnemar") if key == "accuracy" else None
        score_metric(col, figures.METRIC_TITLES[key], value, delta, deltas.get(key), test)
    size, size_delta = other.size_bytes / 1e6, (other.size_bytes - base.size_bytes) / 1e6
    metric(cols[-3], "Size", f"{size:.2f} MB", size_delta, "+.2f", " MB", inverse=True)
    latency_metric(cols[-2], ev)
    cols[-1].metric("Agreement", f"{fid['agreement']:.1%}", help=FORMULAS["agreement"])
    _recorded_caption(ev)
    base, other = shown_latency(ev)  # the table and bars show the latency shown above
    results = {"baseline": base, "compressed": other}
    left, right = st.columns(2, gap="large")
    left.subheader("Baseline vs compressed")
    table = _delta_frame(base, other, deltas)
    left.dataframe(table, hide_index=True, width="stretch", height=35 * len(table.data) + 38)
    right.plotly_chart(figures.roc_figure(results))
    st.subheader("Confusion matrices")
    names = [str(n) for n in base.label_names]
    if figures.needs_full_width(len(names), max(map(len, names), default=0)):
        # Many classes (or long names): one figure per row, as wide as the page, so that every
        # class keeps a readable row and column.
        st.plotly_chart(shared_rows(figures.confusion_figure(base, title="Baseline")))
        st.plotly_chart(shared_rows(figures.confusion_figure(other, title="Compressed")))
        st.plotly_chart(figures.confusion_diff_figure(base, other))
        size_slot = st.columns(2, gap="large")[0]
    else:
        left, right = st.columns(2, gap="large")
        left.plotly_chart(half_width(figures.confusion_figure(base, title="Baseline")))
        right.plotly_chart(half_width(figures.confusion_figure(other, title="Compressed")))
        left, size_slot = st.columns(2, gap="large")
        left.plotly_chart(figures.confusion_diff_figure(base, other))
    size_slot.plotly_chart(spread_panels(figures.size_latency_figure(results)))
    st.subheader("Fidelity to the uncompressed model")
    st.markdown(
        f"Agreement **{fid['agreement']:.1%}** · mean KL(baseline ‖ compressed) "
        f"**{fid['mean_kl']:.4f} nats** · **{len(fid['flipped'])}** of {len(base.y_true)} "
        "predictions flipped."
    )
    with st.expander("What these measure"):
        st.markdown(FORMULAS["agreement"] + "\n\n" + FORMULAS["kl"])
    if fid["flipped"]:
        show_flipped(llmopt.flipped_table(base, other, ev["texts"]))
    st.subheader("Per layer")
    if report.rows:
        st.plotly_chart(figures.layer_error_figure(report))
        st.dataframe(report.to_frame(), hide_index=True)
    else:
        st.caption("No layer was compressed with these settings.")
    st.subheader("Measured or simulated?")
    st.markdown(
        "**Measured** on this machine: accuracy, F1, ROC, agreement, KL, latency, parameter "
        "counts, and the tensors' sparsity and error.\n\n"
        + "\n".join(f"- {line}" for line in [*ev["notes"], *report.assumptions])
    )


def _recorded_caption(ev: dict) -> None:
    """Where this evaluation went in the experiment store, with a link to compare it."""
    if ev.get("run_id") is None:
        return
    st.caption(
        f"Recorded as run **#{ev['run_id']}**; grey changes are within the noise of "
        f"{len(ev['base'].y_true)} rows (95% paired bootstrap interval of the change holds 0)."
    )
    st.page_link(
        "pages/compare.py",
        label=f"Compare run #{ev['run_id']} with others",
        icon=":material/compare_arrows:",
        query_params={"runs": str(ev["run_id"])},
    )


def show_flipped(table: pd.DataFrame) -> None:
    """The examples whose prediction flipped: each text as a reader sees it (HTML tags and
    entities of scraped reviews removed), cut to fit one row; a selected row's whole text below.
    """
    full = [display_text(t) for t in table["text"]]
    table = table.assign(text=[display_text(t, FLIPPED_CHARS) for t in full])
    event = st.dataframe(
        table,
        hide_index=True,
        key="flipped",
        on_select="rerun",
        selection_mode="single-row",
        column_config={
            "text": st.column_config.TextColumn(
                width="large",
                help="HTML tags removed; long texts are cut: select a row to read all of it.",
            ),
            "P(label) baseline": st.column_config.ProgressColumn(
                "P baseline",
                help="The baseline model's probability of the true label.",
                min_value=0,
                max_value=1,
                format="percent",
                width="small",
            ),
            "P(label) compressed": st.column_config.ProgressColumn(
                "P compressed",
                help="The compressed model's probability of the true label.",
                min_value=0,
                max_value=1,
                format="percent",
                width="small",
            ),
        },
    )
    chosen = [i for i in event.selection.rows if i < len(full)]
    if chosen:
        row = table.iloc[chosen[0]]
        st.markdown(
            f"**True label {plain(row['label'])}** · baseline says {plain(row['baseline says'])} · "
            f"compressed says {plain(row['compressed says'])}"
        )
        st.text(full[chosen[0]])
    else:
        st.caption("Select a row to read its whole text.")
