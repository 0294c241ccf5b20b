"""A reload after an upload: the address cannot carry the file, so the sidebar asks for it
again instead of silently showing another dataset; and no widget warns in the server log."""

from __future__ import annotations

import logging

import pytest
from app_settings import APP, TIMEOUT

WARNING = "set via the Session State API"
CSV = "".join(
    f"{i},{['great tasty snack', 'awful stale bread'][i % 2]} {i},{['good', 'bad'][i % 2]}\n"
    for i in range(40)
)


@pytest.fixture()
def server_log(caplog, monkeypatch):
    """Streamlit's log records; its warning about a widget given a value twice is shown once
    per process, so it is re-armed here."""
    from streamlit.elements.lib import policies

    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    caplog.set_level(logging.WARNING)
    return caplog


def _upload(at):
    at.file_uploader[0].set_value(("mine.csv", f"id,review,score\n{CSV}".encode(), "text/csv"))
    return at.run()


def test_a_reload_after_an_upload_asks_for_the_file_again(tiny_env, server_log):
    """Before, the address of an uploaded CSV had no dataset at all, so a reload opened the
    default dataset without a word; the page's numbers were then of other rows."""
    from streamlit.testing.v1 import AppTest

    at = _upload(AppTest.from_file(APP, default_timeout=TIMEOUT).run())
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    assert at.query_params["data"] == "upload"  # the mark of an upload, not a file name
    link = dict(at.query_params.items())

    reloaded = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in link.items():
        reloaded.query_params[key] = value
    reloaded.run()
    assert not reloaded.exception, reloaded.exception
    assert reloaded.sidebar.radio(key="src_data_kind").value == "CSV file"
    notices = [w.value for w in reloaded.sidebar.warning]
    assert any("not part of a link" in n and "upload the file again" in n for n in notices)
    assert reloaded.error and "upload a CSV" in reloaded.error[0].value  # no other rows shown
    assert reloaded.session_state["selection"].csv is None

    _upload(reloaded)  # uploaded again: the notice goes, the link's columns are used
    assert not reloaded.exception and not reloaded.error
    assert not any("not part of a link" in w.value for w in reloaded.sidebar.warning)
    selection = reloaded.session_state["selection"]
    assert (selection.data_ref, selection.text_column) == ("mine.csv", "review")
    assert not [r for r in server_log.records if WARNING in r.getMessage()]


def test_no_widget_is_given_a_value_twice_when_a_link_sets_it(tiny_env, server_log):
    """A link's (a reload's) rows, dataset source and model went into the widgets' state
    while the widgets were also given a first value: Streamlit logged 'The widget with key
    "src_rows" was created with a default value but also had its value set via the Session
    State API' (first seen on a reload after an upload)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["rows"] = "7"
    at.query_params["data"] = "upload"
    at.query_params["model"] = str(tiny_env["model"])
    at.run()
    _upload(at)
    assert not at.exception, at.exception
    assert at.session_state["selection"].rows == 7
    assert not [r.getMessage() for r in server_log.records if WARNING in r.getMessage()]
