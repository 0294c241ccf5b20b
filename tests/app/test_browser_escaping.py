"""A real Chromium reads strings from a link, a CSV and the store as text: no link, no image.

Streamlit renders error boxes, captions, expander titles and Markdown as Markdown, so a model
name ``[Click here](https://evil.example/login)`` from a link, or a CSV column or label named
``![r](http://127.0.0.1:9/x)``, would become a clickable link in the app's own boxes or make the
browser fetch that address. Before the last captions were escaped, the Overview page's caption
("labels …" of the stored label names) and Compare's "What differs" let such names through.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import pandas as pd
import pytest
from stored_runs import fill_store
from test_browser import WAIT_MS, _env, _serve, chromium  # noqa: F401 - fixtures
from tinymodels import make_texts

pytestmark = pytest.mark.browser

EVIL_LINK = "[x](https://evil.example)"
EVIL_IMAGE = "![r](http://127.0.0.1:9/x)"
MODEL_LINK = "[Click here](https://evil.example/login)"


def _leaks(page) -> list[str]:
    """Every href that names evil.example and every img src that names 127.0.0.1:9."""
    return page.evaluate(
        """() => [
            ...[...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))
                .filter(h => h.includes('evil.example'))
                .map(h => h + ' in ' + [...document.querySelectorAll('a[href]')]
                    .filter(a => a.getAttribute('href') === h)
                    .map(a => (a.closest('[data-testid]') || a).outerHTML.slice(0, 400))
                    .join(' | ')),
            ...[...document.querySelectorAll('img[src]')].map(i => i.getAttribute('src'))
                .filter(s => s.includes('127.0.0.1:9')),
        ]"""
    )


def _idle(page) -> None:
    from playwright.sync_api import expect

    idle = page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]')
    for _ in range(2):  # a rerun may start just after the first check
        expect(idle).to_have_count(1, timeout=WAIT_MS)
        page.wait_for_timeout(500)


def _visit(page, url: str, fetched: list[str]) -> str:
    page.goto(url)
    _idle(page)
    assert _leaks(page) == [], url
    hosts = {urlsplit(u).netloc for u in fetched}
    assert not hosts & {"127.0.0.1:9", "evil.example"}, url  # nothing fetched from them
    # What a visitor reads (the invisible word joiner that keeps addresses unlinked aside).
    return page.locator('[data-testid="stMain"]').inner_text().replace("\u2060", "")


@pytest.fixture()
def hostile(tiny_dirs, tmp_path, tmp_path_factory):
    """A server whose dataset is a CSV with Markdown column names and labels, and whose store
    holds runs with Markdown label names and dataset names."""
    texts, labels = make_texts(40)
    csv = tmp_path / "hostile.csv"
    frame = pd.DataFrame(
        {EVIL_LINK: texts, EVIL_IMAGE: [(EVIL_LINK, EVIL_IMAGE)[y] for y in labels]}
    )
    frame.to_csv(csv, index=False)
    env = _env(tiny_dirs["bert"], csv, tmp_path, tmp_path_factory, rows=20)
    store = tmp_path / "home" / "experiments.sqlite"
    store.parent.mkdir(parents=True, exist_ok=True)
    ids = fill_store(
        store, {EVIL_LINK: ([EVIL_LINK, EVIL_IMAGE], 20), EVIL_IMAGE: (["a", "b"], 20)}
    )
    with _serve(env, tmp_path / "server.log") as url:
        yield url, ids


def test_link_file_and_store_strings_are_text_in_a_real_browser(hostile, chromium, tmp_path):  # noqa: F811
    url, ids = hostile
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))

    text = _visit(page, f"{url}/?model={quote(MODEL_LINK)}", fetched)
    assert MODEL_LINK in text  # the link's value, shown literally in the notice

    text = _visit(page, url, fetched)  # Overview on the hostile CSV
    assert "hostile.csv" in text
    text = _visit(page, f"{url}/compress", fetched)
    first = ids[EVIL_LINK]
    text = _visit(page, f"{url}/compare?runs={first[0]},{first[1]}", fetched)
    assert f"positive class: {EVIL_IMAGE}" in text  # a stored label name, in the ROC's title
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
    print(f"screenshot: {tmp_path / 'compare.png'}")
