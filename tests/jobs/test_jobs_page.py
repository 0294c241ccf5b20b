"""The Sweep page submits a job as a detached process and follows it from the store."""

from __future__ import annotations

import os
import time

import pytest
from jobhelpers import start_slow_cli, sweep_argv

from llmopt.experiments import ExperimentStore
from llmopt.jobs.store import JobStore

APP = "../../app.py"  # AppTest resolves it relative to this folder


@pytest.fixture()
def page_env(tiny_dirs, tiny_csv, store_path, monkeypatch, tmp_path_factory):
    """The sidebar starts on the tiny BERT and CSV (as tests/app does); Streamlit keeps the
    navigation mode it has on a server."""
    import streamlit as st
    from streamlit.runtime.pages_manager import PagesManager

    monkeypatch.setenv("LLMOPT_ROOTS", str(tmp_path_factory.getbasetemp()))
    monkeypatch.setenv("LLMOPT_DEFAULT_MODEL", str(tiny_dirs["bert"]))
    monkeypatch.setenv("LLMOPT_DEFAULT_DATASET", str(tiny_csv))
    monkeypatch.setenv("LLMOPT_DEFAULT_ROWS", "10")
    init = PagesManager.__init__

    def init_after_navigation(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init_after_navigation)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


def _jobs(store_path):
    return JobStore(ExperimentStore(store_path)).list() if store_path.exists() else []


def _wait(check, timeout=240):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if found := check():
            return found
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_the_page_submits_a_detached_job_and_shows_its_progress(page_env, store_path):
    """The job runs in its own session (closing the tab or stopping the server does not stop
    it); a fresh page (a new session) shows it done from the store."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/sweep.py").run()
    at.multiselect("s_values_sparsity").set_value([0.0, 0.5])
    at.multiselect("s_methods_sparsity").set_value(["magnitude"]).run()
    [b for b in at.button if b.label == "Run as a job"][0].click().run()
    assert not at.exception, at.exception
    job = _wait(lambda: (jobs := _jobs(store_path)) and jobs[0].status == "done" and jobs[0])
    assert job.spec["values"] == [0.0, 0.5] and job.done == job.total == 2
    fresh = AppTest.from_file(APP, default_timeout=120).run()
    fresh.switch_page("pages/sweep.py").run()
    texts = " ".join(str(p.proto) for p in fresh.get("progress"))
    assert f"#{job.id} sparsity" in texts and "done, 2/2" in texts, texts


def test_cancel_from_the_page_stops_a_detached_job(tiny_bert_dir, tiny_csv, store_path):
    from dashboard import jobs as page_jobs

    driver = start_slow_cli(sweep_argv(tiny_bert_dir, tiny_csv, "0.1,0.2,0.3,0.4,0.5,0.6"), 1.0)
    try:
        job = _wait(lambda: (jobs := _jobs(store_path)) and jobs[0].done >= 1 and jobs[0])
        page_jobs.cancel(job.id)
        driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == 3
    assert _jobs(store_path)[0].status == "cancelled"


def test_the_pages_cancel_button_stops_a_running_job(page_env, tiny_bert_dir, tiny_csv, store_path):
    """The Cancel button of the jobs panel (not only the function behind it) stops a job
    that another process runs: it exits with status 3 and the job reads cancelled."""
    from streamlit.testing.v1 import AppTest

    driver = start_slow_cli(sweep_argv(tiny_bert_dir, tiny_csv, "0.1,0.2,0.3,0.4,0.5,0.6"), 1.0)
    try:
        job = _wait(lambda: (jobs := _jobs(store_path)) and jobs[0].done >= 1 and jobs[0])
        at = AppTest.from_file(APP, default_timeout=120).run()
        at.switch_page("pages/sweep.py").run()
        assert not at.exception, at.exception
        at.button(f"cancel{job.id}").click().run()
        assert not at.exception, at.exception
        driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == 3
    assert _jobs(store_path)[0].status == "cancelled"


def test_a_submitted_job_runs_in_its_own_session(tmp_path):
    from dashboard import jobs as page_jobs

    marker = tmp_path / "sid"
    code = f"import os; open({str(marker)!r}, 'w').write(str(os.getsid(0)))"
    pid = page_jobs.submit([os.sys.executable, "-c", code])
    _wait(lambda: marker.exists() and marker.read_text(), timeout=60)
    assert int(marker.read_text()) == pid != os.getsid(0)  # a session leader of its own
