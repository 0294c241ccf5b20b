"""``llmopt runs list|show|export|delete``: the experiment store from the command line."""

from __future__ import annotations

import json
import math
import sys
import unicodedata
from pathlib import Path

from llmopt import atomic
from llmopt.errors import LlmoptError
from llmopt.paths import check_output


def add_commands(sub) -> None:
    """Register ``runs`` and its subcommands."""
    runs = sub.add_parser("runs", help="list, show, export or delete recorded evaluations")
    actions = runs.add_subparsers(dest="action", required=True, parser_class=type(runs))

    ls = actions.add_parser("list", help="every recorded run, oldest first")
    ls.add_argument("--model", help="only runs of this model source")
    ls.add_argument("--dataset", help="only runs on this dataset source")
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    ls.set_defaults(run=run_list)

    show = actions.add_parser("show", help="one run in full")
    show.add_argument("id", help="the run's id (see `llmopt runs list`)")
    show.add_argument("--json", action="store_true", help="print the run as JSON")
    show.set_defaults(run=run_show)

    export = actions.add_parser(
        "export", help="a run as JSON (a recipe for `evaluate --recipe`), its predictions as CSV"
    )
    export.add_argument("id", help="the run's id")
    export.add_argument("--output", "-o", type=Path, help="write the JSON here (default: print)")
    export.add_argument("--predictions", type=Path, help="write its predictions as CSV here")
    export.add_argument("--json", action="store_true", help="accepted for symmetry: always JSON")
    export.set_defaults(run=run_export)

    delete = actions.add_parser("delete", help="delete a run (its children move to its parent)")
    delete.add_argument("id", help="the run's id")
    delete.add_argument("--json", action="store_true", help='print {"deleted": ID}')
    delete.set_defaults(run=run_delete)


def _store():
    from llmopt.experiments import ExperimentStore

    store = ExperimentStore()
    if store.notice:
        print(f"note: {store.notice}", file=sys.stderr)
    return store


def printable(text) -> str:
    """``text`` with control characters (ESC, CR, BEL, C1 codes...) written as escapes
    (``\\x1b``), so a run name typed on a page cannot move the cursor, recolour or retitle the
    terminal of whoever lists the runs; other characters, accents included, stay as they are."""
    text = "" if text is None else str(text)
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) == "Cc" else c
        for c in text
    )


def _num(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def run_list(args) -> int:
    store = _store()
    runs = [
        r
        for r in store.runs()
        if (args.model is None or r.model == args.model)
        and (args.dataset is None or r.dataset == args.dataset)
    ]
    if args.json:
        print(json.dumps([r.to_json() for r in runs], indent=2))
        return 0
    if not runs:
        print(f"no runs recorded in {store.path}")
        return 0
    header = (
        f"{'id':>5}  {'created':<20} {'parent':>6}  {'rows':>6}  {'accuracy | perplexity':>23}  "
    )
    print(header + f"{'size MB':>8}  model · dataset · what")
    for r in runs:
        key = "perplexity" if r.task == "perplexity" else "accuracy"  # an LM run: perplexity
        acc = r.own_metrics.get(key)
        low, high = (r.intervals.get(key) or [None, None])[:2]
        interval = f"{_num(acc)} [{_num(low)}, {_num(high)}]"
        what = printable(r.name or r.method)
        print(
            f"{r.id:>5}  {r.created:<20} {r.parent or '':>6}  {r.n:>6}  {interval:>23}  "
            f"{r.size_bytes / 1e6:>8.2f}  {printable(r.model)} · {printable(r.dataset)} · {what}"
        )
    return 0


def run_show(args) -> int:
    store = _store()
    run = store.get(args.id)
    if args.json:
        print(json.dumps(run.to_json(full=True), indent=2))
        return 0
    name = f" ({printable(run.name)})" if run.name else ""
    print(f"run {run.id}{name}: {printable(run.method)}")
    print(f"created {run.created} by {printable(run.origin)}; parent {run.parent or 'none'}")
    print(f"model   {printable(run.model)} (fingerprint {run.model_fingerprint})")
    print(
        f"dataset {printable(run.dataset)}: {run.n} {printable(run.split)} rows "
        f"(fingerprint {run.rows_fingerprint})"
    )
    if run.task != "classify":
        how = {k: run.rows[k] for k in ("protocol", "seq_len") if k in (run.rows or {})}
        print(f"task    {printable(run.task)}" + "".join(f", {k} {v}" for k, v in how.items()))
    if run.config:
        print(f"config  {json.dumps(run.config, sort_keys=True)}")
    if run.tags:
        print(f"tags    {printable(', '.join(run.tags))}")
    print()
    sides = [s for s in ("baseline", "compressed") if run.metrics.get(s)]
    print(f"{'':<18}" + "".join(f"{s:>14}" for s in sides) + "   95% interval (this run)")
    for key in run.own_metrics:
        cells = "".join(f"{_num(run.metrics[s].get(key), 4):>14}" for s in sides)
        low, high = (run.intervals.get(key) or [None, None])[:2]
        print(f"{key:<18}{cells}   [{_num(low, 4)}, {_num(high, 4)}]")
    if run.mcnemar:
        m = run.mcnemar
        print(
            f"\naccuracy vs baseline: exact McNemar p = {m['p_value']:.4g} ({m['only_a']} rows "
            f"only the baseline gets right, {m['only_b']} only this one)"
        )
    print(f"size {run.size_bytes / 1e6:.2f} MB, {run.params_nonzero:,} non-zero parameters")
    latency = run.latency or {}
    if latency.get("method") == "simulated":
        print(f"latency: {printable(latency.get('note'))}")
    elif run.latency_ms is not None:
        print(f"latency {run.latency_ms:.2f} ms per text ({latency.get('method', 'single pass')})")
    if run.agreement is not None:
        print(f"agreement with the baseline {run.agreement:.4f}, mean KL {run.mean_kl:.5f} nats")
    return 0


def run_export(args) -> int:
    from llmopt.recording import predictions_frame

    outputs = {"--output": args.output, "--predictions": args.predictions}
    checked = [check_output(p, flag=f) for f, p in outputs.items() if p is not None]
    if len(checked) == 2 and checked[0] == checked[1]:
        raise LlmoptError("--output and --predictions name the same file")
    store = _store()
    run = store.get(args.id)
    text = json.dumps(run.to_json(full=True), indent=2)
    if args.predictions is not None:
        frame = predictions_frame(store, run)
        if frame is None:
            raise LlmoptError(f"run {run.id} has no stored predictions")
        with atomic.staged_file(args.predictions) as tmp:
            frame.to_csv(tmp, index=False)
    if args.output is None:
        print(text)
    else:
        atomic.write_text(args.output, text + "\n")
    return 0


def run_delete(args) -> int:
    store = _store()
    run = store.get(args.id)
    store.delete(run.id)
    if args.json:
        print(json.dumps({"deleted": run.id}))
    else:
        print(f"deleted run {run.id} ({printable(run.name or run.method)})")
    return 0
