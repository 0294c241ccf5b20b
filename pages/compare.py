"""Compare: every recorded run in one table, scatter and lineage map; the picked runs side by
side with honest statistics, their curves, behaviour and layers."""

import streamlit as st

from dashboard import compare, layout, loaders, ui
from dashboard.legacy import run_through_app

st.title("Compare runs")
layout.readable_columns()  # 900 px with the sidebar open to wide screens
run_through_app()
compare.go_to_compress_if_asked()
with ui.guard():
    store = loaders.experiment_store()
    runs, frame = compare.stored_runs(store)  # read again only once the store changed
st.caption(
    f"{len(runs)} runs recorded in **{store.path.name}**: every Evaluate of the Compress page, "
    "every Sweep point and every command-line evaluation."
)
if not runs:
    st.info("Nothing recorded yet: press **Evaluate** on the Compress & Evaluate page.")
    st.stop()
compare.restore(list(frame["id"]))
shown = compare.filters(frame)
picked_ids = compare.runs_table(shown, frame)
picked = [r for r in runs if r.id in set(picked_ids)]
if picked:
    compare.manage(store, picked)
st.subheader("Scatter")
compare.scatter(shown, picked_ids)
compare.lineage_box(shown, runs, picked_ids)
compare.mirror()
if not picked:
    st.info("Pick runs (tick rows, click points, or use the box above) to compare them.")
    st.stop()
st.header(f"{len(picked)} picked run{'s' if len(picked) != 1 else ''}")
with ui.guard():
    compare.picked_views(store, store.runs(ids=picked_ids, full=True))
