"""How long the Compare page takes to render with many stored runs (AppTest, no browser).

Usage: python bench/compare_page.py [--runs 1000] [--rows 300] [--repeats 3] [--browser]
       [--first-view-only]

Fills a temporary experiment store with ``--runs`` runs shaped like the bundled model's (3 base
models, the rest variants of them: 2-class probabilities on ``--rows`` rows, a 36-layer report;
the three runs the page then compares carry MiniLM-sized pruning masks), then times, as medians
of ``--repeats`` fresh sessions: the page with the table, scatter and lineage of every run; and
the page with three runs picked (side by side, ROC, confusion, behaviour, layers, shared zeros).
With more than ``dashboard.compare.SCATTER_DRAWN_RUNS`` runs the first view draws no chart until
the scatter's switch is on. With ``--browser``, also the same two pages served by
``streamlit run`` and opened in Chromium, and the first view with the switch on
(``?scatter=on``), timed from the request until the script is idle and every chart the page
sent is drawn (each visit is a fresh browser context: nothing cached), with the bytes the
server sent over the page's websocket (the same on a loaded machine: a steadier measure).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import machine
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(384, 384)] * 4 + [(1536, 384), (384, 1536)]  # one MiniLM block's Linear layers


def fill(path: Path, runs: int, rows: int) -> list[int]:
    """Store ``runs`` synthetic runs; returns the ids of three pruned variants to compare."""
    from llmopt.compression import CompressionConfig
    from llmopt.experiments import ExperimentStore, RowSet, Run
    from llmopt.recording import config_steps

    store = ExperimentStore(path)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, rows)
    texts = [f"review {i}: " + "tasty snack, would buy again " * 4 for i in range(rows)]
    row_set = RowSet(texts, y, np.arange(rows), ["great", "other"])
    layers = [f"encoder.layer.{b}.{m}" for b in range(6) for m in "qkvoiu"]
    bases, picked = [], []
    for i in range(runs):
        score = np.clip(np.eye(2)[y] * 0.6 + rng.random((rows, 2)) * 0.5, 0, None)
        score /= score.sum(1, keepdims=True)
        acc = float((score.argmax(1) == y).mean())
        kind = "base" if i < 3 else "variant"
        config = None
        if kind == "variant":
            config = CompressionConfig(
                sparsity=float(rng.choice([0.0, 0.3, 0.5, 0.7])),
                bits=[None, 8, 4, 3][i % 4],
                rank=[None, None, 128, 64][(i // 4) % 4],
            )
            config = config.to_dict() if not config.is_identity else {"sparsity": 0.1}
        report = {
            "rows": [
                {"name": n, "sparsity": 0.5, "rel_error": float(rng.random())} for n in layers
            ],
            "totals": {},
        }
        parent = bases[i % 3] if bases and kind == "variant" else None
        run = Run(
            model=f"model-{i % 3}",
            model_fingerprint=f"m{i % 3}",
            dataset="bundled",
            rows_fingerprint="rows",
            n=rows,
            label_names=["great", "other"],
            kind=kind,
            metrics={"baseline": {"accuracy": acc}, "compressed": {"accuracy": acc}},
            intervals={"accuracy": [acc - 0.05, acc + 0.05]},
            config=config,
            steps=config_steps(config),
            parent=parent,
            size_bytes=int(rng.integers(20, 90) * 1e6),
            latency_ms=float(rng.random() * 10),
            agreement=float(rng.random()),
            mean_kl=float(rng.random() * 0.1),
            report=None if kind == "base" else report,
            confusion_matrix=[[1, 2], [3, 4]],
        )
        masks = None
        if i >= runs - 3:
            masks = {f"{layers[j]}": rng.random(SHAPES[j % 6]) < 0.5 for j in range(36)}
            run.steps = ["prune"]
        run_id = store.add(run, y_true=y, y_score=score, masks=masks, row_set=row_set)
        if kind == "base":
            bases.append(run_id)
        if masks is not None:
            picked.append(run_id)
    return picked


def render(query: dict) -> float:
    """Seconds for a fresh session to render the Compare page with ``query`` in its address."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params.update(query)
    at.switch_page("pages/compare.py")
    start = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - start
    assert not at.exception, at.exception
    return seconds


def browser_render(query: str, repeats: int) -> tuple[list[float], int, list[int]]:
    """Seconds until a fresh Chromium page of the served Compare page is idle and every chart
    it sent is drawn; how many charts that was; and the bytes the server sent over the page's
    websocket in each visit (the script's messages: tables, options, figures)."""
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    from playwright.sync_api import expect, sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.fileWatcherType",
        "none",
    ]
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health") as answer:
                    if answer.read().strip() == b"ok":
                        break
            except OSError:
                time.sleep(0.2)
        idle = '[data-testid="stApp"][data-test-script-state="notRunning"]'
        drawn = """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
            .every(c => c.querySelector('.js-plotly-plot .main-svg'))"""
        seconds, charts, sent = [], [], []
        with sync_playwright() as p:
            chromium = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                headless=True,
                args=["--no-sandbox", "--disable-gpu"],
            )
            for i in range(repeats + 1):  # the first visit warms the server up
                page = chromium.new_page(viewport={"width": 1440, "height": 1000})
                frames: list[int] = []
                page.on(
                    "websocket",
                    lambda ws, frames=frames: ws.on(
                        "framereceived", lambda payload: frames.append(len(payload))
                    ),
                )
                start = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/compare{query}")
                page.get_by_test_id("stDataFrame").first.wait_for(timeout=300_000)
                expect(page.locator(idle)).to_have_count(1, timeout=300_000)
                page.wait_for_function(drawn, timeout=300_000)  # every chart the page sent
                if i:
                    charts.append(page.locator('[data-testid="stPlotlyChart"]').count())
                    seconds.append(time.perf_counter() - start)
                    sent.append(sum(frames))
                page.close()
            chromium.close()
        return seconds, max(charts), sent
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--browser", action="store_true", help="also time it in Chromium")
    parser.add_argument(
        "--first-view-only", action="store_true", help="in Chromium, time the first view only"
    )
    args = parser.parse_args()
    print(machine.describe())
    path = Path(tempfile.mkdtemp(prefix="llmopt-bench-")) / "experiments.sqlite"
    os.environ["LLMOPT_EXPERIMENTS"] = str(path)
    start = time.perf_counter()
    picked = fill(path, args.runs, args.rows)
    print(
        f"filled {args.runs} runs in {time.perf_counter() - start:.1f} s "
        f"({path.stat().st_size / 1e6:.1f} MB)"
    )
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__  # run app.py on every rerun, as the server does

    def init_after_navigation(self, *a, **k):
        init(self, *a, **k)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init_after_navigation
    render({})  # warm-up: imports and the store's first open
    plain, three = [], []
    for _ in range(args.repeats):  # interleaved, so a burst of load hits both alike
        plain.append(render({}))
        three.append(render({"runs": ",".join(map(str, picked))}))
    print("| Compare page, fresh session | median seconds | runs |")
    print("|---|---|---|")
    print(
        "| runs table (with many runs the scatter and lineage wait until asked) "
        f"| {statistics.median(plain):.2f} | {args.runs} |"
    )
    print(
        f"| … plus three picked runs (side by side, ROC, confusion, behaviour, layers, shared "
        f"zeros) | {statistics.median(three):.2f} | {args.runs} |"
    )
    if args.browser:
        print("| Chromium, fresh browser | median seconds | runs | KB sent to the browser |")
        print("|---|---|---|---|")
        picked_query = "?runs=" + ",".join(map(str, picked))
        for title, query in [
            ("first view", ""),
            ("first view, scatter on", "?scatter=on"),
            ("… three picked", picked_query),
        ][: 1 if args.first_view_only else 3]:
            seconds, charts, sent = browser_render(query, args.repeats)
            print(
                f"| {title} ({charts} charts) | {statistics.median(seconds):.2f} | {args.runs} "
                f"| {statistics.median(sent) / 1e3:.0f} |"
            )
    print(machine.describe())


if __name__ == "__main__":
    main()
