"""Task wrappers and a driver command for the jobs tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from llmopt.jobs.tasks import evaluate_point

ROOT = Path(__file__).resolve().parents[2]


class DieOnce:
    """A task whose process kills itself the first time any task runs (a worker killed
    mid-task), then evaluates normally; the marker file says it already died once."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __call__(self, shared: dict, item):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return evaluate_point(shared, item)
        os._exit(1)  # no cleanup, no exception: as a kill -9 or the OOM killer does


def sweep_argv(model, dataset, values: str, *extra: str) -> list[str]:
    return ["sweep", "--model", str(model), "--dataset", str(dataset), "--knob", "sparsity",
            "--values", values, *extra]  # fmt: skip


def start_slow_cli(argv: list[str], seconds: float) -> subprocess.Popen:
    """``llmopt ARGV`` in a subprocess whose tasks each wait ``seconds`` first (so a test can
    act while the job runs); it writes to the store named by $LLMOPT_EXPERIMENTS."""
    code = (
        "import sys, time\n"
        "import llmopt.jobs.tasks as t\n"
        "run = t.evaluate_point\n"
        f"t.evaluate_point = lambda s, i: (time.sleep({seconds}), run(s, i))[1]\n"
        "from llmopt.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def cli(*argv: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmopt", *argv], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip
