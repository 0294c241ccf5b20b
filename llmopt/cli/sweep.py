"""``llmopt sweep``: one compression knob over values and methods, as a resumable job."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from llmopt.cli.common import Bar, positive_int, seed, source_args
from llmopt.cli.compression_flags import add_compression_args, config_fields, in_flags
from llmopt.errors import LlmoptError

CANCELLED = 3  # exit status of a sweep stopped by `llmopt jobs cancel`
EXECUTORS = ("inline", "local", "ray")
RAY_ADDRESS_ENV = "LLMOPT_RAY_ADDRESS"
WHOLE = ("bits", "rank")  # knobs whose values are whole numbers


def add_commands(sub) -> None:
    """Register ``sweep``."""
    sw = sub.add_parser(
        "sweep",
        help="compress and evaluate at every value of one knob, as a resumable job",
        epilog="Every point is recorded in the experiment store as it finishes; running the same "
        "sweep again skips the recorded points (resume). `llmopt jobs cancel ID` stops a "
        f"running sweep (exit status {CANCELLED}). {RAY_ADDRESS_ENV} sets the default "
        "--ray-address.",
    )
    sw.add_argument("--knob", required=True, help="sparsity | bits | rank | alpha")
    sw.add_argument(
        "--values", required=True, help="comma-separated values, e.g. 0.1,0.3,0.5 (off: the base)"
    )
    sw.add_argument(
        "--methods", help="comma-separated methods of the knob (default: its first method)"
    )
    source_args(sw)
    sw.add_argument("--split", choices=["train", "test"], default="test")
    sw.add_argument("--limit", type=positive_int, help="evaluate the first N rows of the split")
    sw.add_argument("--seed", type=seed, help="shuffle the split with this seed before --limit")
    sw.add_argument("--batch-size", type=positive_int, default=32)
    sw.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch threads per task, the same in every executor (default 1)",
    )
    sw.add_argument("--executor", choices=EXECUTORS, default="inline",
                    help="inline: in this process (default); local: a process pool; ray: Ray "
                    "tasks")  # fmt: skip
    sw.add_argument(
        "--ray-address",
        help=f"an existing Ray cluster: auto | ray://HOST:PORT | HOST:PORT (default "
        f"${RAY_ADDRESS_ENV}; none: a local Ray with this machine's cores)",
    )
    sw.add_argument("--json", type=Path, help="write the job's results as JSON to this path")
    add_compression_args(sw)  # fixed settings every point keeps
    sw.set_defaults(run=run_sweep)


def parse_values(knob: str, text: str) -> list:
    """The knob's values from ``V1,V2,…`` ('off' or 'none' is the base model).

    Raises:
        LlmoptError: an empty list, or a value of the wrong kind.
    """
    values: list = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.lower() in ("off", "none"):
            values.append(None)
            continue
        try:
            values.append(int(part) if knob in WHOLE else float(part))
        except ValueError:
            kind = "a whole number" if knob in WHOLE else "a number"
            raise LlmoptError(
                f"--values: each {knob} value is {kind} or off, got {part!r}"
            ) from None
    if not values:
        raise LlmoptError("--values: give at least one value, e.g. --values 0.1,0.3,0.5")
    return list(dict.fromkeys(values))


def build_spec(args) -> dict:
    """The job's spec from the flags (checked before any loading)."""
    from llmopt.jobs.sweepjob import knob_name, sweep_spec

    knob = knob_name(args.knob)
    methods = [m.strip() for m in (args.methods or "").split(",") if m.strip()] or None
    fixed = {k: getattr(args, k) for k in config_fields() if getattr(args, k, None) is not None}
    rows = {"model": args.model, "dataset": args.dataset, "split": args.split,
            "limit": args.limit, "seed": args.seed, "text_column": args.text_column,
            "label_column": args.label_column}  # fmt: skip
    try:
        return sweep_spec(knob, parse_values(knob, args.values), methods, fixed, rows=rows,
                          batch_size=args.batch_size, threads=args.threads)  # fmt: skip
    except LlmoptError as exc:
        raise LlmoptError(in_flags(exc.message), fix=exc.fix) from None


def run_sweep(args) -> int:
    from llmopt import atomic
    from llmopt.jobs.sweepjob import JobCancelled, run_sweep_job
    from llmopt.paths import check_output

    if args.json is not None:
        check_output(args.json, flag="--json")
    address = args.ray_address or os.environ.get(RAY_ADDRESS_ENV, "").strip() or None
    if args.ray_address and args.executor != "ray":
        raise LlmoptError(f"--ray-address applies to --executor ray, not {args.executor}")
    if args.executor != "ray":
        address = None
    spec = build_spec(args)
    bar = Bar()
    status = 0
    try:
        payload = run_sweep_job(spec, executor=args.executor, address=address, progress=bar)
    except JobCancelled as stop:
        payload, status = stop.payload, CANCELLED
    finally:
        bar.close()
    done = [p for p in payload["points"] if p["run_id"] is not None]
    for point in payload["points"]:
        accuracy = (point["metrics"] or {}).get("accuracy")
        agreement = (point["fidelity"] or {}).get("agreement")
        print(
            f"{point['method']:<22} {_value(point['value']):>8}  "
            + (f"run {point['run_id']:<6} accuracy {_num(accuracy)}  agreement {_num(agreement)}"
               if point["run_id"] is not None else "not evaluated")
        )  # fmt: skip
    what = "cancelled" if status else "done"
    print(
        f"job {payload['job_id']} {what} ({payload['executor']}): {payload['evaluated']} "
        f"evaluated, {payload['skipped']} already recorded, {len(done)} of "
        f"{len(payload['points'])} points in {payload['seconds']:.1f} s"
    )
    if args.json is not None:
        atomic.write_text(args.json, json.dumps(payload, indent=2))
    if status:
        print(
            f"llmopt: job {payload['job_id']} was cancelled; run the same command to resume",
            file=sys.stderr,
        )
    return status


def _value(value) -> str:
    return "off" if value is None else f"{value:g}"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"
