"""Page layout that holds from a 900 px window with the sidebar open to a wide screen.

Streamlit's columns keep their share of the width however narrow the page gets (below 640 px
they stack): at 900 px with the sidebar open, four columns of controls split their headings
inside words and cut select boxes short, and two charts side by side overlap their text. With
``readable_columns()`` a column never gets narrower than its content needs; columns that do not
fit wrap onto the next line instead.
"""

from __future__ import annotations

import streamlit as st

MIN_COLUMN_REM = 8  # any column: a metric card with its value
MIN_HEADED_REM = 12  # a column under a heading (a group of controls): "Quantization" whole
MIN_CHART_REM = 22  # a column holding a chart: its labels must not overlap
MIN_TABLE_REM = 34  # a column holding a table: a metrics table with its intervals, unclipped

_CSS = f"""<style>
[data-testid="stMain"] [data-testid="stHorizontalBlock"] {{ flex-wrap: wrap; row-gap: 1rem; }}
[data-testid="stMain"] [data-testid="stColumn"] {{ min-width: {MIN_COLUMN_REM}rem; }}
[data-testid="stMain"] [data-testid="stColumn"]:has(h3) {{ min-width: {MIN_HEADED_REM}rem; }}
[data-testid="stMain"] [data-testid="stColumn"]:has([data-testid="stPlotlyChart"]) {{
    min-width: {MIN_CHART_REM}rem;
}}
[data-testid="stMain"] [data-testid="stColumn"]:has([data-testid="stDataFrame"]) {{
    min-width: {MIN_TABLE_REM}rem;
}}
[data-testid="stMain"] [data-testid="stMetricDelta"] div {{ white-space: normal; }}
</style>"""


def readable_columns() -> None:
    """Let columns wrap rather than shrink below what their content needs (see the module)."""
    st.html(_CSS)
