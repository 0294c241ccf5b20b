"""In a real Chromium: the Attention page's token labels do not run into each other on a long
input (they did: every key token was labelled in a third of the width)."""

from __future__ import annotations

import math

import pytest
from test_browser import (  # noqa: F401 - fixtures
    CHART,
    WAIT_MS,
    _full_page_screenshot,
    browser,
    chromium,
    server,
)

pytestmark = pytest.mark.browser

WORDS = "delicious chocolate cookie flavor product excellent terrible"
LONG_TEXT = " ".join([WORDS] * 6)  # 42 words: more tokens than the axes can label in full


def _overlaps(labels: list[dict]) -> list[tuple[str, str]]:
    """Neighbouring tick labels of one axis that run into each other: level labels whose boxes
    intersect, or turned labels (key tokens) closer than a line of their text, measured
    across the slant."""
    found = []
    for axis in {b["axis"] for b in labels}:
        mine = sorted((b for b in labels if b["axis"] == axis), key=lambda b: (b["cx"], b["cy"]))
        turned = axis.endswith(":x")
        if not turned:
            mine.sort(key=lambda b: b["cy"])
        for a, b in zip(mine, mine[1:], strict=False):
            if turned:
                apart = (b["cx"] - a["cx"]) * math.sin(math.radians(60))
                close = apart < 0.9 * a["font"]
            else:
                close = b["cy"] - a["cy"] < 0.9 * a["font"]
            if close:
                found.append((a["text"], b["text"]))
    return found


def test_key_token_labels_do_not_overlap_on_a_long_text(browser, server, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1000, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{server}/attention")
    page.locator(CHART).first.wait_for()
    page.get_by_role("button", name="Compress with those settings").click()
    expect(page.get_by_text("Attention drift", exact=True)).to_be_visible(timeout=WAIT_MS)
    box = page.get_by_role("textbox", name="Text", exact=True)
    box.fill(LONG_TEXT)
    box.press("Control+Enter")
    idle = page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]')
    expect(idle).to_have_count(1)
    page.wait_for_timeout(1000)
    expect(idle).to_have_count(1)
    page.wait_for_timeout(1500)
    labels = page.evaluate(
        """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap((plot, p) =>
            [...plot.querySelectorAll('g.xtick text, g.ytick text')].map(t => {
                const r = t.getBoundingClientRect();
                const sub = t.closest('g.subplot');
                const axis = [p, sub ? sub.getAttribute('class') : '',
                              t.closest('g.xtick') ? 'x' : 'y'].join(':');
                return {axis, cx: r.x + r.width / 2, cy: r.y + r.height / 2, w: r.width,
                        font: parseFloat(getComputedStyle(t).fontSize), text: t.textContent};
            }).filter(b => b.w > 0))"""
    )
    shown = tmp_path / "attention_long_text.png"
    _full_page_screenshot(page, shown)
    print("screenshot:", shown)
    tokens = [b for b in labels if b["text"] not in ("0", "1", "2", "3")]
    assert tokens, "no token labels found"
    assert not _overlaps(labels), _overlaps(labels)[:5]
