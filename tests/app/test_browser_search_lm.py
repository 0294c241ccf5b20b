"""In a real Chromium: the Auto page's Search section on a tiny causal LM runs the search with a
perplexity tolerance and window, and shows the pick's test perplexity as ``llmopt.search`` gives
it, beside the Pareto plot of the candidates."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from test_browser import (  # noqa: F401 - fixtures
    CHART,
    WAIT_MS,
    _env,
    _full_page_screenshot,
    _serve,
    chromium,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
from lmtiny import make_tiny_lm  # noqa: E402

pytestmark = pytest.mark.browser
ROWS = 10  # the server's test rows
SEQ_LEN = 16  # the window typed on the page (the tiny GPT-2 allows 64)
NATS = 0.01  # the page's default absolute tolerance


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    return make_tiny_lm("gpt2", tmp_path_factory.mktemp("browser_search_lm") / "gpt2")


@pytest.fixture()
def lm_server(tiny_lm_dir, tiny_csv, tmp_path, tmp_path_factory):
    """``streamlit run app.py`` whose sidebar starts on the tiny causal LM and the tiny CSV."""
    env = _env(tiny_lm_dir, tiny_csv, tmp_path, tmp_path_factory, rows=ROWS)
    with _serve(env, tmp_path / "server.log") as url:
        yield url


def test_lm_search_on_the_auto_page_in_a_real_browser(
    lm_server,
    chromium,  # noqa: F811
    tiny_lm_dir,
    tiny_csv,
    tmp_path,
):
    from playwright.sync_api import expect

    import llmopt
    from llmopt.lm import load_causal_lm
    from llmopt.search import default_validation_rows, search

    page = chromium.new_page(viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{lm_server}/auto")
    # WAIT_MS: the first load of the LM on a busy 2-core machine
    expect(page.get_by_text("Perplexity-aware search", exact=False)).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text("classifiers only", exact=False)).to_have_count(0)
    page.get_by_text("mean NLL per token rises by at most this many nats").click()
    window = page.get_by_role("spinbutton", name="Window (tokens)")
    window.fill(str(SEQ_LEN))
    window.press("Enter")
    expect(window).to_have_value(str(SEQ_LEN), timeout=WAIT_MS)
    page.wait_for_timeout(1000)  # the rerun the new window starts
    page.get_by_role("button", name="Run search").click()
    pick = page.get_by_text("Pick:", exact=False)
    expect(pick).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(CHART).filter(has_text="Search:")).to_have_count(1, timeout=WAIT_MS)
    caption = page.get_by_text("test texts (16-token windows): perplexity", exact=False)
    shown = caption.inner_text()
    train = llmopt.load_dataset(str(tiny_csv), "train")
    test = llmopt.load_dataset(str(tiny_csv), "test", limit=ROWS)
    rows = default_validation_rows(len(train))  # the page's default
    lm = load_causal_lm(str(tiny_lm_dir))
    direct = search(lm, train, test, tolerance=NATS, methods=["magnitude", "rtn"],
                    validation_rows=rows, seq_len=SEQ_LEN)  # fmt: skip
    b, o = direct.test_baseline["perplexity"], direct.test_compressed["perplexity"]
    assert f"perplexity {b:.4f} → {o:.4f}" in shown, shown
    assert not page.locator('[data-testid="stException"]').count()
    shot = Path(os.environ.get("LLMOPT_SCREENSHOT_DIR") or tmp_path) / "auto_search_lm.png"
    _full_page_screenshot(page, shot)
