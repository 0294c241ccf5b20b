"""A real Chromium drives the dashboard served by ``streamlit run``: slider, Evaluate, charts."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]  # the folder holding app.py
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHART = '[data-testid="stPlotlyChart"] .js-plotly-plot'
WAIT_MS = 120_000  # model loads and evaluation on a busy 2-core machine


def _require_browser() -> None:
    """Skip without Chromium or Playwright, except in CI, where both must be there."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (run .ci/browser-deps.sh)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + " — it is required in CI")
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """``streamlit run app.py`` on a free port with ``env``; yields its URL once it answers."""
    _require_browser()
    port = _free_port()
    log = log_path.open("w")
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true"]
    command += ["--server.address", "127.0.0.1", "--server.port", str(port)]
    command += ["--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}: {_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer on {url} in 60 s: {_tail(log_path)}")
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _env(model, dataset, tmp_path: Path, tmp_path_factory, rows: int = 10) -> dict[str, str]:
    """The sidebar's first model, dataset and rows; the server may read the test's tmp folders."""
    return {
        "LLMOPT_DEFAULT_MODEL": str(model),
        "LLMOPT_DEFAULT_DATASET": str(dataset),
        "LLMOPT_DEFAULT_ROWS": str(rows),
        "LLMOPT_HOME": str(tmp_path / "home"),
        "LLMOPT_EXPERIMENTS": str(tmp_path / "home" / "experiments.sqlite"),  # its own runs
        "LLMOPT_ROOTS": str(tmp_path_factory.getbasetemp()),
    }


@pytest.fixture()
def server(tiny_dirs, tiny_csv, tmp_path, tmp_path_factory):
    """A fresh ``streamlit run app.py`` (no visit yet) on the tiny model and CSV."""
    env = _env(tiny_dirs["bert"], tiny_csv, tmp_path, tmp_path_factory)
    with _serve(env, tmp_path / "server.log") as url:
        yield url


def _tail(log_path: Path) -> str:
    return log_path.read_text()[-2000:]


@pytest.fixture()
def chromium():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def browser(server, chromium):
    """Chromium, launched once the server is up (and before anyone visits it)."""
    return chromium


def _open_compress_page(browser, server):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{server}/compress")
    page.get_by_role("button", name="Evaluate").wait_for()
    return page


def _sparsity(page):
    return page.locator('[data-testid="stSlider"]').filter(has_text="Sparsity")


def _settle(page, slider) -> None:
    """Wait until the script is idle and the slider is drawn once (a rerun can briefly show the
    previous run's element next to the new one)."""
    from playwright.sync_api import expect

    idle = page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]')
    for _ in range(2):  # a rerun may start just after the first check
        expect(idle).to_have_count(1)
        expect(slider).to_have_count(1)
        page.wait_for_timeout(300)


def _step_right(page, slider, values: list[str]) -> None:
    """Press ArrowRight once per value, waiting for each: every change reruns the script."""
    from playwright.sync_api import expect

    for value in values:
        _settle(page, slider)
        slider.focus()
        page.keyboard.press("ArrowRight")
        expect(slider.first).to_have_value(value)
    _settle(page, slider)


def _full_page_screenshot(page, path: Path) -> None:
    """Streamlit scrolls inside its main container, so grow the window to the content first."""
    page.mouse.move(0, 0)  # no tooltip in the picture
    selector = '[data-testid="stMain"], [data-testid="stAppViewContainer"]'
    height = page.evaluate(
        "s => Math.max(...[...document.querySelectorAll(s)].map(e => e.scrollHeight))", selector
    )
    width = page.viewport_size["width"]
    page.set_viewport_size({"width": width, "height": min(int(height) + 50, 16_000)})
    page.wait_for_timeout(1500)  # charts redraw at the new size
    page.screenshot(path=str(path), full_page=True)


def test_slider_evaluate_and_charts_in_a_real_browser(browser, server):
    from playwright.sync_api import expect

    page = _open_compress_page(browser, server)
    assert "llmopt" in page.title()
    slider = _sparsity(page).locator('input[type="range"]')
    expect(slider).to_have_value("0.5")
    _step_right(page, slider, ["0.55", "0.6"])
    expect(_sparsity(page).get_by_test_id("stSliderThumbValue")).to_have_text("0.60")
    expect(page.get_by_text("60% magnitude pruning").first).to_be_visible()

    page.get_by_role("button", name="Evaluate").click()
    roc = page.locator(CHART).filter(has_text="ROC curve")
    expect(roc).to_have_count(1)
    expect(page.locator(CHART).filter(has_text="Error per layer")).to_have_count(1)
    expect(page.get_by_text("Compressed with 60% magnitude pruning")).to_be_visible()
    assert page.locator(CHART).count() >= 6  # ROC, 2 confusion, diff, size, layers
    assert not page.get_by_test_id("stException").count()

    path = Path(tempfile.mkdtemp(prefix="llmopt-screens-")) / "compress.png"
    _full_page_screenshot(page, path)
    print(f"screenshot: {path}")
    assert path.stat().st_size > 10_000


def test_two_browser_sessions_keep_their_own_settings(browser, server):
    from playwright.sync_api import expect

    first = _open_compress_page(browser, server)
    slider = _sparsity(first).locator('input[type="range"]')
    _step_right(first, slider, ["0.55", "0.6", "0.65", "0.7", "0.75", "0.8"])
    first.get_by_role("button", name="Evaluate").click()
    expect(first.locator(CHART).filter(has_text="ROC curve")).to_have_count(1)

    second = _open_compress_page(browser, server)  # a new page is a new Streamlit session
    expect(_sparsity(second).locator('input[type="range"]')).to_have_value("0.5")
    expect(second.get_by_text("50% magnitude pruning").first).to_be_visible()
    expect(second.get_by_text("Press Evaluate")).to_be_visible()
    assert second.locator(CHART).filter(has_text="ROC curve").count() == 0

    second.get_by_role("button", name="Evaluate").click()  # the second session evaluates too
    expect(second.get_by_text("Compressed with 50% magnitude pruning")).to_be_visible()
    first.get_by_role("button", name="Evaluate").click()  # and the first keeps its own 80 %
    expect(first.get_by_text("Compressed with 80% magnitude pruning")).to_be_visible()
    expect(slider).to_have_value("0.8")


IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def test_first_visits_at_once_to_a_page_of_a_fresh_server(browser, server):
    """Three visitors open /compress of a fresh server at the same moment. Streamlit starts in
    its folder-based page mode there, for the whole process, and the first session to leave it
    used to leave the others running the page without app.py: a KeyError with a traceback."""
    from playwright.sync_api import expect

    pages = [browser.new_page(viewport={"width": 1280, "height": 900}) for _ in range(3)]
    for page in pages:  # all requests go out before any page has loaded
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{server}/compress", wait_until="commit")
    for page in pages:
        crashed = page.get_by_test_id("stException")
        page.get_by_role("button", name="Evaluate").or_(crashed).first.wait_for()
        expect(page.locator(IDLE)).to_have_count(1, timeout=WAIT_MS)
        page.wait_for_timeout(500)  # a rerun through app.py may follow
        expect(page.locator(IDLE)).to_have_count(1, timeout=WAIT_MS)
        assert crashed.count() == 0, crashed.first.inner_text()[:300]
        assert page.get_by_text("KeyError").count() == 0
        expect(page.get_by_text("Compress & Evaluate").first).to_be_visible()
        expect(page.get_by_role("link", name="Sweep")).to_be_visible()  # app.py's navigation


def test_seven_classes_in_a_real_browser(chromium, sensitive_bert, tmp_path, tmp_path_factory):
    """An encoder + trained head on a 7-class CSV: after Evaluate every figure is drawn, the
    confusion matrices each take the page's width, a flipped row's whole text shows when it is
    selected, and nothing failed."""
    from app_data import write_class_csv
    from playwright.sync_api import expect

    csv_path = write_class_csv(tmp_path / "seven.csv", 7, per_class=10)
    model = f"encoder:{sensitive_bert}"  # compression flips some of its predictions
    env = _env(model, csv_path, tmp_path, tmp_path_factory, rows=1000)
    with _serve(env, tmp_path / "server.log") as url:
        page = _open_compress_page(chromium, url)
        page.get_by_role("button", name="Evaluate").click()
        confusion = page.locator(CHART).filter(has_text="Share of each true label")
        expect(confusion).to_have_count(2, timeout=WAIT_MS)
        expect(page.locator(CHART).filter(has_text="Error per layer")).to_have_count(1)
        expect(page.locator(IDLE)).to_have_count(1, timeout=WAIT_MS)
        assert not page.get_by_test_id("stException").count()
        assert not page.get_by_test_id("stAlertContentError").count()
        main = page.get_by_test_id("stMain").bounding_box()
        for i in range(2):  # one per row, as wide as the page's content
            assert confusion.nth(i).bounding_box()["width"] > 0.7 * main["width"]
        roc = page.locator(CHART).filter(has_text="one-vs-rest")
        expect(roc).to_have_count(1)
        # the per-layer rules' table (an editor in a closed expander) comes before the results
        rules = page.get_by_test_id("stExpander").filter(has_text="Per-layer settings")
        editors = rules.get_by_test_id("stDataFrame").count()
        flipped = page.get_by_test_id("stMain").get_by_test_id("stDataFrame").nth(1 + editors)
        expect(page.get_by_text("Select a row to read its whole text.")).to_be_visible()
        flipped.scroll_into_view_if_needed()
        box = flipped.bounding_box()
        page.mouse.click(box["x"] + 15, box["y"] + 53)  # the first row's selection box
        expect(page.get_by_text("True label category_")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator(IDLE)).to_have_count(1, timeout=WAIT_MS)
        path = Path(tempfile.mkdtemp(prefix="llmopt-screens-")) / "compress-7-classes.png"
        _full_page_screenshot(page, path)
        print(f"screenshot: {path}")
        assert path.stat().st_size > 10_000


def test_two_evaluations_compared_in_a_real_browser(browser, server):
    """Evaluate two settings on the Compress page, open Compare, tick both runs in the table:
    the side-by-side table, the ROC overlay and the confusion row are drawn, nothing fails."""
    from playwright.sync_api import expect

    page = _open_compress_page(browser, server)
    slider = _sparsity(page).locator('input[type="range"]')
    for value, run in (("0.55", 2), ("0.6", 3)):  # run 1 is the uncompressed base model
        _step_right(page, slider, [value])
        page.get_by_role("button", name="Evaluate").click()
        expect(page.get_by_text(f"Recorded as run #{run}")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator(IDLE)).to_have_count(1, timeout=WAIT_MS)
    assert "run=3" in page.url and "c_sparsity=0.6" in page.url  # the address keeps both
    page.get_by_role("link", name="Compare", exact=True).click()
    table = page.get_by_test_id("stMain").get_by_test_id("stDataFrame").first
    table.wait_for()
    expect(page.get_by_text("3 runs recorded")).to_be_visible(timeout=WAIT_MS)
    for row in (1, 2):  # tick the two variants (row 0 is the base model)
        picked = page.get_by_text(f"{row} picked run{'s' if row > 1 else ''}", exact=True)
        for _ in range(3):  # a click that lands while the grid is still being drawn is lost
            expect(page.locator(IDLE)).to_have_count(1, timeout=WAIT_MS)
            page.wait_for_timeout(500)
            table.scroll_into_view_if_needed()
            box = table.bounding_box()
            page.mouse.click(box["x"] + 15, box["y"] + 53 + 35 * row)
            try:
                expect(picked).to_be_visible(timeout=10_000)
                break
            except AssertionError:
                continue
        expect(picked).to_be_visible(timeout=WAIT_MS)
    assert "runs=2%2C3" in page.url or "runs=2,3" in page.url
    expect(page.locator(CHART).filter(has_text="ROC curve")).to_have_count(1, timeout=WAIT_MS)
    confusion = page.locator(CHART).filter(has_text="Confusion matrices")
    expect(confusion).to_have_count(1, timeout=WAIT_MS)
    expect(page.get_by_text("What differs").first).to_be_visible()
    assert not page.get_by_test_id("stException").count()
    assert not page.get_by_test_id("stAlertContentError").count()
    path = Path(tempfile.mkdtemp(prefix="llmopt-screens-")) / "compare.png"
    _full_page_screenshot(page, path)
    print(f"screenshot: {path}")
    assert path.stat().st_size > 10_000


LONG_NAMES = [f"customer support tickets about a long-winded topic number {c}" for c in range(7)]


@pytest.fixture()
def stored_server(tiny_dirs, tiny_csv, tmp_path, tmp_path_factory):
    """A fresh server whose store holds runs on two datasets: the bundled reviews (2 classes,
    93 rows) and a 7-class CSV with long class names (300 rows); no model is loaded."""
    from stored_runs import fill_store

    env = _env(tiny_dirs["bert"], tiny_csv, tmp_path, tmp_path_factory)
    home = Path(env["LLMOPT_EXPERIMENTS"])
    home.parent.mkdir(parents=True, exist_ok=True)
    ids = fill_store(
        home, {"bundled": (["negative", "positive"], 93), str(tiny_csv): (LONG_NAMES, 300)}
    )
    with _serve(env, tmp_path / "server.log") as url:
        yield url, ids


def _idle(page) -> None:
    from playwright.sync_api import expect

    idle = page.locator(IDLE)
    for _ in range(2):  # a rerun may start just after the first check
        expect(idle).to_have_count(1, timeout=WAIT_MS)
        page.wait_for_timeout(700)


def test_opening_compare_and_sweep_adds_few_history_entries(stored_server, chromium):
    """Issue 18 item 13: every mirrored setting was its own address change, and the browser
    keeps each one (opening Compare added 8 history entries, Sweep 6), so Back stayed on the
    page. Now each group of settings changes the address once at most per run, defaults left
    out: opening a page adds at most two entries (its own and the settings'), a choice one."""
    url, _ = stored_server
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    blank = page.evaluate("history.length")  # about:blank
    page.goto(f"{url}/compare")  # + 1
    page.get_by_test_id("stMain").get_by_test_id("stDataFrame").first.wait_for()
    _idle(page)
    opened = page.evaluate("history.length")
    assert opened - blank <= 2, f"opening Compare added {opened - blank} history entries"
    page.get_by_test_id("stSelectbox").filter(has_text="Colour by").click()
    page.get_by_role("option", name="method").click()
    _idle(page)
    x = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("x", exact=True))
    x.click()
    page.get_by_role("option", name="Latency (ms per text)").first.click()
    _idle(page)
    assert "x=latency_ms" in page.url
    after = page.evaluate("history.length")
    assert after - opened <= 2, f"two choices added {after - opened} history entries"
    page.goto(f"{url}/sweep")
    _idle(page)
    sweep = page.evaluate("history.length")
    assert sweep - after <= 3, f"opening Sweep added {sweep - after} history entries"


SPLIT_WORDS_JS = """() => {
    const bad = [];
    const main = document.querySelector('[data-testid="stMain"]');
    for (const h of main.querySelectorAll('h1, h2, h3')) {
        const walker = document.createTreeWalker(h, NodeFilter.SHOW_TEXT);
        let node;
        while ((node = walker.nextNode())) {
            for (const m of node.data.matchAll(/\\S+/g)) {
                const range = document.createRange();
                range.setStart(node, m.index);
                range.setEnd(node, m.index + m[0].length);
                const lines = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
                if (lines.size > 1) bad.push(m[0]);
            }
        }
    }
    return bad;
}"""
CLIPPED_JS = """() => [...document.querySelectorAll('[data-testid="stMain"] *')]
    .filter(e => e.children.length === 0 && e.textContent.trim()
        && getComputedStyle(e).textOverflow === 'ellipsis' && e.scrollWidth > e.clientWidth + 1)
    .map(e => e.textContent.trim())"""
METRICS_TABLE_SCROLLS_JS = """() => {
    const grid = document.querySelector(
        '[data-testid="stMain"] [data-testid="stDataFrame"] .dvn-scroller');
    return grid.scrollWidth > grid.clientWidth + 1;
}"""


@pytest.mark.parametrize("width", [900, 1400])
def test_compress_page_reads_at_900_and_1400_px(browser, server, width):
    """Issue 18 items 14 and 18: at 900 px with the sidebar open, headings split mid-word,
    select boxes and the latency chip were cut short ("· n…"); at 1400 px the metrics table
    lost its "delta 95% CI" column at its right edge. After Evaluate, no heading breaks inside
    a word, no text of the page is cut off with an ellipsis, and at 1400 px the metrics table
    does not scroll sideways."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": width, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{server}/compress")
    page.get_by_role("button", name="Evaluate").click()
    expect(page.get_by_text("Recorded as run #")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(IDLE)).to_have_count(1, timeout=WAIT_MS)
    page.wait_for_timeout(1500)
    assert page.get_by_test_id("stSidebar").bounding_box()["width"] > 200  # the sidebar is open
    path = Path(tempfile.mkdtemp(prefix="llmopt-screens-")) / f"compress-{width}.png"
    _full_page_screenshot(page, path)
    print(f"screenshot: {path}")
    split = page.evaluate(SPLIT_WORDS_JS)
    clipped = page.evaluate(CLIPPED_JS)
    assert not split, f"headings broken inside a word at {width} px: {split}"
    assert not clipped, f"text cut short at {width} px: {clipped}"
    if width >= 1400:  # the metrics table (the page's first) shows every column whole
        assert not page.evaluate(METRICS_TABLE_SCROLLS_JS), "the metrics table is cut short"


TICKS_JS = """(chart) => {
    const boxes = sel => [...chart.querySelectorAll(sel)].map(t => t.getBoundingClientRect())
        .filter(r => r.width > 0);
    const overlaps = rs => rs.some((a, i) => rs.slice(i + 1).some(b =>
        a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom));
    const ytext = [...chart.querySelectorAll('.yaxislayer-above .ytick text')];
    return {
        yticks: ytext.map(t => t.textContent),
        ywidth: Math.max(...boxes('.yaxislayer-above .ytick text').map(r => r.width)),
        heat: Math.min(...[...chart.querySelectorAll('.heatmaplayer image')]
            .map(i => i.getBoundingClientRect().width)),
        ytick_overlap: overlaps(boxes('.yaxislayer-above .ytick text')),
        colourbar_overlap: overlaps(boxes('.colorbar .cbaxis text')),
    };
}"""


def test_compare_confusion_row_with_long_class_names(stored_server, chromium):
    """Issue 18 item 10 in a real browser: two runs on a 7-class CSV with long class names
    picked on Compare. Every class has its tick label (shortened, not every other one), the
    labels are narrower than a heatmap, and neither they nor the colour bar's ticks overlap."""
    url, ids = stored_server
    runs = [i for name, run_ids in ids.items() if name != "bundled" for i in run_ids][:2]
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{url}/compare?runs={runs[0]},{runs[1]}")
    chart = page.locator(CHART).filter(has_text="Confusion matrices")
    chart.wait_for()
    _idle(page)
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    found = chart.evaluate(TICKS_JS)
    path = Path(tempfile.mkdtemp(prefix="llmopt-screens-")) / "compare-long-names.png"
    chart.screenshot(path=str(path))
    print(f"screenshot: {path}")
    assert len(found["yticks"]) == len(LONG_NAMES)  # every class named
    assert all(len(t) <= 20 and "…" in t for t in found["yticks"])  # shortened
    assert found["ywidth"] < found["heat"]  # the labels do not crowd out the matrix
    assert not found["ytick_overlap"] and not found["colourbar_overlap"]
