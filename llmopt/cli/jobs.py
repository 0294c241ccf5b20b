"""``llmopt jobs list|show|cancel``: the jobs in the experiment store."""

from __future__ import annotations

import json
import sys


def add_commands(sub) -> None:
    """Register ``jobs`` and its subcommands."""
    jobs = sub.add_parser("jobs", help="list, show or cancel sweep jobs")
    actions = jobs.add_subparsers(dest="action", required=True, parser_class=type(jobs))
    ls = actions.add_parser("list", help="every job, newest first")
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    ls.set_defaults(run=run_list)
    show = actions.add_parser("show", help="one job with its points")
    show.add_argument("id", help="the job's id (see `llmopt jobs list`)")
    show.add_argument("--json", action="store_true", help="print the job as JSON")
    show.set_defaults(run=run_show)
    cancel = actions.add_parser(
        "cancel", help="stop a job after the tasks running now (what finished stays recorded)"
    )
    cancel.add_argument("id", help="the job's id")
    cancel.add_argument("--json", action="store_true", help="print the job as JSON")
    cancel.set_defaults(run=run_cancel)


def _jobs():
    from llmopt.jobs.store import JobStore

    jobs = JobStore()
    if jobs.runs.notice:
        print(f"note: {jobs.runs.notice}", file=sys.stderr)
    return jobs


def _line(job) -> str:
    from llmopt.cli.runs import printable

    spec = job.spec
    what = f"{spec.get('knob')} over {len(spec.get('values', []))} values × " + ", ".join(
        printable(m) for m in spec.get("methods", [])
    )
    return (
        f"{job.id:>4}  {job.status:<9} {job.done:>3}/{job.total:<3} {job.executor:<6} "
        f"{job.created}  {job.kind}: {what}"
    )


def run_list(args) -> int:
    jobs = _jobs().list()
    if args.json:
        print(json.dumps([j.to_json() for j in jobs], indent=2))
    elif not jobs:
        print("no jobs yet (`llmopt sweep --knob sparsity --values 0.1,0.3,0.5` starts one)")
    else:
        print("  id  status    done    where  created               what")
        print("\n".join(_line(j) for j in jobs))
    return 0


def run_show(args) -> int:
    from llmopt.cli.runs import printable
    from llmopt.jobs.sweepjob import job_points

    store = _jobs()
    job = store.get(args.id)
    points = job_points(store.runs, store, job.id)
    if args.json:
        print(json.dumps({**job.to_json(), "points": points}, indent=2))
        return 0
    print(_line(job))
    if job.error:
        print(f"  error: {printable(job.error)}")
    for p in points:
        value = "off" if p["value"] is None else p["value"]
        accuracy = (p["metrics"] or {}).get("accuracy")
        run = f"run {p['run_id']}" if p["run_id"] is not None else "pending"
        score = "" if accuracy is None else f"  accuracy {accuracy:.4f}"
        print(f"  {printable(p['method']):<22} {value!s:>8}  {run}{score}")
    return 0


def run_cancel(args) -> int:
    job = _jobs().request_cancel(args.id)
    if args.json:
        print(json.dumps(job.to_json(), indent=2))
    elif job.status == "cancelled":
        print(f"job {job.id} cancelled")
    else:
        print(f"job {job.id}: cancel requested; it stops after the tasks running now")
    return 0
