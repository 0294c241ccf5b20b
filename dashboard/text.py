"""Strings from a link, a file or a visitor, made safe to put in Streamlit's Markdown.

``st.error``, ``st.warning``, ``st.caption``, ``st.markdown`` and widget labels render their
text as Markdown (GitHub's flavour, with Streamlit's colour and LaTeX extensions). A model name
``[Log in](https://evil.example)`` from a link would become a clickable link inside the app's
own error box, and ``![x](http://host/x)`` would make the browser fetch that address. ``plain``
escapes what Markdown would turn into a link, an image, HTML, code, emphasis or a formula, so
the visitor reads the text exactly as it was given.
"""

from __future__ import annotations

import re

# Link, image and reference syntax ([ ] and the ! before them), autolinks and HTML (< >), code
# spans (`), emphasis (* _ ~), formulas ($), tables (|), Streamlit's :colour[...] and the
# backslash itself. Underscores inside a word are left alone: Markdown does not emphasise them,
# and names like no_such_dataset stay readable in the page's source too.
_SPECIAL = re.compile(r"([\\`*\[\]<>!$~|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
# Bare addresses that GitHub-flavoured Markdown turns into links by themselves. The browser's
# Markdown (remark-gfm) finds them in the text *after* backslash escapes are resolved, so an
# escape alone does not stop it: an invisible WORD JOINER (U+2060) goes where its patterns need
# an ASCII character (after "://", between "www" and ".", before "@"), and the address stays
# readable but is never linked.
_AUTOLINK = re.compile(r"(?i)(://|\bwww\.|@)")
JOINER = "\u2060"


def plain(text) -> str:
    """``text`` escaped so that Streamlit's Markdown shows it literally (no link, image, HTML,
    code, emphasis or formula); ``None`` becomes "". Bare addresses get an invisible word
    joiner so that they are not linked."""
    if text is None:
        return ""
    escaped = _SPECIAL.sub(r"\\\1", str(text))
    return _AUTOLINK.sub(_break_autolink, escaped)


def _break_autolink(match: re.Match) -> str:
    found = match.group(1)
    if found == "://":
        return r":\/\/" + JOINER
    if found == "@":
        return JOINER + r"\@"
    return found[:-1] + JOINER + r"\."
