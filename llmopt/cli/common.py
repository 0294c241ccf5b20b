"""What every command shares: argument types, source arguments, progress bars, loading."""

from __future__ import annotations

import argparse
import sys
import weakref
from typing import Any, ClassVar


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr and exit status 2."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        self.exit(2, f"llmopt: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return value


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="bundled",
        help="bundled | local checkpoint dir | HF hub id | encoder:SRC",
    )
    p.add_argument("--dataset", default="bundled", help="bundled | path.csv | hf:NAME[:CONFIG]")
    p.add_argument("--text-column", default="text", help="text column of a CSV/HF dataset")
    p.add_argument("--label-column", default="label", help="label column of a CSV/HF dataset")


class Bar:
    """A tqdm progress bar driven by llmopt's (fraction, message) callbacks."""

    _open: ClassVar[weakref.WeakSet] = weakref.WeakSet()

    def __init__(self) -> None:
        self.bar: Any = None  # a tqdm bar while one is drawn
        Bar._open.add(self)

    @classmethod
    def close_all(cls) -> None:
        """Close every bar still drawn (before an error message is printed)."""
        for bar in list(cls._open):
            bar.close()

    def __call__(self, fraction: float, message: str) -> None:
        from tqdm import tqdm

        if self.bar is None or fraction <= 0 or message != self.bar.desc:
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(
                total=100,
                desc=message,
                file=sys.stderr,
                leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}",
            )
        self.bar.n = round(100 * fraction)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def train_split(args):
    """The chosen dataset's training split, read once per command (heads and Wanda use it)."""
    if getattr(args, "_train", None) is None:
        from llmopt.data import load_dataset

        args._train = load_dataset(
            args.dataset, "train", text_column=args.text_column, label_column=args.label_column
        )
    return args._train


def load(args, progress):
    from llmopt.models import load_model

    train = train_split(args) if args.model.startswith("encoder:") else None
    return load_model(args.model, train_data=train, progress=progress)
