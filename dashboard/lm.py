"""The Compress & Evaluate page for a causal language model: perplexity of the base model and
of a compressed copy on the same windows, their fidelity, the tokens that got harder, and
generation side by side. Widgets here; every number comes from ``llmopt.lm``."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from dashboard import controls, flow, loaders, ui
from dashboard.cache import shared_cache
from dashboard.sidebar import Selection, confinement
from dashboard.text import plain
from llmopt.errors import LlmoptError

LM_RESULT = "lm_evaluation"  # this session's latest LM evaluation
LM_GENERATION = "lm_generation"  # this session's latest side-by-side generation


def is_causal_lm(sel: Selection) -> bool:
    """Whether the sidebar's model is a causal LM (its config alone is read)."""
    from llmopt.lm.load import CAUSAL_LM, model_kind

    try:
        return shared_cache("kind", 64).get(
            m := sel.model_source, lambda: model_kind(m) == CAUSAL_LM
        )
    except LlmoptError:  # an empty box: the classifier path says what to fill in
        return False


def base_lm(sel: Selection):
    """The chosen causal LM, loaded once per process and shared: never modify it."""
    from llmopt.lm import load_causal_lm

    source = sel.model_source

    def make():
        with st.spinner(f"Loading causal LM {source}…"):
            return load_causal_lm(source, confine=confinement())

    return shared_cache("models", 3).get((source, "causal-lm"), make)


def _compressed(sel: Selection, lm, config, seq_len: int):
    """This session's compressed copy of the LM for ``config`` (only the latest is kept)."""
    from llmopt.compression import compress, needs_calibration

    calibrated = needs_calibration(config)
    key = (sel.model_source, "causal-lm", config, seq_len, sel.data_key if calibrated else None)
    hit = st.session_state.get("compressed")
    if hit is not None and hit["key"] == key:
        return hit["model"], hit["report"]
    st.session_state.pop("compressed", None)
    calibration = loaders.dataset(sel, "train") if calibrated else None
    with ui.progress("compressing a copy; the shared base model is left untouched") as bar:
        model, rep = compress(lm, config, calibration=calibration, progress=bar, seq_len=seq_len)
    st.session_state["compressed"] = {"key": key, "config": config, "model": model, "report": rep}
    return model, rep


def evaluate_lm(sel: Selection, lm, data, config, protocol: str, seq_len: int) -> dict:
    """Perplexity of the base LM (and of its compressed copy with fidelity, when ``config``),
    their intervals, recorded in the experiment store."""
    from llmopt.lm import compare_lms, perplexity
    from llmopt.lm.load import lm_size
    from llmopt.recording import lm_statistics, record_lm_evaluation

    other = fidelity = report = other_size = None
    if config is None:
        with ui.progress("perplexity of the model") as bar:
            base = perplexity(lm, data.texts, protocol=protocol, seq_len=seq_len, progress=bar)
    else:
        model, report = _compressed(sel, lm, config, seq_len)
        other_size = lm_size(model)
        with ui.progress("both models on the same windows") as bar:
            base, other, fidelity = compare_lms(
                lm, model, data.texts, protocol=protocol, seq_len=seq_len, progress=bar
            )
    base_size = lm_size(lm)
    computed = lm_statistics(base, other, fidelity)
    run_id = None
    try:
        done = record_lm_evaluation(
            loaders.experiment_store(), lm=lm, dataset=data, base=base, base_size=base_size,
            other=other, other_size=other_size, fidelity=fidelity, config=config,
            report=report, origin="app", model_source=sel.model_source,
            dataset_source=flow.dataset_source(sel),
            rows={**flow.rows_spec(sel, data), "protocol": protocol, "seq_len": seq_len},
            computed=computed,
        )  # fmt: skip
        run_id = done.run_id
    except (LlmoptError, OSError) as exc:
        why = exc.render("app") if isinstance(exc, LlmoptError) else str(exc)
        st.warning(f"This evaluation was not recorded for the Compare page: {plain(why)}")
    result = {
        "key": (sel.model_source, data.fingerprint, protocol, seq_len),
        "config": config, "base": base, "other": other, "fidelity": fidelity,
        "stats": computed, "run_id": run_id,
    }  # fmt: skip
    st.session_state[LM_RESULT] = result
    return result


def _fmt(value: float) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:,.3f}"


def _interval(pair) -> str:
    return f"95% interval {_fmt(pair[0])} – {_fmt(pair[1])}" if pair else ""


def show_result(result: dict) -> None:
    """Cards with intervals, the paired difference's verdict, fidelity and harder tokens."""
    stats = result["stats"]
    base, other = result["base"], result["other"]
    for name, label in (("perplexity", "Perplexity"), ("bits_per_byte", "Bits per byte")):
        left, right = st.columns(2)
        with left:
            st.metric(f"{label} · baseline", _fmt(base.metric(name)))
            st.caption(_interval(stats["baseline_intervals"].get(name)))
        if other is not None:
            delta = other.metric(name) - base.metric(name)
            with right:
                st.metric(
                    f"{label} · compressed", _fmt(other.metric(name)), f"{delta:+.3f}",
                    delta_color="inverse",
                )  # fmt: skip
                st.caption(_interval(stats["intervals"].get(name)))
                paired = stats.get("delta_intervals", {}).get(name)
                if paired:
                    noise = paired[0] <= 0 <= paired[1]
                    verdict = "noise (the interval holds 0)" if noise else "a real change"
                    st.caption(
                        f"Paired difference: 95% interval {paired[0]:+.3f} – {paired[1]:+.3f}: "
                        f"{verdict}"
                    )
    st.caption(
        f"{base.protocol} protocol · windows of {base.seq_len} tokens · {base.n_tokens} tokens "
        f"scored · {_fmt(base.tokens_per_second)} tokens/s"
    )
    fidelity = result["fidelity"]
    if fidelity is not None:
        a, b = st.columns(2)
        a.metric("Top-1 agreement", f"{fidelity.top1_agreement:.1%}")
        a.caption(_interval(stats["intervals"].get("top1_agreement")))
        b.metric("Mean KL (base ‖ compressed), nats/token", _fmt(fidelity.mean_kl))
        b.caption(_interval(stats["intervals"].get("mean_kl")))
        if fidelity.harder:
            st.subheader("Tokens that got harder")
            st.dataframe(harder_table(fidelity.harder), hide_index=True)
    if result["run_id"] is not None:
        st.caption(f"Recorded as run #{result['run_id']} (see the Compare page).")


def harder_table(harder) -> pd.DataFrame:
    """The tokens whose loss rose most, in context, with both models' top predictions (a
    dataframe shows each string as text)."""
    return pd.DataFrame(
        [
            {
                "context": h.context,
                "token": h.token,
                "loss rise (nats)": round(h.loss_increase, 3),
                "baseline top": f"{h.base_top} ({h.base_top_prob:.0%})",
                "compressed top": f"{h.compressed_top} ({h.compressed_top_prob:.0%})",
            }  # fmt: skip
            for h in harder
        ]
    )


def show_generation(sel: Selection, lm) -> None:
    """Prompt → baseline and compressed continuations, aligned, first divergence marked."""
    from llmopt.lm import generate_side_by_side

    st.header("Generate side by side")
    prompt = st.text_area("Prompt", "This coffee is", key="lm_prompt")
    a, b, c = st.columns(3)
    mode = a.radio("Decoding", ["greedy", "seeded sampling"], key="lm_decoding")
    new = b.number_input("Max new tokens", 1, 512, 20, key="lm_new_tokens")
    seed = c.number_input("Seed", 0, 2**31 - 1, 0, key="lm_seed")
    if st.button("Generate", key="lm_generate"):
        with ui.inline_errors():
            hit = st.session_state.get("compressed")
            other = hit["model"] if hit is not None and hit["key"][0] == sel.model_source else None
            with st.spinner("Generating…"):
                st.session_state[LM_GENERATION] = generate_side_by_side(
                    lm, other, prompt, max_new_tokens=int(new),
                    sample=mode != "greedy", seed=int(seed),
                )  # fmt: skip
    gen = st.session_state.get(LM_GENERATION)
    if gen is None:
        return
    st.dataframe(generation_table(gen), hide_index=True)
    sides = [("Baseline", gen.baseline), ("Compressed", gen.compressed)]
    for (name, side), col in zip(sides, st.columns(2), strict=True):
        if side is not None:
            col.caption(f"{name}: {_fmt(side.tokens_per_second)} tokens/s")
            col.text(side.text)
    if gen.compressed is not None:
        where = gen.first_divergence
        st.caption(
            "The continuations agree token for token."
            if where is None
            else f"They part at new token {where + 1} (marked ▶)."
        )


def generation_table(gen) -> pd.DataFrame:
    """One row per new token: each model's token and its probability, the divergence marked."""
    rows = []
    other = gen.compressed
    n = max(len(gen.baseline.tokens), len(other.tokens) if other else 0)
    for i in range(n):
        row = {
            "": "▶" if gen.first_divergence == i else "",
            "#": i + 1,
            "baseline": gen.baseline.tokens[i] if i < len(gen.baseline.tokens) else "",
            "p baseline": gen.baseline.probs[i] if i < len(gen.baseline.probs) else None,
        }
        if other is not None:
            row["compressed"] = other.tokens[i] if i < len(other.tokens) else ""
            row["p compressed"] = other.probs[i] if i < len(other.probs) else None
        rows.append(row)
    return pd.DataFrame(rows)


def show_compress_page(sel: Selection) -> None:
    """The Compress & Evaluate page when the sidebar's model is a causal LM."""
    from llmopt.lm.perplexity import PROTOCOLS, default_seq_len

    with ui.guard():
        data = loaders.dataset(sel, "test", sel.rows)
        lm = base_lm(sel)
    st.caption(
        f"Causal LM **{plain(sel.model_source)}** · dataset **{plain(data.name)}** · "
        f"{len(data)} test texts"
    )
    from llmopt.tasks import eval_tasks

    tasks = [t for t in eval_tasks("causal-lm") if t == "perplexity"]  # zero-shot: CLI for now
    task = st.selectbox("Task", tasks, key="lm_task")
    left, right = st.columns(2)
    protocol = left.radio("Protocol", list(PROTOCOLS), key="lm_protocol", horizontal=True)
    seq_len = right.number_input(
        "Window (tokens)", 2, 1_000_000, default_seq_len(lm), key="lm_seq_len"
    )
    controls.show(int(getattr(lm.model.config, "hidden_size", 0) or 768))
    with ui.guard():
        config = controls.config_from_state()
    if config.is_identity:
        config = None  # nothing to compress: the base model alone
    if st.button("Evaluate", type="primary", key="lm_evaluate"):
        with ui.inline_errors():
            evaluate_lm(sel, lm, data, config, protocol, int(seq_len))
    result = st.session_state.get(LM_RESULT)
    if result is not None and result["key"] == (
        sel.model_source, data.fingerprint, protocol, int(seq_len)
    ):  # fmt: skip
        show_result(result)
    else:
        st.info(f"Press **Evaluate** to score {task} on {len(data)} test texts.")
    show_generation(sel, lm)


def stop_on_classifier_page(sel: Selection) -> None:
    """On a page that takes only sequence classifiers, a causal LM ends the run with a line
    that says where it can be evaluated (rather than the classifier loader's refusal)."""
    if is_causal_lm(sel):
        st.info(
            f"{plain(sel.model_source)} is a causal language model: this page takes sequence "
            "classifiers. Evaluate it (perplexity, fidelity, generation) on the Compress & "
            "Evaluate page and compare its runs on the Compare page; sweeps of causal LMs "
            "come later."
        )
        st.stop()
