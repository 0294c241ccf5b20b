"""The Auto page's Search section: the tolerance and budget controls, the search in a background
thread with live progress and Cancel, and the result (recipe, per-layer table, Pareto plot, and
the way to the Compress page with the recipe loaded). A classifier is searched by accuracy, a
causal LM by the rise of its perplexity (mean NLL per token), as ``llmopt search`` does.

The thread only writes plain values into the ``Job`` (no Streamlit call); Cancel sets an event
the search polls before every evaluation (its ``should_stop``)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st

from dashboard import loaders, ui
from dashboard.sidebar import Selection
from dashboard.text import plain
from llmopt.compression import registry
from llmopt.errors import LlmoptError

STATE = "auto_search_job"  # session key of this session's latest search
REFRESH_S = 1.0  # how often the live progress redraws
MODES = {
    "relative": "keep at least this share of the accuracy",
    "absolute": "lose at most this many accuracy points",
}
LM_MODES = {
    "relative": "perplexity rises by at most this share",
    "absolute": "mean NLL per token rises by at most this many nats",
}
SEARCHABLE = ("prune", "quantize", "lowrank")


@dataclass
class Job:
    """A search in a background thread and what it has reported so far."""

    key: tuple  # (model, rows): the result is shown only for the same choice
    settings: dict
    cancel: threading.Event = field(default_factory=threading.Event)
    status: str = "running"  # running | done | cancelled | failed
    fraction: float = 0.0
    message: str = "starting"
    result: object = None  # the SearchResult when done
    error: Exception | None = None
    started: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    def progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = min(max(float(fraction), 0.0), 1.0), message


def controls(n_train: int, lm=None) -> dict:
    """The widgets: tolerance (relative or in points; a causal LM ``lm``: a perplexity rise in
    percent or nats), objective, methods, budget, rows (and an LM's window length)."""
    from llmopt.search import default_validation_rows

    left, right = st.columns(2)
    mode = left.radio(
        "Tolerance", list(MODES), format_func=(MODES if lm is None else LM_MODES).get, key="s_mode",
        persist_state="session",
    )  # fmt: skip
    seq_len = None
    if lm is not None:
        tolerance, seq_len = _lm_tolerance(lm, mode, right)
    elif mode == "relative":
        keep = right.number_input(
            "Keep at least (% of the base model's validation accuracy)", min_value=50.0,
            max_value=100.0, value=99.0, step=0.5, key="s_keep", persist_state="session",
        )  # fmt: skip
        tolerance = round(1.0 - keep / 100.0, 10)
    else:
        points = right.number_input(
            "Lose at most (accuracy points)", min_value=0.0, max_value=50.0, value=1.0,
            step=0.5, key="s_points", persist_state="session",
        )  # fmt: skip
        tolerance = points / 100.0
    left, mid, right = st.columns(3)
    objective = left.radio(
        "Smallest by", ["size", "latency"], horizontal=True, key="s_objective",
        help="size: bytes of the compressed model; latency: measured per validation row "
        "(simulated compression runs the base model's kernels, so size is the usual choice).",
        persist_state="session",
    )  # fmt: skip
    names = [n for kind in SEARCHABLE for n in registry.names(kind)]
    methods = mid.multiselect(
        "Methods", names, default=["magnitude", "rtn"], key="s_methods",
        help="Each method is searched alone: its uniform levels, then per-layer variants "
        "that fall back the most sensitive layers first.", persist_state="session",
    )  # fmt: skip
    budget = right.number_input(
        "Max evaluations", min_value=1, max_value=200, value=24, step=1, key="s_budget",
        persist_state="session",
    )  # fmt: skip
    most = max(1, n_train - 1)
    rows = st.number_input(
        f"Validation {'texts' if lm else 'rows'} (from the end of the training split)",
        min_value=1, max_value=most, value=min(default_validation_rows(n_train), most), step=32,
        key="s_rows",
        help=f"The search decides on these {'texts' if lm else 'rows'}; the test "
        f"{'texts' if lm else 'rows'} are read only for the pick. "
        + ("The 95% interval (over the texts' windows) must fit inside the tolerance."
           if lm else "The 95% interval must fit inside the tolerance: a 1-point tolerance "
           "needs about 1,000 rows once a few percent of the predictions move."),
    )  # fmt: skip
    return {
        "tolerance": tolerance, "relative": mode == "relative", "objective": objective,
        "methods": list(methods), "max_evaluations": int(budget), "validation_rows": int(rows),
        "seq_len": seq_len,
    }  # fmt: skip


def _lm_tolerance(lm, mode: str, where) -> tuple[float, int]:
    """A causal LM's tolerance (a share of the perplexity, or nats of mean NLL per token) and
    window length, as ``llmopt search --tolerance [--relative] --seq-len`` take them."""
    from llmopt.lm.perplexity import default_seq_len

    left, right = where.columns(2)
    if mode == "relative":
        rise = left.number_input(
            "Perplexity may rise by at most (%)", min_value=0.0, max_value=1000.0, value=1.0,
            step=0.5, key="s_ppl_rise", persist_state="session",
        )  # fmt: skip
        tolerance = round(rise / 100.0, 10)
    else:
        tolerance = left.number_input(
            "Mean NLL may rise by at most (nats per token)", min_value=0.0, max_value=10.0,
            value=0.01, step=0.005, format="%.4f", key="s_nats", persist_state="session",
            help="0.01 nats: the perplexity rises by at most a factor e^0.01 ≈ 1.01.",
        )  # fmt: skip
    seq_len = right.number_input(
        "Window (tokens)", min_value=2, max_value=1_000_000, value=default_seq_len(lm),
        key="s_seq_len", help="Texts are joined and cut into windows of this many tokens "
        "(the paper protocol); the interval resamples windows.",
    )  # fmt: skip
    return float(tolerance), int(seq_len)


def _work(job: Job, loaded, train, data, store) -> None:
    """The thread's body: run the search, keep its result or its error."""
    from llmopt.search import search

    s = job.settings
    try:
        job.result = search(
            loaded, train, data, tolerance=s["tolerance"], relative=s["relative"],
            objective=s["objective"], methods=s["methods"],
            max_evaluations=s["max_evaluations"], validation_rows=s["validation_rows"],
            seq_len=s.get("seq_len"), store=store, origin="app", progress=job.progress,
            should_stop=job.cancel.is_set,
        )  # fmt: skip
        job.status = "done"
    except LlmoptError as exc:
        job.error = exc
        job.status = "cancelled" if job.cancel.is_set() else "failed"
    except Exception as exc:  # shown on the page in the dashboard's words
        job.error, job.status = exc, "failed"


def start(sel: Selection, loaded, data, settings: dict) -> Job:
    """Start a search in a background thread owned by this session.

    Raises:
        LlmoptError: a search is already running, no method chosen, or a bad setting.
    """
    from llmopt.search import allowed_loss, parse_methods

    old = current(sel)
    if old is not None and old.running:
        raise LlmoptError("a search is in progress; wait for it or press Cancel")
    if not settings["methods"]:
        raise LlmoptError("choose at least one method to search")
    parse_methods(settings["methods"])
    allowed_loss(settings["tolerance"])
    if settings.get("seq_len") is not None:  # a causal LM: a window the model can take
        from llmopt.lm.perplexity import check_seq_len

        check_seq_len(loaded, settings["seq_len"])
    train = loaders.dataset(sel, "train")
    store = loaders.experiment_store()
    store = None if store.read_only else store
    job = Job((sel.model_key, data.fingerprint), dict(settings))
    job.thread = threading.Thread(
        target=_work, args=(job, loaded, train, data, store), daemon=True, name="llmopt-search"
    )
    st.session_state[STATE] = job
    job.thread.start()
    return job


def current(sel: Selection) -> Job | None:
    """This session's latest search, if it was made on the chosen model."""
    job = st.session_state.get(STATE)
    return job if job is not None and job.key[0] == sel.model_key else None


@st.fragment(run_every=REFRESH_S)
def live(job: Job) -> None:
    """Progress of a running search with Cancel, redrawn every second; a full rerun at the end."""
    if not job.running:
        st.rerun(scope="app")
    st.progress(job.fraction, text=plain(job.message))
    st.caption(f"Searching for {time.monotonic() - job.started:.0f} s.")
    if st.button("Cancel", key="s_cancel"):
        job.cancel.set()


def layer_table(config) -> pd.DataFrame:
    """The recipe's per-layer rules: one row per layer pattern, what it sets."""
    from llmopt.search import per_layer_rows

    rows = per_layer_rows(config)
    frame = pd.DataFrame(rows, columns=["layer", "sparsity", "bits", "rank", "skip"])
    return frame.dropna(axis=1, how="all").astype(object)


def _open_on_compress(config: dict, seq_len: int | None = None) -> None:
    """Set the Compress page's controls to the recipe (a causal LM's ``seq_len``: its
    perplexity task, paper protocol and window, so Evaluate there scores the pick as the
    search did on the test texts)."""
    from dashboard.controls import values_from_config

    for key, value in values_from_config(config).items():
        st.session_state[key] = value
    if seq_len is not None:
        st.session_state.update(lm_task="perplexity", lm_protocol="paper", lm_seq_len=seq_len)
    st.session_state["s_goto_compress"] = True


def show(job: Job, data) -> None:
    """The finished search: summary, Pareto plot, recipe and per-layer table, the way on."""
    from llmopt.figures.search import perplexity, search_figure

    if job.status == "cancelled":
        st.warning("Search cancelled: nothing more was evaluated.")
        return
    if job.status == "failed":
        with ui.inline_errors():  # one line in the dashboard's words
            raise job.error
        return
    result = job.result
    if job.key[1] != data.fingerprint:
        st.info("This search picked its recipe for other test rows; run it again for these.")
    st.plotly_chart(search_figure(result), key="search_pareto")
    if result.sensitivities:
        from llmopt.figures.sensitivity import sensitivity_figure

        with st.expander("Why these layers: the sensitivity that ordered the fallbacks"):
            st.caption(
                "Each matrix compressed alone; the most sensitive (reddest) fall back first."
            )
            for i, sens in enumerate(result.sensitivities):
                st.plotly_chart(sensitivity_figure(sens), key=f"search_sensitivity_{i}")
    if result.best is None:
        st.warning(
            f"No candidate met the tolerance in {result.evaluations} evaluations: allow more "
            "loss or evaluations, or add methods."
        )
        return
    best, uniform = result.best, result.uniform_best
    lo, hi = best.interval
    lm = result.metric == "nll"
    if lm:
        score = (
            f"validation perplexity {perplexity(best.metric):.4f} (base "
            f"{perplexity(result.baseline):.4f}); NLL rise {best.loss:+.4f} nats per token"
        )
    else:
        score = f"validation accuracy {best.metric:.4f} (base {result.baseline:.4f}); loss"
        score += f" {best.loss:+.4f}"
    st.markdown(
        f"**Pick: {plain(best.label)}** — {best.size_bytes / 1e6:.3f} MB, {score}, 95% interval "
        f"[{lo:+.4f}, {hi:+.4f}] within the allowed {result.allowed:.4f}"
        f"{f' nats (perplexity ×{perplexity(result.allowed):.4f})' if lm else ''}. "
        f"{result.evaluations} evaluations in {result.seconds:.0f} s."
    )
    if uniform is not None:
        st.caption(
            f"Best uniform setting meeting the tolerance: {plain(uniform.label)} "
            f"({uniform.size_bytes / 1e6:.3f} MB)."
        )
    if result.test_compressed is not None and lm:
        b, o = result.test_baseline["perplexity"], result.test_compressed["perplexity"]
        st.caption(
            f"On the {result.test_baseline['documents']} test texts "
            f"({job.settings['seq_len']}-token windows): perplexity {b:.4f} → {o:.4f} "
            f"({100 * (o / b - 1):+.2f}%)."
        )
    elif result.test_compressed is not None:
        b = result.test_baseline.metrics["accuracy"]
        o = result.test_compressed.metrics["accuracy"]
        st.caption(
            f"On the {len(result.test_baseline.y_true)} test rows: accuracy {o:.4f} "
            f"(base {b:.4f}, loss {b - o:+.4f})."
        )
    table = layer_table(best.config)
    if len(table):
        st.markdown("**Per-layer rules of the recipe**")
        st.dataframe(table, hide_index=True, key="search_layers")
    st.json(result.recipe, expanded=False)
    if result.run_id is not None:
        st.button(
            f"Open the recipe of run #{result.run_id} on the Compress page (press Evaluate "
            "there)" if lm else f"Open run #{result.run_id} and its recipe on the Compress page",
            key="s_open", on_click=_open_on_compress,
            args=(result.recipe, job.settings.get("seq_len")),
        )  # fmt: skip
        st.page_link(
            "pages/compare.py", label=f"Compare run #{result.run_id} with others",
            icon=":material/compare_arrows:", query_params={"runs": str(result.run_id)},
        )  # fmt: skip
    if st.session_state.pop("s_goto_compress", False) and result.run_id is not None:
        st.switch_page("pages/compress.py", query_params={"run": str(result.run_id)})


def section(sel: Selection, loaded, data, n_train: int) -> None:
    """The whole Search section (called at the end of the Auto page)."""
    st.divider()
    st.header("Search")
    lm = loaded if loaders.is_lm(loaded) else None
    what = (
        "**Perplexity-aware search.** The smallest model whose loss — the rise of the mean NLL "
        "per token (the log of the perplexity ratio) on windows of the validation texts — is "
        if lm
        else "**Accuracy-aware search.** The smallest model whose accuracy loss on the "
        "validation rows is "
    )
    st.markdown(
        f"{what}within the tolerance *with 95% confidence*: a candidate is accepted only "
        "when the upper end of the paired interval of its loss is. Uniform settings come "
        "first; then the most sensitive layers fall back first. The pick is then evaluated "
        f"on the test {'texts' if lm else 'rows'} and every candidate is recorded on the "
        "Compare page."
    )
    settings = controls(n_train, lm)
    if st.button("Run search", type="primary", key="s_run"):
        with ui.guard():
            start(sel, loaded, data, settings)
    job = current(sel)
    if job is None:
        st.info("Choose a tolerance and methods, then press **Run search**.")
    elif job.running:
        live(job)
    else:
        show(job, data)
