"""The Compress & Evaluate page for a causal language model: perplexity of the base model and
of a compressed copy on the same windows, their fidelity, the tokens that got harder, zero-shot
label scoring shown as a classifier's results, and generation side by side. Widgets here;
every number comes from ``llmopt.lm``."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from dashboard import controls, flow, loaders, results, ui
from dashboard.cache import shared_cache
from dashboard.sidebar import Selection, confinement
from dashboard.text import plain
from llmopt.errors import LlmoptError

LM_RESULT = "lm_evaluation"  # this session's latest LM evaluation
LM_GENERATION = "lm_generation"  # this session's latest side-by-side generation
LM_ZERO_SHOT = "lm_zero_shot"  # this session's latest zero-shot evaluation (a flow.Evaluation)
TASK_LABELS = {"perplexity": "perplexity", "zero-shot": "zero-shot (label scoring)"}


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


def base_perplexity(sel: Selection, lm, data, protocol: str, seq_len: int):
    """The base LM's ``PerplexityResult`` on these texts, windows and protocol (computed once
    per process and shared by every session)."""
    from llmopt.lm import perplexity

    def make():
        with ui.progress("perplexity of the model") as bar:
            return perplexity(lm, data.texts, protocol=protocol, seq_len=seq_len, progress=bar)

    key = (sel.model_source, data.fingerprint, protocol, seq_len)
    return shared_cache("lm_perplexity", 8).get(key, make)


def evaluate_lm(sel: Selection, lm, data, config, protocol: str, seq_len: int) -> dict:
    """Perplexity of the base LM (and of its compressed copy with fidelity, when ``config``),
    their intervals, recorded in the experiment store."""
    from llmopt.lm import compare_lms
    from llmopt.lm.load import lm_size
    from llmopt.recording import lm_statistics, record_lm_evaluation

    other = fidelity = report = other_size = None
    if config is None:
        base = base_perplexity(sel, lm, data, protocol, seq_len)
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


def _rate(value: float) -> str:
    """A throughput: whole tokens per second (its decimals are timer noise)."""
    return "—" if value is None or not math.isfinite(value) else f"{value:,.0f}"


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
        f"scored · {_rate(base.tokens_per_second)} tokens/s"
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
            col.caption(f"{name}: {_rate(side.tokens_per_second)} tokens/s")
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


def zero_shot_applies(data) -> bool:
    """Whether zero-shot label scoring applies to these rows: they have two labels or more."""
    return len(getattr(data, "label_names", None) or []) >= 2


def default_verbalizer(label: str) -> str:
    """The bundled reviews' verbalizer of a label (as the CLI's defaults), else its name."""
    from llmopt.lm.zeroshot import DEFAULT_VERBALIZERS

    return DEFAULT_VERBALIZERS.get(label, label)


def zero_shot_controls(data):
    """The prompt template and one verbalizer per label, checked.

    Returns:
        A ``ZeroShotConfig``, or None after an ``st.error`` that says what to fix (no
        ``{text}``, an empty verbalizer, two labels with the same words).
    """
    from llmopt.lm.zeroshot import DEFAULT_PROMPT, ZeroShotConfig

    prompt = st.text_area(
        "Prompt template",
        DEFAULT_PROMPT,
        key="lm_zs_prompt",
        help="{text} is replaced by each row's text; each label is scored by the "
        "log-likelihood of its verbalizer right after this prompt (with a space between).",
    )
    names = [str(n) for n in data.label_names]
    st.caption(
        "Verbalizers: the words that stand for each label. Probabilities are the softmax of "
        "their log-likelihoods over the labels."
    )
    cols = st.columns(min(len(names), 4))
    verbalizers: dict[str, str] = {}
    for i, name in enumerate(names):
        words = cols[i % len(cols)].text_input(
            f"Label {plain(name)}", default_verbalizer(name), key=f"lm_zs_verb_{name}"
        )
        verbalizers[name] = words.strip()
    empty = [n for n, w in verbalizers.items() if not w]
    if empty:
        st.error(
            f"The verbalizer of label {plain(repr(empty[0]))} is empty: fill in the words that "
            "stand for it."
        )
        return None
    seen: dict[str, str] = {}
    for name, words in verbalizers.items():
        if words in seen:
            st.error(
                f"Labels {plain(repr(seen[words]))} and {plain(repr(name))} have the same "
                f"verbalizer {plain(repr(words))}: give each label its own words (the same words "
                "score the same)."
            )
            return None
        seen[words] = name
    try:
        return ZeroShotConfig(prompt=prompt, verbalizers=verbalizers)
    except LlmoptError as exc:
        st.error(plain(exc.render("app")))
        return None


def _zero_shot_key(sel: Selection, data, zs) -> tuple:
    return (sel.model_source, data.fingerprint, zs.prompt, tuple(zs.verbalizers.items()))


def evaluate_zero_shot(sel: Selection, lm, data, config, zs) -> flow.Evaluation:
    """Zero-shot label scoring of the base LM (and its compressed copy) on the same rows, as
    ``evaluate --task zero-shot`` does: classifier-shaped results, their intervals and tests,
    recorded with the zero-shot fingerprint (the LM with its prompt and verbalizers), so the
    Compare page pairs the run with a classifier evaluated on the same rows.

    Returns:
        The evaluation, also kept in ``st.session_state[LM_ZERO_SHOT]``.
    """
    import llmopt
    from llmopt.compression.engine import identity_report
    from llmopt.lm.load import lm_size
    from llmopt.lm.zeroshot import zero_shot_eval
    from llmopt.recording import record_evaluation, statistics, zero_shot_fingerprint

    def score_base():
        with ui.progress("zero-shot label scoring of the model") as bar:
            return zero_shot_eval(lm, data, zs, lm_size(lm), bar)[0]

    key = _zero_shot_key(sel, data, zs)
    base = shared_cache("lm_zero_shot", 8).get(key, score_base)
    compressed = not config.is_identity
    if compressed:
        model, report = _compressed(sel, lm, config, None)
        with ui.progress("zero-shot label scoring of the compressed copy") as bar:
            other, _ = zero_shot_eval(model, data, zs, lm_size(model), bar)
    else:  # nothing to compress: the base model alone, recorded as the CLI records it
        other, report = base, identity_report(lm, config)
    recorded = statistics(base, other if compressed else None)
    run_id = None
    try:
        done = record_evaluation(
            loaders.experiment_store(), base_model=lm, dataset=data, base=base,
            other=other if compressed else None, config=config if compressed else None,
            report=report if compressed else None, computed=recorded, task="zero-shot",
            model_fp=zero_shot_fingerprint(lm, zs.prompt, zs.verbalizers), origin="app",
            model_source=sel.model_source, dataset_source=flow.dataset_source(sel),
            rows={**flow.rows_spec(sel, data), "prompt": zs.prompt,
                  "verbalizers": dict(zs.verbalizers)},
        )  # fmt: skip
        run_id = done.run_id
    except (LlmoptError, OSError) as exc:
        why = exc.render("app") if isinstance(exc, LlmoptError) else str(exc)
        st.warning(f"This evaluation was not recorded for the Compare page: {plain(why)}")
    evaluation = flow.Evaluation(
        key=key, config=config, base=base, other=other, fidelity=llmopt.compare(base, other),
        report=report, notes=list(lm.notes), texts=list(data.texts),
        stats=statistics(base, other), latency=None, simulated=True, run_id=run_id,
    )  # fmt: skip
    st.session_state[LM_ZERO_SHOT] = evaluation
    return evaluation


def show_zero_shot(evaluation: flow.Evaluation, current) -> None:
    """What the harness's length-normalised accuracy says, then the classifier's results view
    (cards with intervals, ROC, confusion matrices, flipped rows)."""
    base, other = evaluation.base, evaluation.other
    line = (
        "Zero-shot label scoring · acc_norm (the label of highest log-likelihood per character "
        f"of its verbalizer): baseline {_fmt(base.metrics.get('acc_norm', math.nan))}"
    )
    if not evaluation.config.is_identity:
        line += f", compressed {_fmt(other.metrics.get('acc_norm', math.nan))}"
    st.caption(line)
    results.show_results(evaluation, current)


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

    tasks = [t for t in eval_tasks("causal-lm") if t in TASK_LABELS]
    if not zero_shot_applies(data):
        tasks = [t for t in tasks if t != "zero-shot"]
    task = st.selectbox(
        "Task", tasks, format_func=lambda t: TASK_LABELS[t], key="lm_task",
        help="perplexity: how well the model predicts the texts; zero-shot: the model as a "
        "classifier of the rows' labels, each label scored by its verbalizer after a prompt.",
    )  # fmt: skip
    if task == "zero-shot":
        zs = zero_shot_controls(data)
    else:
        left, right = st.columns(2)
        protocol = left.radio("Protocol", list(PROTOCOLS), key="lm_protocol", horizontal=True)
        seq_len = right.number_input(
            "Window (tokens)", 2, 1_000_000, default_seq_len(lm), key="lm_seq_len"
        )
    controls.show(int(getattr(lm.model.config, "hidden_size", 0) or 768))
    with ui.guard():
        config = controls.config_from_state()
    if task == "zero-shot":
        _zero_shot_section(sel, lm, data, config, zs)
    else:
        _perplexity_section(sel, lm, data, config, protocol, int(seq_len))
    show_generation(sel, lm)


def _zero_shot_section(sel: Selection, lm, data, config, zs) -> None:
    if st.button("Evaluate", type="primary", key="lm_evaluate", disabled=zs is None):
        with ui.inline_errors():
            evaluate_zero_shot(sel, lm, data, config, zs)
    shown = st.session_state.get(LM_ZERO_SHOT)
    if zs is not None and shown is not None and shown.key == _zero_shot_key(sel, data, zs):
        show_zero_shot(shown, config)
    elif zs is not None:
        st.info(
            f"Press **Evaluate** to score each label's verbalizer on {len(data)} test rows, "
            "with the model and with its compressed copy."
        )


def _perplexity_section(sel: Selection, lm, data, config, protocol: str, seq_len: int) -> None:
    if config.is_identity:
        config = None  # nothing to compress: the base model alone
    if st.button("Evaluate", type="primary", key="lm_evaluate"):
        with ui.inline_errors():
            evaluate_lm(sel, lm, data, config, protocol, seq_len)
    result = st.session_state.get(LM_RESULT)
    if result is not None and result["key"] == (
        sel.model_source, data.fingerprint, protocol, seq_len
    ):  # fmt: skip
        show_result(result)
    else:
        st.info(f"Press **Evaluate** to score perplexity on {len(data)} test texts.")


def stop_on_classifier_page(sel: Selection) -> None:
    """On a page that takes only sequence classifiers, a causal LM ends the run with a line
    that says where it can be evaluated (rather than the classifier loader's refusal)."""
    if is_causal_lm(sel):
        st.info(
            f"{plain(sel.model_source)} is a causal language model: this page takes sequence "
            "classifiers. Evaluate it (perplexity, fidelity, generation) on the Compress & "
            "Evaluate page, sweep a compression knob on the Sweep page, and compare its runs on "
            "the Compare page."
        )
        st.stop()
