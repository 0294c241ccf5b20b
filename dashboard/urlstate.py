"""Settings mirrored in the page's address, so that a reload or a shared link opens the same
page: model, dataset, rows, the Compress page's controls, and each page's own choices.

A session's first run copies the address's values into the widgets' state (``restore``, before
the sidebar is drawn); every run writes the current values back (``mirror``, ``page_params``),
each group in one go and only if it changed: the browser adds a history entry for every change
of the address (Streamlit pushes, never replaces), so Back works only if changes are few.
Values a link gives are checked: a value a control cannot take is dropped with a warning, never
an error.
The controls are read generically from ``dashboard.controls.CONTROLS`` (key -> first value), so
controls added there are mirrored too.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import streamlit as st

from dashboard.controls import (
    BIT_KEYS,
    CONTROLS,
    allocation_choices,
    bit_options,
    config_from_state,
)
from dashboard.sidebar import (
    CSV,
    HF,
    MAX_ROWS,
    REVIEWS,
    UPLOAD_LOST,
    UPLOADED,
    URL_COLUMNS,
    Selection,
    classify_dataset,
    classify_model,
)
from dashboard.text import plain
from llmopt.errors import LlmoptError

MODEL, DATA, ROWS, TEXT, LABEL = "model", "data", "rows", "text", "label"
GLOBAL_KEYS = (MODEL, DATA, ROWS, TEXT, LABEL, *CONTROLS)  # mirrored on every page
RESTORED = "url_restored"  # set once a session's first run has read the address
RESTORED_CONTROLS = "url_restored_controls"  # the control keys a link set (reset if rejected)
NOTES = "url_notes"  # warnings about a link's values, shown once
PENDING_RESET = "url_pending_reset"  # control keys to drop at the start of the next run


def _parse(text: str, first):
    """A link's text as the type of the control's first value (numbers where a choice of text
    and numbers, like Bit-width 'off' | 4 | 3.5, takes a number: ints when whole)."""
    if isinstance(first, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(text)
    if isinstance(first, float):
        return float(text)
    if isinstance(first, int):
        return int(text)
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


MAX_ID = 2**63 - 1  # the experiment store's ids are SQLite's 64-bit integers


def strict_id(text: str) -> int | None:
    """A run id from a link: ASCII digits only (``str.isdigit`` also takes '²', which ``int``
    then refuses) and within SQLite's range (a larger number overflows); None otherwise."""
    text = text.strip()
    if not text or not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if 1 <= number <= MAX_ID else None


def link_id(key: str) -> int | None:
    """The run id the address gives under ``key``, or None (a value that is not one is
    ignored with a notice)."""
    text = read_param(key)
    if not text:
        return None
    number = strict_id(text)
    if number is None:
        _ignored(key, text, "is not a run id")
    return number


def link_ids(key: str) -> list[int]:
    """The run ids the address gives under ``key`` (comma-separated); values that are not
    run ids are ignored with a notice."""
    text = read_param(key) or ""
    parts = [t for t in text.split(",") if t.strip()]
    ids = [strict_id(t) for t in parts]
    bad = [t for t, i in zip(parts, ids, strict=True) if i is None]
    if bad:
        _ignored(key, ", ".join(bad), "are not run ids" if len(bad) > 1 else "is not a run id")
    return [i for i in ids if i is not None]


def _ignored(key: str, text: str, why: str) -> None:
    shown = _printable(text)
    st.warning(plain(f"This link's {key} value '{shown}' {why}; it was ignored."))


def _printable(text: str, limit: int = 60) -> str:
    """A link value for a notice: control characters (NUL...) escaped, at most ``limit``."""
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _format(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def restore() -> None:
    """On a session's first run, put the address's values into the widgets' state (before any
    widget is drawn); on later runs, drop controls a link set that turned out out of range."""
    for key in st.session_state.pop(PENDING_RESET, []):
        st.session_state.pop(key, None)
    if st.session_state.get(RESTORED):
        return
    st.session_state[RESTORED] = True
    params = st.query_params.to_dict()
    notes: list[str] = []
    for key in [k for k, v in params.items() if not v.isprintable()]:  # NUL, ESC, newlines
        notes.append(f"{key} '{_printable(params.pop(key))}' holds control characters")
        st.query_params.pop(key, None)
    if params.get(MODEL):
        kind, ref = classify_model(params[MODEL])
        st.session_state["src_model_kind"] = kind
        if ref:
            st.session_state[f"src_{kind}"] = ref
    if params.get(DATA):
        kind, ref = classify_dataset(params[DATA])
        st.session_state["src_data_kind"] = kind
        st.session_state[UPLOAD_LOST] = params[DATA] == UPLOADED  # the sidebar says so
        if kind == CSV:
            st.session_state["src_csv_path"] = ref
            st.session_state[URL_COLUMNS] = (params.get(TEXT), params.get(LABEL))
        elif kind == HF:
            st.session_state["src_hf"] = ref
            for key, widget in ((TEXT, "src_hf_text"), (LABEL, "src_hf_label")):
                if params.get(key):
                    st.session_state[widget] = params[key]
    if ROWS in params:
        try:
            rows = int(params[ROWS])
            if not 1 <= rows <= MAX_ROWS:
                raise ValueError(rows)
            st.session_state["src_rows"] = rows
        except ValueError:
            shown = _printable(params[ROWS])
            notes.append(f"Evaluation rows '{shown}' is not a number from 1 to {MAX_ROWS:,}")
    restored = []
    for key, first in CONTROLS.items():
        if key not in params:
            continue
        try:
            st.session_state[key] = _parse(params[key], first)
            restored.append(key)
        except ValueError:
            notes.append(f"'{_printable(params[key])}' is not a value of the control {key}")
    _check_bits(restored, notes)
    _check_choices(restored, notes)
    st.session_state[RESTORED_CONTROLS] = restored
    _check_config(restored, notes)
    if notes:
        st.session_state[NOTES] = notes


def _check_bits(restored: list[str], notes: list[str]) -> None:
    """Drop a link's Bit-width that its control cannot show (c_bits 3.5, c_bits_average 3.3):
    the control would fall back to off without a word. (Text in c_bits is left to the config
    check, which names the problem; the config reads c_bits_average only with a bits
    allocation, so its text is dropped here.)"""
    for allocation, key in BIT_KEYS.items():
        value = st.session_state.get(key)
        if key not in restored or value in bit_options(allocation):
            continue
        if isinstance(value, str) and key == "c_bits":
            continue
        st.session_state.pop(key)
        restored.remove(key)
        steps = "whole bits 2..8" if key == "c_bits" else "an average 2..8 in steps of 0.25"
        shown = _printable(_format(value))
        notes.append(f"'{shown}' is not a value of the control {key} ({steps})")


def _check_choices(restored: list[str], notes: list[str]) -> None:
    """Drop a link's allocation that its control does not offer, and say so."""
    for key, allowed in allocation_choices().items():
        if key in restored and st.session_state.get(key) not in allowed:
            shown = _printable(_format(st.session_state.pop(key)))
            restored.remove(key)
            notes.append(f"'{shown}' is not a value of the control {key} ({', '.join(allowed)})")


def _check_config(restored: list[str], notes: list[str]) -> None:
    """Drop a link's control values whose combination the compression config refuses."""
    if not restored:
        return
    try:
        config_from_state()
    except (LlmoptError, ValueError, TypeError) as exc:
        for key in restored:
            st.session_state.pop(key, None)
        message = exc.render("app") if isinstance(exc, LlmoptError) else str(exc)
        notes.append(f"its compression settings were not used ({message})")
        restored.clear()


def show_notes() -> None:
    """Say once which of a link's values were not used."""
    notes = st.session_state.pop(NOTES, None)
    if notes:
        st.warning(plain("This link's settings were partly ignored: " + "; ".join(notes) + "."))


@contextlib.contextmanager
def checked() -> Iterator[None]:
    """Run a page; if a control rejects a value a link gave it (outside its range), drop the
    link's control values, say so, and run again with the controls' own values."""
    from streamlit.errors import StreamlitValueAboveMaxError, StreamlitValueBelowMinError

    try:
        yield
    except (StreamlitValueAboveMaxError, StreamlitValueBelowMinError) as exc:
        restored = st.session_state.get(RESTORED_CONTROLS) or []
        if not restored:
            raise
        st.session_state[RESTORED_CONTROLS] = []
        st.session_state[PENDING_RESET] = list(restored)
        st.session_state[NOTES] = [f"a compression setting was out of range ({exc})"]
        for key in restored:
            st.query_params.pop(key, None)
        st.rerun()


def _current(sel: Selection) -> dict[str, str]:
    """The global settings to mirror, as text; uploads and empty boxes are left out."""
    out: dict[str, str] = {}
    with contextlib.suppress(LlmoptError):  # an empty model box: nothing to mirror
        out[MODEL] = sel.model_source
    if sel.data_kind == REVIEWS:
        out[DATA] = "bundled"
    elif sel.data_kind == HF and sel.data_ref:
        out[DATA] = sel.data_ref
    elif (
        sel.data_kind == CSV
        and sel.data_ref
        and sel.data_ref == st.session_state.get("src_csv_path", "").strip()
    ):  # a typed path (an upload cannot travel in a link)
        out[DATA] = sel.data_ref
    elif sel.data_kind == CSV:  # an upload, or waiting for one: a reload asks for it again
        out[DATA] = UPLOADED
    if out.get(DATA) and sel.data_kind != REVIEWS:
        out[TEXT], out[LABEL] = sel.text_column, sel.label_column
    out[ROWS] = str(sel.rows)
    for key, first in CONTROLS.items():
        value = st.session_state.get(key, first)
        if value != first:
            out[key] = _format(value)
    return out


def _write(values: dict[str, str | None]) -> None:
    """Set (text) or remove (None) values of the address with one message to the browser, and
    none if nothing changes: each message the browser gets adds an entry to its history."""
    before = st.query_params.to_dict()
    after = {k: v for k, v in before.items() if values.get(k, v)}
    after.update({k: v for k, v in values.items() if v})
    if after != before:
        st.query_params.from_dict(after)


def mirror(sel: Selection) -> None:
    """Write the global settings into the address (only if they changed; one history entry)."""
    current = _current(sel)
    _write({key: current.get(key) for key in GLOBAL_KEYS})


def _text(value) -> str | None:
    if value is None:
        return None
    return (",".join(map(str, value)) if isinstance(value, list) else str(value)) or None


def page_params(values: dict) -> None:
    """Set (or, with None or an empty value, remove) page-specific values of the address, all
    in one go (one history entry at most)."""
    _write({key: _text(value) for key, value in values.items()})


def page_param(key: str, value) -> None:
    """Set (or, with None or an empty value, remove) one page-specific value in the address."""
    page_params({key: value})


def read_param(key: str) -> str | None:
    """A page-specific value of the address, if any."""
    return st.query_params.get(key)
