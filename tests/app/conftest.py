"""Fixtures for the dashboard tests: point the app at a tiny model and CSV, fresh caches."""

from __future__ import annotations

import pytest
from app_settings import APP, TIMEOUT, TINY_ROWS  # noqa: F401 - re-exported for fixtures


@pytest.fixture()
def tiny_env(tiny_dirs, tiny_csv, monkeypatch, tmp_path_factory):
    """The sidebar starts on the tiny BERT classifier and the tiny CSV; caches start empty.

    The server may read the test run's temporary folders (where the tiny model and CSV are),
    and nothing else: ``$LLMOPT_ROOTS``.
    """
    import streamlit as st

    monkeypatch.setenv("LLMOPT_ROOTS", str(tmp_path_factory.getbasetemp()))
    monkeypatch.delenv("LLMOPT_MAX_FILE_MB", raising=False)
    monkeypatch.setenv("LLMOPT_DEFAULT_MODEL", str(tiny_dirs["bert"]))
    monkeypatch.setenv("LLMOPT_DEFAULT_DATASET", str(tiny_csv))
    monkeypatch.setenv("LLMOPT_DEFAULT_ROWS", str(TINY_ROWS))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield {"model": tiny_dirs["bert"], "csv": tiny_csv}
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture(autouse=True)
def _navigation_like_the_server(monkeypatch):
    """Run app.py on every rerun, as the server does once app.py has run.

    A ``pages/`` folder starts Streamlit in its old folder-based mode until ``st.navigation``
    switches it off for the process (``ui.load`` makes sure that happens). AppTest turns it back
    on before every run, which would rerun only the page file, skip app.py and its sidebar, and
    drop button clicks; keep it off as it stays on the server.
    """
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def init_after_navigation(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init_after_navigation)


@pytest.fixture(scope="session")
def sensitive_bert(tmp_path_factory):
    """A tiny BERT whose predictions compression flips (see ``app_data.make_sensitive_bert``)."""
    from app_data import make_sensitive_bert

    return make_sensitive_bert(tmp_path_factory.mktemp("sensitive") / "bert")


@pytest.fixture()
def app(tiny_env):
    """An AppTest of the dashboard on the tiny model, not yet run."""
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=TIMEOUT)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory):
    """A tiny random GPT-2 causal LM, saved once per session (read only by the tests)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
    from lmtiny import make_tiny_lm

    return make_tiny_lm("gpt2", tmp_path_factory.mktemp("tiny_lm") / "gpt2")


@pytest.fixture()
def lm_app(tiny_env, tiny_lm_dir, monkeypatch):
    """An AppTest whose sidebar starts on the tiny GPT-2 causal LM and the tiny CSV."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LLMOPT_DEFAULT_MODEL", str(tiny_lm_dir))
    return AppTest.from_file(APP, default_timeout=TIMEOUT)
