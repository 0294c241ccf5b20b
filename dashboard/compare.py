"""The Compare page's views: runs table, scatter and lineage that pick runs, and the views of
the picked runs (side by side, what differs, curves, confusion, behaviour, layers, export).

The picked runs live in one list (the "Runs to compare" box, key ``PICKED``): ticking rows of
the table, clicking or lassoing points of the scatter or the lineage map replaces it; the box
edits it directly; the address keeps it (``runs=…``).
"""

from __future__ import annotations

import functools
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import controls, flow, loaders, urlstate
from dashboard.cache import shared_cache
from dashboard.text import plain
from llmopt import comparison, figures, metrics
from llmopt.experiments import ExperimentStore, Run, short_source

PICKED = "cmp_runs"  # run ids to compare
TABLE_VERSION = "cmp_table_version"  # bumped when the pick changes elsewhere: fresh ticks
PAGE = "cmp_page"  # the runs table's page (1-based)
SORT, SORT_DESC, SEARCH = "cmp_sort", "cmp_sort_desc", "cmp_search"  # the table's order, search
TABLE_PAGE_ROWS = 100  # rows of the runs table sent to the browser at a time
GOTO_COMPRESS = "cmp_goto_compress"
SCATTER_ON = "cmp_scatter_on"  # the "Draw the scatter" switch, shown above SCATTER_DRAWN_RUNS
URL = {"runs": PICKED, "ref": "cmp_ref", "x": "cmp_x", "y": "cmp_y", "scatter": SCATTER_ON}
URL_DEFAULTS = {"x": "size_mb", "y": "accuracy"}  # left out of the address
FILTERS_ON = "cmp_filters_on"  # the switch that shows the filters
FILTER_KEYS = ("cmp_models", "cmp_data", "cmp_rows", "cmp_methods")
DEFAULTED = "cmp_defaulted"  # the filters were set to the sidebar's dataset and rows once
COLOUR_SET = "cmp_colour_set"  # "user" once the reader chose a colouring
LINEAGE_OPEN_RUNS = 200  # the lineage map starts open up to this many runs shown
# Up to this many runs shown the scatter is drawn at once; above, only when asked (a switch kept
# in the address): a first view without any chart spares the browser plotly's 4.7 MB script,
# most of a cold load's time with a thousand runs.
SCATTER_DRAWN_RUNS = 200
_LEADING = {"id": "id", "name": "name", "method": "recipe"}
_ACCURACY = {"accuracy": "accuracy", "accuracy_low": "acc. low", "accuracy_high": "acc. high"}
_TRAILING = {
    "size_mb": "size MB",
    "latency_ms": "latency ms",
    "latency_ratio": "latency ×",
    "agreement": "agreement",
    "mean_kl": "KL",
    "model_short": "model",
    "dataset_short": "dataset",
    "n": "rows",
    "parent": "parent",
    "tags": "tags",
    "created": "created",
}
TABLE_COLUMNS = metrics.LiveDict(  # runs_frame column -> title in the table
    lambda: {
        **_LEADING,
        **_ACCURACY,  # accuracy with its interval, then every other headline metric
        **{k: metrics.get(k).short for k in _other_headline()},
        **_TRAILING,
    }
)
VERDICT_STYLE = {
    "better": "background-color: rgba(44, 160, 44, 0.18)",
    "worse": "background-color: rgba(214, 39, 40, 0.18)",
    "noise": "color: #888888",
}


def _other_headline() -> list[str]:
    """The headline metrics but accuracy (which the table shows with its interval)."""
    return [k for k in metrics.headline(None) if k != "accuracy"]


def stored_runs(store: ExperimentStore) -> tuple[list[Run], pd.DataFrame]:
    """The store's runs and their table, read once for all sessions until the store's files
    change (a thousand runs take most of a second to read and tabulate).

    The runs are shared: callers must not change them.
    """
    key = (str(store.path), _stamp(store.path))

    def read() -> tuple[list[Run], pd.DataFrame]:
        runs = store.runs()
        return runs, comparison.runs_frame(runs)

    return shared_cache("compare_runs", 2).get(key, read)


def _stamp(path: Path) -> tuple:
    """What changes whenever the store is written: the file's and its write-ahead log's
    identity, size and modification time (taken before reading, so a write during the read
    only makes the next visit read again)."""
    stamp = []
    for file in (path, path.with_name(path.name + "-wal")):
        try:
            info = os.stat(file)
        except OSError:
            stamp.append(None)
            continue
        stamp.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamp)


def restore(all_ids: list[int]) -> None:
    """Take the picked runs, the reference and the axes from the address when it names ones
    this session has not seen there yet (a reload, a shared link, 'Compare run #N')."""
    for param, key in URL.items():
        text = urlstate.read_param(param)
        if not text or text == st.session_state.get(f"cmp_url_{param}"):
            continue
        st.session_state[f"cmp_url_{param}"] = text
        if param == "runs":
            ids = urlstate.link_ids(param)  # ASCII digits in SQLite's range; others noted
            _pick([i for i in ids if i in set(all_ids)])
        elif param == "ref":
            if (ref := urlstate.link_id(param)) is not None:
                st.session_state[key] = ref
        elif param == "scatter":
            st.session_state[key] = text == "on"
        elif text in comparison.AXES:
            st.session_state[key] = text


def mirror() -> None:
    """Keep the picked runs, the reference, the axes and the scatter's switch in the address
    (one change at most)."""
    values = {param: st.session_state.get(key) for param, key in URL.items()}
    values["scatter"] = "on" if values["scatter"] else None  # off (the default) or not shown
    urlstate.page_params({k: None if URL_DEFAULTS.get(k) == v else v for k, v in values.items()})
    for param in URL:
        st.session_state[f"cmp_url_{param}"] = urlstate.read_param(param)


def _pick(ids: list[int], from_table: bool = False) -> None:
    st.session_state[PICKED] = list(dict.fromkeys(int(i) for i in ids))
    if not from_table:
        st.session_state[TABLE_VERSION] = st.session_state.get(TABLE_VERSION, 0) + 1


def _table_picked(key: str, page_ids: list[int]) -> None:
    """Ticks on the table's page replace the picked runs of that page; picks on other pages
    (or from the scatter) stay."""
    rows = st.session_state[key].selection.rows
    ticked = [page_ids[i] for i in rows if i < len(page_ids)]
    on_page = set(page_ids)
    _pick([i for i in st.session_state.get(PICKED, []) if i not in on_page] + ticked, True)


def _points_picked(key: str) -> None:
    points = st.session_state[key].selection.points
    ids = [p["customdata"][0] for p in points if p.get("customdata")]
    if ids:
        _pick(ids)


def _box_edited() -> None:
    st.session_state[TABLE_VERSION] = st.session_state.get(TABLE_VERSION, 0) + 1


def _sidebar_defaults(frame: pd.DataFrame) -> None:
    """On a session's first visit, filter to the sidebar's dataset and rows when runs on them
    exist: runs on other data have other scores and must not share a scatter by default."""
    if st.session_state.get(DEFAULTED):
        return
    st.session_state[DEFAULTED] = True
    sel = st.session_state.get("selection")
    if sel is None or "cmp_data" in st.session_state:
        return
    dataset = flow.dataset_source(sel)
    ours = frame[frame["dataset"] == dataset]
    if ours.empty:  # recorded elsewhere (the command line) under another spelling of it
        ours = frame[frame["dataset_short"] == short_source(dataset)]
    if len(ours) and ours["dataset"].nunique() < frame["dataset"].nunique():
        st.session_state["cmp_data"] = sorted(ours["dataset"].unique())
    if len(ours) and (ours["n"] == sel.rows).any() and ours["n"].nunique() > 1:
        st.session_state["cmp_rows"] = [int(sel.rows)]
    if any(st.session_state.get(key) for key in FILTER_KEYS):
        st.session_state[FILTERS_ON] = True  # show the filters that were set


def filters(frame: pd.DataFrame) -> pd.DataFrame:
    """Model, dataset, rows and method filters (first set to the sidebar's dataset and rows);
    the runs that pass.

    The four boxes appear behind a switch, which starts on when the sidebar's defaults set a
    filter: four multi-selects cost a fresh browser about half a second to draw (measured with
    ``bench/compare_page.py --browser`` at 1,000 runs), and most visits do not filter.
    """
    _sidebar_defaults(frame)
    if not st.toggle(
        "Filter by model, dataset, rows or method",
        key=FILTERS_ON,
        help="Turning it off shows every run again.",
    ):
        for key in FILTER_KEYS:
            st.session_state.pop(key, None)
        return _coloured_by_dataset(frame)
    cols = st.columns([3, 3, 2, 3])
    models = cols[0].multiselect("Model", sorted(frame["model"].unique()), key="cmp_models")
    datasets = cols[1].multiselect(
        "Dataset",
        sorted(frame["dataset"].unique()),
        format_func=short_source,
        key="cmp_data",
        help="First set to the sidebar's dataset; clear it to see the runs on every dataset.",
    )
    sizes = frame if not datasets else frame[frame["dataset"].isin(datasets)]
    st.session_state["cmp_rows"] = [
        n for n in st.session_state.get("cmp_rows", []) if n in set(sizes["n"])
    ]
    rows = cols[2].multiselect(
        "Rows",
        sorted(int(n) for n in sizes["n"].unique()),
        key="cmp_rows",
        help="Evaluated rows; first set to the sidebar's when runs on them exist.",
    )
    steps = cols[3].multiselect(
        "Method",
        comparison.methods(frame),
        key="cmp_methods",
        help="Runs whose recipe uses any of these steps; 'base model' = uncompressed.",
    )
    shown = comparison.filter_runs(frame, models=models, datasets=datasets, steps=steps)
    if rows:
        shown = shown[shown["n"].isin(rows)]
    if datasets or rows:
        st.caption(
            f"Showing {len(shown)} of {len(frame)} runs (the filters above); clear them to see all."
        )
    return _coloured_by_dataset(shown)


def _coloured_by_dataset(shown: pd.DataFrame) -> pd.DataFrame:
    """``shown``, with the scatter coloured by dataset when it holds several (unless the user
    chose a colour)."""
    if shown["dataset"].nunique() > 1 and st.session_state.get(COLOUR_SET) != "user":
        st.session_state["cmp_colour"] = "dataset_short"  # several datasets: tell them apart
        st.session_state[COLOUR_SET] = "auto"
    return shown


def runs_table(shown: pd.DataFrame, frame: pd.DataFrame) -> list[int]:
    """The runs table, a page of ``TABLE_PAGE_ROWS`` rows at a time (tick rows to pick them),
    searched and sorted here rather than in the browser; and the box of picked runs, which
    offers every run when they fit on a page, else the picked runs and the page's rows.

    Returns:
        The picked run ids (of all runs, filtered or not).
    """
    order = _searched_and_sorted(shown)
    page = _page_of(order)
    page_ids = [int(i) for i in page["id"]]
    # A fresh table whenever its rows change (another page, sort or search): ticks are rows.
    key = f"cmp_table_{st.session_state.get(TABLE_VERSION, 0)}_{_rows_key(page_ids)}"
    view = page[_filled_columns(shown)].rename(columns=TABLE_COLUMNS)
    st.dataframe(
        view,
        hide_index=True,
        key=key,
        on_select=functools.partial(_table_picked, key, page_ids),
        selection_mode="multi-row",
        height=min(38 + 35 * len(view), 420),
        column_config={
            "accuracy": st.column_config.NumberColumn(format="%.3f"),
            "acc. low": st.column_config.NumberColumn(
                format="%.3f", help="95% bootstrap interval of the accuracy: low end"
            ),
            "acc. high": st.column_config.NumberColumn(format="%.3f", help="… and high end"),
            **{  # every other headline metric, as many decimals as it is shown with
                metrics.get(k).short: st.column_config.NumberColumn(
                    format=f"%.{metrics.get(k).digits}f"
                )
                for k in _other_headline()
            },
            "size MB": st.column_config.NumberColumn(format="%.2f"),
            "latency ms": st.column_config.NumberColumn(format="%.2f"),
            "latency ×": st.column_config.NumberColumn(
                format="%.2f", help="Latency over its baseline's, timed together (1 = same kernels)"
            ),
            "agreement": st.column_config.NumberColumn(format="%.3f"),
            "KL": st.column_config.NumberColumn(format="%.4f"),
        },
    )
    labels = dict(zip(frame["id"], frame["label"], strict=True))
    picked = [i for i in st.session_state.get(PICKED, []) if i in labels]
    st.session_state[PICKED] = picked
    few = len(labels) <= TABLE_PAGE_ROWS  # else a box of thousands of options: slow to send
    return st.multiselect(
        "Runs to compare",
        list(labels) if few else list(dict.fromkeys(picked + page_ids)),
        format_func=lambda i: labels[i],
        key=PICKED,
        on_change=_box_edited,
        help="Tick rows of the table, click or lasso points of the scatter, or edit this list"
        + (
            "."
            if few
            else " (it offers the runs of the table's page: search or turn the page for others)."
        ),
    )


def _filled_columns(shown: pd.DataFrame) -> list[str]:
    """The table's columns that hold a value for at least one of the ``shown`` runs (a column
    of blanks, e.g. perplexity when no language model was evaluated, only takes room), in the
    table's order; id, name and recipe always."""
    keep = []
    for column in TABLE_COLUMNS:
        values = shown[column]
        if (
            column in ("id", "name", "method")
            or (values.notna() & (values.astype(str) != "")).any()
        ):
            keep.append(column)
    return keep


def _searched_and_sorted(shown: pd.DataFrame) -> pd.DataFrame:
    """The search box and the sort controls above the table; the runs they leave, in order."""
    titles = dict(TABLE_COLUMNS)
    search_col, sort_col, order_col = st.columns([4, 3, 2], vertical_alignment="bottom")
    text = search_col.text_input(
        "Search runs",
        key=SEARCH,
        placeholder="#id, name, recipe, tag, model or dataset",
        help="Narrows the table and the runs the box below offers (the scatter keeps them all).",
    )
    if st.session_state.get(SORT) not in titles:
        st.session_state[SORT] = "id"
    by = sort_col.selectbox("Sort by", list(titles), format_func=titles.get, key=SORT)
    descending = order_col.toggle("Descending", key=SORT_DESC)
    found = shown
    if text.strip():
        haystack = (
            "#"
            + shown["id"].astype(str)
            + " "
            + shown[["label", "method", "recipe", "tags", "model", "dataset"]]
            .astype(str)
            .agg(" ".join, axis=1)
        )
        found = shown[haystack.str.contains(text.strip(), case=False, regex=False)]
        st.caption(f"{len(found)} of {len(shown)} runs match the search.")
    return found.sort_values(by, ascending=not descending, na_position="last", kind="stable")


def _page_of(order: pd.DataFrame) -> pd.DataFrame:
    """The page control (when the runs fill more than one page); the rows of the page shown."""
    pages = max(1, -(-len(order) // TABLE_PAGE_ROWS))
    if pages == 1:
        return order
    if not 1 <= st.session_state.get(PAGE, 1) <= pages:
        st.session_state[PAGE] = min(max(1, st.session_state.get(PAGE, 1)), pages)
    left, right = st.columns([2, 7], vertical_alignment="bottom")
    page = left.number_input(
        f"Page (of {pages})",
        min_value=1,
        max_value=pages,
        step=1,
        key=PAGE,
        help=f"The table shows {TABLE_PAGE_ROWS} runs at a time; sort or search to bring runs "
        "to the first page.",
    )
    start = (int(page) - 1) * TABLE_PAGE_ROWS
    rows = order.iloc[start : start + TABLE_PAGE_ROWS]
    right.caption(f"Runs {start + 1:,}–{start + len(rows):,} of {len(order):,}")
    return rows


def _rows_key(ids: list[int]) -> str:
    return f"{zlib.crc32(np.asarray(ids, dtype=np.int64).tobytes()):08x}"


def manage(store: ExperimentStore, picked: list[Run]) -> None:
    """Rename, tag or delete the picked runs."""
    what = f"{len(picked)} picked runs" if len(picked) > 1 else "picked run"
    with st.expander(f"Rename, tag or delete the {what}"):
        left, middle, right = st.columns(3)
        if len(picked) == 1:
            name = left.text_input("Name", value=picked[0].name, key="cmp_name")
            if left.button("Rename"):
                store.rename(picked[0].id, name)
                st.rerun()
        else:
            left.caption("Pick one run to rename it.")
        tags = middle.text_input(
            "Tags (comma-separated)",
            value=", ".join(dict.fromkeys(t for r in picked for t in r.tags)),
            key="cmp_tags",
        )
        if middle.button("Set tags"):
            for run in picked:
                store.set_tags(run.id, tags.split(","))
            st.rerun()
        sure = right.checkbox("Yes, delete them", key="cmp_sure")
        right.button(
            "Delete",
            disabled=not sure,
            type="primary",
            on_click=_delete,
            args=(store, [r.id for r in picked]),
        )


def _delete(store: ExperimentStore, ids: list[int]) -> None:
    """Delete runs (a callback: it may empty the picked list before the box is drawn)."""
    for run_id in ids:
        store.delete(run_id)
    _pick([])
    st.session_state["cmp_sure"] = False


def scatter(shown: pd.DataFrame, picked: list[int]) -> None:
    """Any metric against any other, the Pareto front; clicking or lassoing points picks runs."""
    axes = list(comparison.AXES)
    left, middle, right = st.columns(3)
    x = left.selectbox(
        "x", axes, axes.index(URL_DEFAULTS["x"]), format_func=comparison.AXES.get, key="cmp_x"
    )
    y = middle.selectbox(
        "y", axes, axes.index(_default_y(shown, axes)), format_func=comparison.AXES.get,
        key="cmp_y",
    )  # fmt: skip
    colour = right.selectbox(
        "Colour by",
        ["model_short", "dataset_short", "method"],
        format_func=lambda c: c.removesuffix("_short"),
        key="cmp_colour",
        on_change=lambda: st.session_state.__setitem__(COLOUR_SET, "user"),
    )
    if len(shown) > SCATTER_DRAWN_RUNS and not st.toggle(
        f"Draw the scatter of all {len(shown):,} runs",
        key=SCATTER_ON,
        help=f"Off at first for more than {SCATTER_DRAWN_RUNS} runs, so that the page opens "
        "quickly; narrow the runs with the filters above, or switch it on.",
    ):
        return
    front = comparable_front(shown, x, y)
    fig = figures.runs_scatter_figure(shown, x, y, front=front, selected=picked, colour=colour)
    st.plotly_chart(
        fig,
        key="cmp_scatter",
        on_select=lambda: _points_picked("cmp_scatter"),
        selection_mode=("points", "box", "lasso"),
    )
    count, groups = int(front.sum()), shown["rows_fingerprint"].nunique()
    each = (
        f" on the same rows (one front for each of the {groups} sets of rows shown: runs on "
        "different rows are not comparable)"
        if groups > 1
        else ""
    )
    st.caption(
        f"Pareto front (dotted): the {count} run{'s' if count != 1 else ''} no other run"
        f"{each} beats on both axes. Hover a point for its recipe; click or lasso points to "
        "compare them."
    )


def _default_y(shown: pd.DataFrame, axes: list[str]) -> str:
    """Accuracy, unless none of the shown runs has it (language models scored by perplexity
    only): then the first headline metric some run has, so the first scatter is not empty."""
    for key in [URL_DEFAULTS["y"], *_other_headline()]:
        if key in axes and key in shown and shown[key].notna().any():
            return key
    return URL_DEFAULTS["y"]


def comparable_front(shown: pd.DataFrame, x: str, y: str) -> np.ndarray:
    """The Pareto front of each set of comparable runs (the same rows): True where no run on
    the same rows beats a run on both axes."""
    front = np.zeros(len(shown), dtype=bool)
    for idx in shown.groupby("rows_fingerprint", sort=False).indices.values():
        front[idx] = comparison.pareto(shown.iloc[idx], x, y)
    return front


def lineage_box(shown: pd.DataFrame, runs: list[Run], picked: list[int]) -> None:
    """The lineage map in a box that starts open for a few runs; for many it is built only
    once opened (a map of a thousand runs doubles the page's time to draw in a browser)."""
    box = st.expander(
        "Lineage: how each model was derived",
        expanded=len(shown) <= LINEAGE_OPEN_RUNS,
        key="cmp_lineage_open",
        on_change="rerun",
        icon=":material/account_tree:",
    )
    if box.open:
        with box:
            lineage(shown, runs, picked)


def lineage(shown: pd.DataFrame, runs: list[Run], picked: list[int]) -> None:
    """The model map: base models → variants, by step; colour = a chosen metric."""
    axes = list(comparison.AXES)
    metric = st.selectbox(
        "Node colour", axes, 0, format_func=comparison.AXES.get, key="cmp_lineage"
    )
    keep = set(shown["id"])
    layout = comparison.lineage_layout([r for r in runs if r.id in keep])
    fig = figures.lineage_figure(layout, shown, metric, selected=picked)
    st.plotly_chart(
        fig,
        key="cmp_lineage_chart",
        on_select=lambda: _points_picked("cmp_lineage_chart"),
        selection_mode=("points", "box", "lasso"),
    )


def _styled(cells: pd.DataFrame, marks: pd.DataFrame):
    return cells.style.apply(lambda col: [VERDICT_STYLE.get(v, "") for v in marks[col.name]])


def picked_views(store: ExperimentStore, runs: list[Run]) -> None:
    """Everything about the picked runs, against a reference run."""
    groups = {comparison.rows_key(r) for r in runs}
    if len(groups) > 1:
        st.warning(
            f"The picked runs were evaluated on {len(groups)} different sets of rows or labels, "
            "so their metrics are not comparable: differences, significance, curves and "
            "behaviour are shown only for runs on the reference run's rows and labels."
        )
    ids = [r.id for r in runs]
    if st.session_state.get("cmp_ref") not in ids:
        st.session_state["cmp_ref"] = next((r.id for r in runs if r.kind == "base"), ids[0])
    labels = {r.id: r.label for r in runs}
    reference = st.selectbox("Reference run", ids, format_func=labels.get, key="cmp_ref")
    ref_run = next(r for r in runs if r.id == reference)
    same = [r for r in runs if comparison.rows_key(r) == comparison.rows_key(ref_run)]
    results = {r.id: loaders.stored_result(store, r) for r in same}
    same = [r for r in same if results[r.id] is not None]
    if same:  # runs without per-row predictions (an LM's perplexity): their scores are above
        cells, marks = comparison.side_by_side(same, results, reference)
        st.subheader("Side by side")
        st.dataframe(_styled(cells, marks), width="stretch")
        st.caption(
            "Each score with its 95% bootstrap interval; Δ = difference from the reference on "
            "the same rows, green or red only when its 95% paired interval excludes 0 (grey = "
            "noise). Accuracy differences also get the exact McNemar test on the paired "
            "predictions."
        )
    else:
        st.caption(
            f"The reference run, {plain(ref_run.label)}, kept no per-row predictions (a "
            "language model's perplexity): its scores are in the table above. Pick a run "
            "with predictions as the reference to see runs side by side, their curves and "
            "behaviour."
        )
    differs = comparison.what_differs(runs)
    fields = ", ".join(plain(f) for f in differs.index) if len(differs) else "nothing"
    st.markdown("**What differs**: " + fields)
    if len(differs):
        st.dataframe(differs, width="stretch")
    # Curves and behaviour need per-row predictions; layers and export apply to every run.
    names = (["ROC and confusion", "Behaviour"] if same else []) + ["Layers", "Export"]
    tabs = dict(zip(names, st.tabs(names), strict=True))
    if same:
        picked_results = {r.label: results[r.id] for r in same}
        with tabs["ROC and confusion"]:
            st.plotly_chart(figures.roc_figure(picked_results), key="cmp_roc")
            st.plotly_chart(figures.confusion_row_figure(picked_results), key="cmp_confusion")
        with tabs["Behaviour"]:
            behaviour(store, same, results)
    with tabs["Layers"]:
        layers(store, runs)
    with tabs["Export"]:
        export(store, runs)


def behaviour(store: ExperimentStore, runs: list[Run], results: dict) -> None:
    """The rows where the picked models disagree, grouped by true label; per-class agreement."""
    if len(runs) < 2:
        st.caption("Pick two or more runs on the same rows to see where they disagree.")
        return
    rows = store.row_set(runs[0].rows_fingerprint)
    table, count = comparison.disagreements(runs, results, rows)
    n = len(results[runs[0].id].y_true)
    st.markdown(f"**{count}** of {n} rows get different predictions from the picked models.")
    if rows is None:
        st.caption("The texts of these rows were not recorded.")
    probability = {
        c: st.column_config.ProgressColumn(c, min_value=0, max_value=1, format="percent")
        for c in table.columns
        if c.startswith("P(true)")
    }
    st.dataframe(table, hide_index=True, key="cmp_disagree", column_config=probability)
    if count > len(table):
        st.caption(f"The first {len(table)} are listed.")
    st.markdown("**Per class**")
    st.dataframe(comparison.class_agreement(runs, results).round(3), hide_index=True)


def layers(store: ExperimentStore, runs: list[Run]) -> None:
    """Per-layer sparsity and error side by side; zeros two pruned runs share."""
    frame = comparison.layer_frame(runs)
    if frame.empty:
        st.caption("None of the picked runs compressed a layer.")
        return
    st.plotly_chart(figures.layer_compare_figure(frame), key="cmp_layers")
    pruned = [r for r in runs if "prune" in r.steps]
    masks = {r.id: store.masks(r.id) for r in pruned}
    pruned = [r for r in pruned if masks[r.id]]
    if len(pruned) < 2:
        st.caption(
            "Pick two runs that pruned (evaluated on the Compress page or the command line: "
            "they keep their masks) to see which weights both removed."
        )
        return
    labels = {r.id: r.label for r in pruned}
    left, right = st.columns(2)
    a = left.selectbox("Masks of", list(labels), 0, format_func=labels.get, key="cmp_mask_a")
    b = right.selectbox("… and of", list(labels), 1, format_func=labels.get, key="cmp_mask_b")
    table = comparison.shared_zeros(masks[a], masks[b])
    st.plotly_chart(figures.shared_zeros_figure(table, labels[a], labels[b]), key="cmp_zeros")
    st.dataframe(table, hide_index=True)


def export(store: ExperimentStore, runs: list[Run]) -> None:
    """Download a run as JSON and its predictions as CSV; load its recipe into the sliders."""
    from llmopt.recording import predictions_frame

    labels = {r.id: r.label for r in runs}
    chosen = st.selectbox("Run", list(labels), format_func=labels.get, key="cmp_export")
    run = store.get(chosen)
    cols = st.columns(3)
    cols[0].download_button(
        "Run as JSON",
        json.dumps(run.to_json(full=True), indent=2),
        file_name=f"run-{run.id}.json",
        mime="application/json",
        icon=":material/download:",
        help="The whole record; `llmopt evaluate --recipe` re-runs it.",
    )
    predictions = predictions_frame(store, run)
    if predictions is not None:
        cols[1].download_button(
            "Predictions as CSV",
            predictions.to_csv(index=False),
            file_name=f"run-{run.id}-predictions.csv",
            mime="text/csv",
            icon=":material/download:",
        )
    cols[2].button(
        "Load its recipe into the Compress page",
        on_click=_load_recipe,
        args=(run.config,),
        disabled=not run.config,
        help="Set the Compress page's controls to this run's settings and open the page.",
    )
    st.code(
        f"llmopt runs export {run.id} -o run-{run.id}.json\n"
        f"llmopt evaluate --recipe run-{run.id}.json",
        language="bash",
    )


def control_values(config: dict) -> dict:
    """The Compress page's control values that make ``config`` (controls it has only)."""
    return controls.values_from_config(config)


def _load_recipe(config: dict) -> None:
    for key, value in control_values(config).items():
        st.session_state[key] = value
    shown = controls.config_from_state().to_dict()
    missing = sorted(k for k, v in config.items() if shown.get(k) != v)
    if missing:
        st.session_state["cmp_recipe_note"] = (
            "The Compress page's controls cannot set " + ", ".join(missing) + " of this recipe: "
            "the command line runs it exactly (see the Export tab of the Compare page)."
        )
    st.session_state[GOTO_COMPRESS] = True


def go_to_compress_if_asked() -> None:
    """After 'Load its recipe…': open the Compress page (a callback cannot switch pages)."""
    if st.session_state.pop(GOTO_COMPRESS, False):
        st.switch_page("pages/compress.py")
