"""Dashboard round trip: Evaluate on the bundled model, first click vs a click after a slider move.

The first click evaluates the uncompressed model (then cached for every session), compresses a
copy and evaluates it; the second click, after moving the Sparsity slider, should only compress
and evaluate the new copy. Runs the real app through Streamlit's AppTest and prints both times
and their ratio (target: second <= 0.6 x first).

    python bench/app_roundtrip.py [--rows 300] [--sparsity 0.5 0.7]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app.py"
TARGET = 0.6


def _run_app_every_time() -> None:
    """AppTest re-enables Streamlit's old pages-folder mode before each run; the server keeps it
    off once app.py's st.navigation ran, so keep it off here too (see tests/app/conftest.py)."""
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def init_after_navigation(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init_after_navigation


def click_evaluate(at, sparsity: float) -> float:
    """Set the Sparsity slider, press Evaluate, and return the seconds until the results."""
    at.slider("c_sparsity").set_value(sparsity)
    [b for b in at.button if b.label == "Evaluate"][0].click()
    start = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - start
    if at.exception or at.error:
        raise SystemExit(f"the page failed: {at.exception or [e.value for e in at.error]}")
    shown = at.session_state["evaluation"]["config"].sparsity
    if abs(shown - sparsity) > 1e-9:
        raise SystemExit(f"results are for sparsity {shown}, expected {sparsity}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300, help="evaluation rows (default 300)")
    parser.add_argument("--sparsity", type=float, nargs=2, default=[0.5, 0.7])
    args = parser.parse_args()

    os.environ["LLMOPT_DEFAULT_MODEL"] = "bundled"
    os.environ["LLMOPT_DEFAULT_DATASET"] = "bundled"
    os.environ["LLMOPT_DEFAULT_ROWS"] = str(args.rows)
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    _run_app_every_time()
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP), default_timeout=900)
    start = time.perf_counter()
    at.run()
    at.switch_page("pages/compress.py").run()  # loads the model and data: not timed below
    if at.exception or at.error:
        raise SystemExit(f"the page failed: {at.exception or [e.value for e in at.error]}")
    print(f"page ready (model and {args.rows} rows loaded): {time.perf_counter() - start:.2f} s")

    first = click_evaluate(at, args.sparsity[0])
    second = click_evaluate(at, args.sparsity[1])
    ratio = second / first
    print(f"first Evaluate  (baseline + compressed), sparsity {args.sparsity[0]}: {first:.2f} s")
    print(f"second Evaluate (compressed only),       sparsity {args.sparsity[1]}: {second:.2f} s")
    verdict = "meets" if ratio <= TARGET else "misses"
    print(f"ratio second/first: {ratio:.2f} ({verdict} the target <= {TARGET})")


if __name__ == "__main__":
    main()
