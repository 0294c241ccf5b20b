"""The one workaround for Streamlit's folder-based page mode (see ``run_through_app``)."""

from __future__ import annotations

import streamlit as st


def run_through_app() -> None:
    """Make sure app.py (page setup, navigation, sidebar) ran for this run, not a page file on
    its own. The one place that works around Streamlit's folder-based page mode.

    A ``pages/`` folder starts Streamlit in that old mode, which runs a page file directly when
    a fresh server is opened on the page's address; ``st.navigation`` in app.py switches the
    mode off for good. The mode is one flag for the whole process
    (``PagesManager.uses_pages_directory``), but sessions run side by side: when two visitors
    open a page of a fresh server at once, the first one to switch it off is not the only one
    that started in it, and the other finds the flag off while running its page file without
    app.py's sidebar. So decide by this session's own state: no ``selection`` yet means app.py
    has not run in this session. Switch the mode off and run again, through app.py.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory or "selection" not in st.session_state:
        PagesManager.uses_pages_directory = False
        st.rerun()
