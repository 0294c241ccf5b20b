"""The README's sensitivity picture: the Auto page's heatmap (unit x level) as a PNG.

Run: ``python bench/sensitivity_figure.py --json s.json [--out docs/img/sensitivity.png]``
draws a result written by ``llmopt sensitivity --json`` or ``bench/auto.py --json``; without
``--json`` it first runs the analysis on the bundled model and reviews (``--quant-method rtn
--levels 8,4,3 --validation-rows 256``, as ``bench/auto.py``). The plot is rendered offline in
a local Chromium (Playwright driving the system browser, ``--browser``); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROW_PX = 22  # taller rows than the page's, so the 36 names stay legible in a still picture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="a sensitivity result to draw (default: run)")
    parser.add_argument("--out", type=Path, default=Path("docs/img/sensitivity.png"))
    parser.add_argument("--width", type=int, default=1300, help="picture width in pixels")
    parser.add_argument("--browser", default="/usr/bin/chromium", help="Chromium executable")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quant-method")
    which.add_argument("--sparsity-method")
    which.add_argument("--lowrank-method")
    parser.add_argument("--levels", default=None, help="default: 8,4,3 | 0.3,0.5,0.7 | 256,128,64")
    parser.add_argument("--validation-rows", type=int, default=256)
    args = parser.parse_args()

    from llmopt.errors import LlmoptError

    try:
        result = _load(args.json) if args.json is not None else _run(args)
        _render(result, args.out, args.width, args.browser)
    except LlmoptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


def _load(path: Path):
    from llmopt.errors import LlmoptError
    from llmopt.sensitivity import result_from_dict

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LlmoptError(f"cannot read {path}: {exc}") from None
    return result_from_dict(data)


def _run(args):
    import llmopt
    from llmopt.data import load_dataset
    from llmopt.sensitivity import parse_levels, sensitivity

    if args.sparsity_method:
        kind, method, default = "prune", args.sparsity_method, "0.3,0.5,0.7"
    elif args.lowrank_method:
        kind, method, default = "lowrank", args.lowrank_method, "256,128,64"
    else:
        kind, method, default = "quantize", args.quant_method or "rtn", "8,4,3"
    loaded = llmopt.load_model("bundled")
    return sensitivity(
        loaded, load_dataset("bundled", "train"), kind=kind, method=method,
        levels=parse_levels(kind, args.levels or default),
        validation_rows=args.validation_rows,
    )  # fmt: skip


def _render(result, out: Path, width: int, browser: str) -> None:
    """The page's figure at ``width`` pixels, screenshot from a headless local Chromium."""
    import plotly.io as pio
    from playwright.sync_api import Error, sync_playwright

    from llmopt.errors import LlmoptError
    from llmopt.figures.sensitivity import sensitivity_figure
    from llmopt.paths import check_output

    out.parent.mkdir(parents=True, exist_ok=True)
    check_output(out, flag="--out")
    fig = sensitivity_figure(result)
    n_units = len({r.name for r in result.layers})
    fig.update_layout(
        width=width,
        height=max(320, 140 + ROW_PX * n_units),
        font={"size": 14},
        title={"font": {"size": 16}},
        margin={"l": 20, "r": 20, "t": 70, "b": 50},
        paper_bgcolor="white",
    )
    html = pio.to_html(fig, include_plotlyjs=True, full_html=True, config={"displayModeBar": False})
    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "figure.html"
        page_file.write_text(html, encoding="utf-8")
        try:
            with sync_playwright() as pw:
                chromium = pw.chromium.launch(executable_path=browser, args=["--no-sandbox"])
                page = chromium.new_page(viewport={"width": width + 40, "height": 800})
                page.goto(page_file.as_uri())
                page.wait_for_selector(".main-svg")
                page.locator(".plotly-graph-div").screenshot(path=str(out))
                chromium.close()
        except Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LlmoptError(f"could not render with {browser}: {first}") from None


if __name__ == "__main__":
    main()
