"""Command line: ``python -m llmopt COMMAND`` (the ``llmopt`` console script).

Each command group lives in its own module with an ``add_commands(subparsers)`` that registers
its subcommands, each with ``run=`` its function; ``main`` parses, runs and turns every failure
into one line on stderr (exit 2 for a user's mistake, 1 for a bug).
"""

from __future__ import annotations

import argparse
import os
import sys

from llmopt.cli import (
    evaluate,
    generate,
    jobs,
    pretrain,
    runs,
    search,
    sensitivity,
    sweep,
    train,
)
from llmopt.cli.common import Bar, Parser
from llmopt.cli.compression_flags import LazyParser

# modules whose add_commands() registers subcommands
GROUPS = (evaluate, generate, pretrain, train, runs, sweep, jobs, sensitivity, search)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="llmopt",
        description="What-if compression of transformer models: text classifiers and causal LMs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=LazyParser)
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (Exception, KeyboardInterrupt) as exc:
        Bar.close_all()  # the message must not land on a progress bar's line
        if os.environ.get("LLMOPT_DEBUG") and not isinstance(exc, ValueError):
            raise
        status, message = _failure(exc)
        if message:
            print(message, file=sys.stderr)
        return status


def _first_line(text: str) -> str:
    return (str(text).splitlines() or [""])[0]


def _failure(exc: BaseException) -> tuple[int, str]:
    """Exit status and the one line on stderr for an exception that ended a command."""
    if isinstance(exc, KeyboardInterrupt):
        return 130, ""
    if isinstance(exc, ValueError):  # LlmoptError, and bad values caught by the libraries below
        return 2, _first_line(f"llmopt: error: {exc}")
    memory = "llmopt: error: out of memory; try a smaller model, --limit or --batch-size"
    if isinstance(exc, MemoryError):
        return 2, memory
    if isinstance(exc, RuntimeError) and "memory" in str(exc).lower():  # torch's alloc failure
        return 2, memory
    if isinstance(exc, OSError):  # a full disk, a folder that vanished, and the like
        what = exc.strerror or _first_line(str(exc)) or type(exc).__name__
        where = f": {exc.filename}" if exc.filename else ""
        return 2, f"llmopt: error: {what}{where}"
    return (
        1,
        (  # a bug, not a user mistake: one line, the traceback on request
            f"llmopt: internal error: {type(exc).__name__}: {_first_line(str(exc))[:200]} "
            "(set LLMOPT_DEBUG=1 to see the traceback)"
        ),
    )
