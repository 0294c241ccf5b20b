"""Dashboard UI helpers every page uses: a progress bar, the error display (one line in the
dashboard's words, never a traceback), and notes carried over from another page.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import streamlit as st

from dashboard.text import plain
from llmopt.errors import LlmoptError

LOG = logging.getLogger(__name__)
ERROR_CHARS = 200  # of an unexpected error's message shown on the page


@contextlib.contextmanager
def progress(intro: str = "") -> Iterator[Callable[[float, str], None]]:
    """A ``progress(fraction, message)`` callback drawing one bar, removed when done."""
    slot = st.empty()

    def report(fraction: float, message: str) -> None:
        text = f"{message} — {intro}" if intro else message
        slot.progress(min(max(float(fraction), 0.0), 1.0), text=text)

    try:
        yield report
    finally:
        slot.empty()


def _show_error(exc: Exception) -> None:
    """One line in the dashboard's words; never a traceback (the server log keeps it)."""
    if isinstance(exc, LlmoptError):  # a user mistake: its message says the fix
        st.error(plain(exc.render("app")))
        return
    LOG.error("dashboard error", exc_info=exc)  # not a user mistake: details for the admin
    first = (str(exc).strip().splitlines() or [""])[0]
    if len(first) > ERROR_CHARS:
        first = first[: ERROR_CHARS - 1] + "…"
    what = plain(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)
    st.error(f"Something went wrong ({what}). Try other settings; the server's log has details.")


@contextlib.contextmanager
def inline_errors(*, stop: bool = False) -> Iterator[None]:
    """Show an error with st.error (a user mistake's message says the fix) and carry on with
    the rest of the page, or end this run with ``stop``."""
    try:
        yield
    except Exception as exc:
        _show_error(exc)
        if stop:
            st.stop()


def guard():
    """Show an error (a user mistake such as LlmoptError, or any other) and end this run."""
    return inline_errors(stop=True)


def show_recipe_note() -> None:
    """Say what of a recipe loaded from the Compare page the controls could not take."""
    note = st.session_state.pop("cmp_recipe_note", None)
    if note:
        st.warning(plain(note))
