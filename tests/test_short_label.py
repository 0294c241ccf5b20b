"""The one helper that shortens labels for figures: in the middle, or at the end."""

from __future__ import annotations

from llmopt.figures.common import short_label


def test_labels_are_cut_in_the_middle_or_at_the_end_to_their_limit():
    """Lineage nodes and attention ticks cut their text at its end with copies of their own;
    both now use ``short_label``, which cuts at the end when asked (a keyword the old helper
    did not have, so this test fails there)."""
    name = "a_really_long_name_number_17"
    assert short_label(name, 12) == "a_real…er_17"
    assert short_label(name, 12, keep_end=False) == "a_really_lo…"
    assert short_label("short", 12, keep_end=False) == "short"
    assert all(len(short_label(name, n, keep_end=k)) == n for n in (2, 9, 20) for k in (0, 1))
