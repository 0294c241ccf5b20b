"""In a real Chromium: a link whose address names a saved causal-LM folder opens the Compress
page on that LM, Evaluate scores its perplexity, and the cards show what ``llmopt.lm`` gives."""

from __future__ import annotations

import math
import sys
import urllib.parse
from pathlib import Path

import pytest
from test_browser import WAIT_MS, browser, chromium, server  # noqa: F401 - fixtures

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
from lmtiny import make_tiny_lm  # noqa: E402

pytestmark = pytest.mark.browser
ROWS = 10  # the server fixture's evaluation rows


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    """A tiny random GPT-2 saved as a checkpoint folder (under the roots the server may read)."""
    return make_tiny_lm("gpt2", tmp_path_factory.mktemp("browser_lm") / "gpt2")


def _card(page, label: str) -> str:
    """The value shown on the metric card whose label is ``label``."""
    card = page.locator('[data-testid="stMetric"]').filter(has_text=label)
    return card.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_a_linked_lm_folder_is_evaluated_on_the_compress_page(
    browser,  # noqa: F811
    server,  # noqa: F811
    tiny_lm_dir,
    tiny_csv,
):
    from playwright.sync_api import expect

    import llmopt
    from llmopt.lm import load_causal_lm, perplexity

    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    link = urllib.parse.urlencode({"model": str(tiny_lm_dir)})
    page.goto(f"{server}/compress?{link}")
    # WAIT_MS: the first load of the LM and its scoring, on a busy 2-core machine
    expect(page.get_by_text("Causal LM", exact=False).first).to_be_visible(timeout=WAIT_MS)
    page.get_by_role("button", name="Evaluate").click()
    label = "Perplexity · baseline"
    expect(page.locator('[data-testid="stMetric"]').filter(has_text=label)).to_have_count(
        1, timeout=WAIT_MS
    )
    shown = float(_card(page, label).replace(",", ""))
    bpb = float(_card(page, "Bits per byte · baseline").replace(",", ""))

    lm = load_causal_lm(str(tiny_lm_dir))
    data = llmopt.load_dataset(str(tiny_csv), "test", limit=ROWS)
    expected = perplexity(lm, data.texts)  # the page's defaults: paper protocol, default window
    assert math.isclose(shown, expected.perplexity, rel_tol=1e-3), (shown, expected.perplexity)
    assert math.isclose(bpb, expected.bits_per_byte, rel_tol=1e-3)
    expect(page.get_by_text("Recorded as run", exact=False)).to_be_visible(timeout=WAIT_MS)
    assert not page.locator('[data-testid="stException"]').count()
