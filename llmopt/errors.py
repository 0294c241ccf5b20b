"""The one exception type for user mistakes: a ValueError whose message says how to fix it.

The same mistake is fixed in different words on different surfaces: the command line has flags
(``--text-column review``), the dashboard has boxes ("choose *review* as the Text column"). An
error therefore carries what is wrong (``message``) apart from how to fix it (``fix``, a
``Fix`` with one wording per surface). ``str(error)`` is the command-line wording;
``error.render("app")`` the dashboard's.
"""

from __future__ import annotations

from dataclasses import dataclass

SURFACES = ("cli", "app")


@dataclass(frozen=True)
class Fix:
    """How to fix a mistake, worded for the command line and for the dashboard."""

    cli: str
    app: str

    def render(self, surface: str = "cli") -> str:
        return self.app if surface == "app" else self.cli


class LlmoptError(ValueError):
    """A problem with user input (a source, a file, a setting) that the user can fix.

    The dashboard shows ``render("app")`` with ``st.error``; the CLI prints ``str(error)`` and
    exits 2.

    Args:
        message: what is wrong (no surface-specific advice in it).
        fix: how to fix it, when the fix names a flag or a control.
    """

    def __init__(self, message: str, *, fix: Fix | None = None):
        self.message = str(message)
        self.fix = fix
        super().__init__(self.render("cli"))

    def render(self, surface: str = "cli") -> str:
        """The message with the fix in ``surface``'s words (``cli`` or ``app``)."""
        if self.fix is None:
            return self.message
        return f"{self.message} — {self.fix.render(surface)}"

    def __reduce__(self):  # picklable across processes despite the keyword-only argument
        return (_rebuild, (self.message, self.fix))


def _rebuild(message: str, fix: Fix | None) -> LlmoptError:
    return LlmoptError(message, fix=fix)


# ---------------------------------------------------------------- fixes used in several places


def train_head_fix(encoder: str = "bundled") -> Fix:
    """Train a head for this dataset on top of ``encoder``."""
    return Fix(
        cli=f"use --model encoder:{encoder} to train a classification head on your dataset",
        app="choose 'Encoder + trained head' as the model source in the sidebar to train a "
        "classification head on your dataset",
    )


def columns_fix(text: str | None = None, label: str | None = None) -> Fix:
    """Choose the text and/or label column (named when a likely one is known)."""
    cli = [f"--text-column {text}"] if text else []
    cli += [f"--label-column {label}"] if label else []
    app = [f"'{text}' as the Text column"] if text else []
    app += [f"'{label}' as the Label column"] if label else []
    if not cli:
        return Fix(
            cli="choose them with --text-column and --label-column",
            app="choose them with the Text column and Label column boxes in the sidebar",
        )
    return Fix(cli=f"pass {' '.join(cli)}", app=f"choose {' and '.join(app)} in the sidebar")


def limit_fix() -> Fix:
    return Fix(
        cli="pass --limit with a positive number of rows",
        app="set Evaluation rows in the sidebar to a positive number",
    )
