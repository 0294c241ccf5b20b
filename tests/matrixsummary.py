"""The bad-input matrices' summary line (printed by conftest.py's terminal summary)."""

from __future__ import annotations


def matrix_line(name: str, ids: list[str], stats: dict) -> str:
    """``name: N cases, P passed`` plus, when any, how many failed, were skipped or were
    deselected (by ``-m``/``-k``), so that deselected cases do not read as failures."""
    outcome: dict[str, str] = {}
    for key in ("passed", "failed", "skipped", "error"):
        for report in stats.get(key, []):
            if getattr(report, "nodeid", None) is None:
                continue
            if key == "passed" and report.when != "call":
                continue  # a passed setup or teardown is not the case passing
            outcome.setdefault(report.nodeid, key)
    deselected = {getattr(item, "nodeid", None) for item in stats.get("deselected", [])}
    counts = dict.fromkeys(("passed", "failed", "skipped", "error", "deselected"), 0)
    for i in ids:
        if i in deselected:
            counts["deselected"] += 1
        elif i in outcome:
            counts[outcome[i]] += 1
    parts = [f"{counts['passed']} passed"]
    parts += [f"{n} {key}" for key, n in counts.items() if key != "passed" and n]
    return f"{name}: {len(ids)} cases, " + ", ".join(parts)
