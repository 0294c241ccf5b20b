"""``llmopt pretrain``: pre-train a small GPT-style causal LM on a text column, in minutes."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from llmopt.cli.common import Bar
from llmopt.errors import LlmoptError


class StageBar(Bar):
    """One bar for a whole pre-training run: its messages (``pretrain: step 3/~600, loss …,
    2:10 left``) update the bar in place; any other message starts a new bar."""

    def __call__(self, fraction: float, message: str) -> None:
        from llmopt.lm.pretrain import STAGE

        if message.startswith(f"{STAGE}: step") and self.bar is not None:
            self.bar.set_description_str(message, refresh=False)
            self.bar.n = round(100 * fraction)
            self.bar.refresh()
            return
        super().__call__(fraction, message)


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text}")
    return value


def _steps(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        msg = f"expected a whole number of steps, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not 1 <= value <= 10_000_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 10000000 steps, got {text}")
    return value


def add_commands(sub) -> None:
    """Register ``pretrain``."""
    p = sub.add_parser(
        "pretrain",
        help="pre-train a small GPT-style causal LM from scratch on a text column (offline)",
        description=(
            "Trains a byte-level BPE tokenizer and a 4-block GPT-2-style model on the texts for "
            "a fixed number of steps (600, the lm:bundled recipe) or a time budget (--minutes), "
            "and saves it as a checkpoint --model can load. Without --dataset and --save-model "
            "it builds the cached lm:bundled model."
        ),
    )
    p.add_argument(
        "--dataset",
        default="bundled",
        help="bundled (the reviews' training split) or a CSV/TSV file (all its rows)",
    )
    p.add_argument("--text-column", default="text", help="the CSV's text column (no labels needed)")
    p.add_argument(
        "--minutes", type=_minutes, default=None, help="train for this long instead of 600 steps"
    )
    p.add_argument("--steps", type=_steps, default=None, help="train this many steps (default 600)")
    p.add_argument("--save-model", type=Path, help="save the model to this folder")
    p.add_argument(
        "--overwrite", action="store_true", help="let --save-model replace a non-empty folder"
    )
    p.set_defaults(run=run_pretrain)


def read_texts(dataset: str, text_column: str) -> list[str]:
    """The training texts: the bundled reviews' training split, or a CSV's text column.

    Raises:
        LlmoptError: an unreadable file, a missing column, or no non-empty texts.
    """
    from llmopt.data import read_table
    from llmopt.lm.pretrain import clean_texts
    from llmopt.paths import read_file

    if dataset == "bundled":
        from llmopt.data import load_dataset

        return load_dataset("bundled", "train").texts
    if dataset.startswith("hf:"):
        raise LlmoptError("pretrain reads 'bundled' or a CSV/TSV file; save the texts as a CSV")
    name = Path(dataset).name
    frame = read_table(read_file(dataset, what="CSV file"), name)
    if text_column not in frame.columns:
        shown = ", ".join(repr(str(c)) for c in list(frame.columns)[:20])
        raise LlmoptError(
            f"{name} has no column {text_column!r} (its columns: {shown}); pass --text-column"
        )
    try:
        return clean_texts(frame[text_column].astype(str).tolist())
    except LlmoptError:
        raise LlmoptError(f"column {text_column!r} of {name} has no non-empty texts") from None


def run_pretrain(args) -> int:
    from llmopt.compression.save import check_save_target

    if args.minutes is not None and args.steps is not None:
        raise LlmoptError("give a time budget (--minutes) or a step count (--steps), not both")
    if args.overwrite and args.save_model is None:
        raise LlmoptError("--overwrite applies to --save-model; add --save-model DIR or drop it")
    if args.save_model is not None:
        check_save_target(args.save_model, overwrite=args.overwrite)
    elif args.dataset != "bundled" or args.minutes is not None or args.steps is not None:
        raise LlmoptError(
            "add --save-model DIR: only the default run (bundled reviews, default budget) is "
            "cached as lm:bundled"
        )
    texts = read_texts(args.dataset, args.text_column)
    bar = StageBar()
    from llmopt.lm import pretrain as recipe

    if args.save_model is None:
        folder, _notes = recipe.ensure_bundled(progress=bar)
        bar.close()
        print(f"lm:bundled is ready (cached in {folder})")
        return 0
    config = recipe.with_budget(recipe.BUNDLED_CONFIG, args.minutes, args.steps)
    result = recipe.pretrain(texts, config, progress=bar)
    bar.close()
    save_result(result, args.save_model.expanduser(), args.dataset, args.text_column)
    s = result.stats
    print(
        f"pre-trained {s['params'] / 1e6:.1f} M parameters: {s['steps']} steps in "
        f"{s['seconds']:.0f} s ({s['tokens_per_second']:.0f} tokens/s), final loss "
        f"{s['final_loss']:.3f}; saved to {args.save_model}"
    )
    return 0


def save_result(result, target: Path, dataset: str, text_column: str) -> Path:
    """Save a pre-training result where ``target`` was checked to be writable (the command and
    the Train page's *Pre-train* section): a staged folder renamed into place, so a failed save
    leaves no half-written checkpoint. ``load_causal_lm`` reads the folder back."""
    from llmopt import atomic
    from llmopt.lm import pretrain as recipe

    meta = {"dataset": dataset, "text_column": text_column, "stats": result.stats}
    with atomic.staged_dir(target.resolve(), replace=True) as tmp:
        recipe.save_pretrained(result, tmp, meta)
    return target
